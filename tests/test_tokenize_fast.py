"""`argen tokenize`'s fast path gives the codes of the plain one: SDPA attention, one distance matrix and its
argmin, one encoder call per batch; on random debug tokenizers and on the shipped Fashion-MNIST ones."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from argen.data import FASHION_MNIST_DIR, FashionMNIST
from argen.models.checkpoints import load_model
from argen.nn.attention import attention
from argen.token_store import tokenizer_encoder
from argen.tokenizers import quantizer, vqgan
from argen.tokenizers.multiscale import MultiScaleVQVAE, msvq_config
from argen.tokenizers.vqgan import VQModel, vq_config


def _tokenizer(kind: str) -> tuple[torch.nn.Module, int]:
    """A small random tokenizer and its image side."""
    torch.manual_seed(0)
    if kind == "vq":
        model, side = VQModel(vq_config("debug")), 16
    else:
        cfg = msvq_config("debug")
        model, side = MultiScaleVQVAE(cfg), cfg.image_size
    model.init_weights()
    return model.eval(), side


def _plain_codes(tok: torch.nn.Module, img_BCHW: torch.Tensor, monkeypatch) -> torch.Tensor:
    with monkeypatch.context() as m, torch.no_grad():
        m.setattr(vqgan, "_attend", attention)  # SDPA itself
        m.setattr(quantizer, "_nearest_code", lambda z_NC, e_VC: quantizer._sq_dist(z_NC, e_VC).argmin(1))
        if tok.kind == "msvq":
            return torch.cat(tok.img_to_idxBl(img_BCHW), dim=1)
        return tok.encode(img_BCHW)


@pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
@pytest.mark.parametrize("name", ["vq2_fmnist", "msvq2_fmnist"])
def test_shipped_tokenizers_fast_codes_equal_plain_codes(name, monkeypatch):
    tok = load_model(name, expect=("vq", "msvq"))
    img_BCHW = FashionMNIST(split="test").images_NHW[:300, None].float().div(127.5).sub(1.0)
    with monkeypatch.context() as m, torch.no_grad():  # latents bitwise: codes alone rarely see 1 ulp
        m.setattr(vqgan, "_attend", attention)
        plain_BDhw = tok.encode_latent(img_BCHW)
    bounds = [*range(0, 257, 32), 300]  # tokenizer_encoder's calls: 8 of 32 images, 1 of 44
    with torch.no_grad():
        fast_BDhw = torch.cat([tok.encode_latent(img_BCHW[b:e]) for b, e in itertools.pairwise(bounds)])
    assert torch.equal(fast_BDhw, plain_BDhw)
    plain = _plain_codes(tok, img_BCHW, monkeypatch)  # one call on all 300 images
    threads = torch.get_num_threads()
    try:
        for workers in (1, 2):
            torch.set_num_threads(workers)
            fast = tokenizer_encoder(tok)(img_BCHW)  # 32-image calls; with 2: on two worker threads
            assert torch.equal(fast, plain), (workers, (fast != plain).float().mean().item())
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["vq", "msvq"])
def test_fast_codes_equal_plain_codes(kind, dtype, monkeypatch):
    tok, side = _tokenizer(kind)
    tok = tok.to(dtype)
    img_BCHW = (torch.rand(70, 3, side, side) * 2 - 1).to(dtype)  # chunks of 32 and 38 images
    plain = _plain_codes(tok, img_BCHW, monkeypatch)
    monkeypatch.setattr(quantizer, "_DIST_CHUNK", 64)  # several distance chunks per call, one of 3 rows
    threads = torch.get_num_threads()
    try:
        for workers, chunk in ((1, None), (1, 70), (2, None), (2, 32)):  # 2: two worker threads
            torch.set_num_threads(workers)
            fast = tokenizer_encoder(tok, chunk)(img_BCHW)
            assert torch.get_num_threads() == workers  # the workers' setting does not leak
            assert fast.dtype == torch.int64 and fast.shape == plain.shape
            assert torch.equal(fast, plain), (workers, chunk, (fast != plain).float().mean().item())
    finally:
        torch.set_num_threads(threads)
    assert len(plain.unique()) > 4  # the codes are not all one


def test_encoder_calls_cover_the_batch_in_chunks():
    tok, _ = _tokenizer("vq")
    sizes: list[int] = []
    tok.encode = lambda img: sizes.append(len(img)) or torch.zeros(len(img), 2, 2, dtype=torch.long)
    for batch, want in ((70, [32, 38]), (64, [32, 32]), (96, [32, 32, 32]), (10, [10])):
        sizes.clear()
        assert tokenizer_encoder(tok, 32)(torch.zeros(batch, 3, 16, 16)).shape == (batch, 2, 2)
        assert sorted(sizes) == want  # (worker threads may take them in any order)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        tokenizer_encoder(tok, 0)


@pytest.mark.parametrize("shape", [(4, 64, 64), (2, 100, 24), (1, 16, 8), (9, 64, 32)])  # 9: 4 + 4 + 1
def test_attend_is_sdpa_bitwise(shape):
    B, L, D = shape
    q, k, v = (torch.randn(B, 1, D, L).transpose(2, 3) for _ in range(3))  # AttnBlock's strided views
    assert torch.equal(vqgan._attend(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_nearest_code_is_the_first_of_ties_over_chunks(monkeypatch):
    monkeypatch.setattr(quantizer, "_DIST_CHUNK", 16)  # 4 rows per chunk over 4 codes
    e_VC = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    z_NC = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 0.0], [-1.0, 0.5], [1.0, 1.0]])
    assert quantizer._nearest_code(z_NC, e_VC).tolist() == [0, 1, 0, 3, 0]
    z_NC = torch.randn(37, 2)
    for n in (0, 1, 2, 5, 37):  # 5 rows: one chunk of 5, not 4 + 1
        want = quantizer._sq_dist(z_NC[:n], e_VC).argmin(1)
        assert torch.equal(quantizer._nearest_code(z_NC[:n], e_VC), want)
