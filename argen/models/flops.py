"""FLOPs: measured (torch's FlopCounterMode) and analytic counters per model family.

Convention everywhere: one multiply-add = 2 FLOPs, the same as `torch.utils.flop_counter`. Analytic counters
count matmuls/convolutions only (norms, activations, softmax and elementwise ops are ignored, as torch's
counter does), so measured and analytic numbers are directly comparable.

Sections: generic building blocks (evaluation area), then one section per model family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


# ------------------------------------------------------------------------------------------------ generic
def _cpu_sdpa_flops(
    query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_mapping() -> dict[Any, Callable[..., int]]:
    # torch's registry only knows the CUDA SDPA kernels; on CPU attention would count as 0 FLOPs.
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _cpu_sdpa_flops} if op is not None else {}


def measured_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs of one call `fn(*args, **kwargs)` as counted by torch (matmul/conv/SDPA kernels), no grad.

    SDPA is counted on CPU too (a formula for the CPU flash kernel is added), densely: masked-out
    query/key pairs count, as the kernel computes them.

    Returns:
        Total FLOPs (2 per multiply-add) over every op the call dispatches.
    """
    counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    with counter, torch.no_grad():
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def linear_flops(tokens: int, in_features: int, out_features: int) -> int:
    """FLOPs of a dense layer applied to `tokens` vectors (bias ignored): 2 * tokens * in * out."""
    return 2 * tokens * in_features * out_features


def attention_flops(q_len: int, kv_len: int, dim: int, heads: int = 1) -> int:
    """FLOPs of scaled-dot-product attention core (QK^T and AV) for one sequence.

    Args:
        q_len: queries computed. kv_len: keys/values each query reads (a dense mask; masked entries are
            still computed by SDPA, so pass the full key length unless the kernel really skips them).
        dim: model width = heads * head_dim (projections are not included; add linear_flops for them).
        heads: number of heads (the total does not depend on it; kept for readability at call sites).

    Returns:
        2 * (q_len * kv_len * dim) for QK^T plus the same for AV.
    """
    head_dim = dim // heads
    return 2 * 2 * heads * q_len * kv_len * head_dim


