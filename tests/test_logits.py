"""Counter-based sampling: the uniforms are splitmix64 of (seed, sample, counter), reproduced here in plain
Python integers; draws follow the filtered distribution; greedy is exact argmax."""

from __future__ import annotations

import torch

from argen.sampling.logits import filter_logits, sample_keys, sample_tokens, uniforms

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def test_uniforms_match_a_plain_integer_splitmix64() -> None:
    """Wrapping int64 arithmetic in torch gives exactly the uint64 reference."""
    for seed, index, counter in [(0, 0, 0), (7, 123456, 255), (2**40 + 3, 9, 10**6)]:
        run = _mix(((seed + 1) * GOLDEN) & M64)
        key = _mix((run + (index + 1) * GOLDEN) & M64)
        expected = (_mix((key + (counter + 1) * GOLDEN) & M64) >> 40) / 2**24
        got = uniforms(sample_keys(seed, [index]), torch.tensor([counter]))
        assert float(got[0, 0]) == expected


def test_uniforms_are_uniform_and_independent_across_samples() -> None:
    u = uniforms(sample_keys(0, torch.arange(200)), torch.arange(500))
    assert float(u.min()) >= 0 and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    corr = torch.corrcoef(u[:2])[0, 1]  # neighbouring samples share no pattern
    assert abs(float(corr)) < 0.1


def test_draws_follow_the_filtered_distribution() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -9.0])
    n = 20000
    tokens = sample_tokens(
        logits.expand(n, 1, 5), sample_keys(1, torch.arange(n)), torch.tensor([0]), top_k=4
    )
    freq = torch.bincount(tokens.flatten(), minlength=5).float() / n
    expected = filter_logits(logits, top_k=4).softmax(-1)
    assert freq[4] == 0 and torch.allclose(freq, expected, atol=0.015)
    greedy = sample_tokens(logits.expand(3, 2, 5), sample_keys(0, [0, 1, 2]), torch.tensor([0, 1]), top_k=1)
    assert torch.equal(greedy, torch.zeros(3, 2, dtype=torch.long))