def conv2d_flops(
    out_h: int,
    out_w: int,
    in_channels: int,
    out_channels: int,
    kernel: int | tuple[int, int],
    groups: int = 1,
    batch: int = 1,
) -> int:
    """FLOPs of a 2D convolution (bias ignored): 2 * B * H_out * W_out * C_out * (C_in / groups) * kH * kW."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return 2 * batch * out_h * out_w * out_channels * (in_channels // groups) * kh * kw


# --------------------------------------------------------------------------- GPT (raster/EAR) analytic FLOPs
# --- GPT (raster/EAR) analytic FLOPs
def _gpt_pass_flops(cfg: Any, n: int, s: int, n_out: int) -> int:
    """One GPT pass over n slots reading s keys, logits for the last n_out slots (one sample)."""
    d = cfg.dim
    per_layer = (
        linear_flops(n, d, 3 * d)
        + linear_flops(n, d, d)
        + 3 * linear_flops(n, d, cfg.ffn_hidden)
        + attention_flops(n, s, d, cfg.n_head)
    )
    if cfg.adaln:
        per_layer += linear_flops(1, d, 6 * d)
    return cfg.n_layer * per_layer + linear_flops(n_out, d, cfg.vocab_size)


def gpt_sampling_flops(cfg: Any, order: Any, guided: bool = True, prefix_len: int = 0) -> dict[str, int]:
    """Analytic FLOPs of KV-cached GPT sampling per image (argen.sampling.ar), CFG doubling included.

    Args:
        cfg: a GPTConfig. order: the GenerationOrder sampled (its schedule sets the passes in EAR mode).
        guided: classifier-free guidance (every pass runs on a conditional and an unconditional row).
        prefix_len: known tokens fed in the first pass (extension/inpainting).

    Returns:
        {"flops": per image, "tokens": slots processed per image, "passes": forward passes}.
    """
    from argen.orders import step_plan

    rows = 2 if guided else 1
    flops = tokens = 0
    steps = step_plan(order, cfg.mode, prefix_len)
    for st in steps:
        n = len(st.fed) + int(st.cls)
        if cfg.mode == "next_any":
            n, s, n_out = n + len(st.predicted), 1 + st.predicted.stop, len(st.predicted)
        else:
            s, n_out = 1 + (st.fed.stop if len(st.fed) else 0), 1
        flops += rows * _gpt_pass_flops(cfg, n, s, n_out)
        tokens += rows * n
    return {"flops": flops, "tokens": tokens, "passes": len(steps)}


def gpt_passes_flops(cfg: Any, shapes: list[tuple[int, int, int]], guided: bool = True) -> dict[str, int]:
    """FLOPs of GPT passes that ran (adaptive EAR), per image: each pass as (slots fed, visible cache
    width, positions predicted), as recorded by `argen.sampling.ar.sample_adaptive`."""
    rows = 2 if guided else 1
    flops = sum(rows * _gpt_pass_flops(cfg, n, s, n_out) for n, s, n_out in shapes)
    return {"flops": flops, "tokens": rows * sum(n for n, _, _ in shapes), "passes": len(shapes)}


def gpt_forward_flops(cfg: Any, length: int) -> int:
    """Teacher-forcing forward FLOPs per sample (L slots for next_token, 2(L+1) two-stream for EAR)."""
    n = length if cfg.mode == "next_token" else 2 * (length + 1)
    return _gpt_pass_flops(cfg, n, n, length)


# ------------------------------------------------------------------------------- VAR / ActVAR analytic FLOPs
# --- VAR / ActVAR analytic FLOPs
def var_sampling_flops(
    config: Any, batch: int = 1, cfg: bool = True, adaln_per_scale: bool = True
) -> dict[str, Any]:
    """Analytic FLOPs of dense VAR sampling (one KV-cached forward per scale) for `batch` images.

    Convention: matmuls only, 2 FLOPs per multiply-add; with `cfg` the transformer runs on 2*batch rows
    (conditional + null label); scale k's queries attend to the keys of scales 0..k (the cache prefix).
    VQVAE decoding is not included.

    Args:
        config: `argen.models.var.VARConfig`.
        cfg: classifier-free guidance doubles the rows.
        adaln_per_scale: True = the official sampler, which recomputes every block's AdaLN modulation at
            every scale (the published 601/1151/1964/3790 GFLOPs use it); False = argen's fast sampler,
            which computes them once (the head's modulation is still computed per scale).

    Returns:
        {"total": FLOPs, "per_scale": [FLOPs of scale k], "parts": {part: FLOPs}} with parts
        embed, qkv_proj, attn_core, ffn, adaln, head.
    """
    C, H, V, depth = config.dim, config.hidden, config.vocab_size, config.depth
    rows = batch * (2 if cfg else 1)
    parts = dict.fromkeys(("embed", "qkv_proj", "attn_core", "ffn", "adaln", "head"), 0)
    per_scale = []
    for si, (begin, end) in enumerate(config.scale_bounds):
        n, before = (end - begin) * rows, dict(parts)
        if si > 0:  # the next-scale input is embedded once, then repeated for the null-label rows
            parts["embed"] += linear_flops((end - begin) * batch, config.vae_channels, C)
        parts["qkv_proj"] += depth * (linear_flops(n, C, 3 * C) + linear_flops(n, C, C))
        parts["attn_core"] += depth * rows * attention_flops(end - begin, end, C, config.num_heads)
        parts["ffn"] += depth * (linear_flops(n, C, H) + linear_flops(n, H, C))
        if si == 0 or adaln_per_scale:
            blocks = 1 if config.shared_aln else depth
            parts["adaln"] += blocks * linear_flops(rows, C, 6 * C)
        parts["adaln"] += linear_flops(rows, C, 2 * C)
        parts["head"] += linear_flops(n, C, V)
        per_scale.append(sum(parts.values()) - sum(before.values()))
    return {"total": sum(parts.values()), "per_scale": per_scale, "parts": parts}


def _actvar_block_flops(config: Any, si: int, rows: int, sparse: bool) -> int:
    """Transformer-block FLOPs (attention projections, attention core, FFN, router, gate, adapter) of one
    cached scale for `rows` sequences, all blocks summed; `sparse=False` gives the dense VAR's count."""
    from argen.models.actvar import kept_count
    from argen.nn.moe import sparse_ffn_class

    ffn_flops = sparse_ffn_class(config.ffn).flops
    vc = config.var
    C, E, depth = vc.dim, config.num_experts, vc.depth
    begin, end = vc.scale_bounds[si]
    size = end - begin
    k = config.experts_k[si] if sparse else E
    rho = config.keep_ratio[si] if sparse else 1.0
    gated = set(config.gated) if sparse and rho < 1.0 else set()
    total = 0
    for block in range(depth):
        keep = kept_count(rho, size) if block in gated else size
        n_all, n_keep = rows * size, rows * keep
        total += linear_flops(n_all, C, 2 * C) + linear_flops(n_keep, C, C)  # k/v for all, q for kept
        total += linear_flops(n_keep, C, C) + rows * attention_flops(keep, end, C, vc.num_heads)
        total += ffn_flops(config.moe, n_keep, k)  # experts (and router when k < E)
        if block in gated:
            # gate logit and the low-rank adapter (down + up), both on every token of the scale
            total += linear_flops(n_all, C, 1) + 2 * linear_flops(n_all, C, config.adapter_rank)
    return total


def actvar_sampling_flops(
    config: Any, batch: int = 1, cfg: bool = True, adaln_per_scale: bool = True
) -> dict[str, Any]:
    """Analytic FLOPs of ActVAR's KV-cached sampling at its budget (experts_k, keep_ratio per scale).

    Same convention as `var_sampling_flops` (matmuls only; embed, AdaLN and head are taken from it): per
    block, keys/values are projected for every token, queries/output projection/attention/FFN only for the
    ceil(rho * l) kept tokens, each with k of E experts (the sparse FFN variant's own `flops`); routers
    (k < E), gates and adapters are counted. The "segment" expert backend executes exactly this; "padded"
    adds its padding rows and "masked" (chosen by "auto" where expert matmuls are too small to pay) runs
    the dense FFN's FLOPs for the kept tokens.

    Args:
        config: `argen.models.actvar.ActVARConfig`. batch / cfg / adaln_per_scale: as `var_sampling_flops`.

    Returns:
        {"total", "per_scale", "dense_total", "dense_per_scale", "saving"} with saving = 1 - total/dense.
    """
    dense = var_sampling_flops(config.var, batch, cfg, adaln_per_scale)
    rows = batch * (2 if cfg else 1)
    per_scale = [
        d - _actvar_block_flops(config, si, rows, False) + _actvar_block_flops(config, si, rows, True)
        for si, d in enumerate(dense["per_scale"])
    ]
    total = sum(per_scale)
    return {
        "total": total,
        "per_scale": per_scale,
        "dense_total": dense["total"],
        "dense_per_scale": dense["per_scale"],
        "saving": 1.0 - total / dense["total"],
    }
