"""VAR: next-scale prediction transformer, loadable from the official checkpoints (var_d16..d30).

Shape legend: B batch, L tokens over all scales, l tokens of one scale, C width, D condition width (= C),
H heads, Dh head dim, V vocabulary, Cv VQVAE channels, S scales, E = 6 modulation vectors.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from argen.model_io import drop_keys, load_strict, read_official, register
from argen.models.checkpoints import load_model
from argen.models.var_blocks import AdaLNBeforeHead, AdaLNBlock
from argen.models.var_config import PRESETS, VARConfig, var_config
from argen.nn.attention import ChunkedMask, chunk_mask
from argen.nn.kv_cache import kv_caches
from argen.nn.layers import Mods, to_weight_dtype
from argen.nn.linear import Linear
from argen.nn.masks import group_mask, groups_from_sizes

__all__ = ["PRESETS", "VAR", "VARConfig", "load_official_var", "load_var", "var_config"]

# Buffers of the official state dict that argen derives from the config (accepted, never required).
DERIVED_BUFFERS = (r"lvl_1L", r"attn_bias_for_masking", r"blocks\.\d+\.attn\.zero_k_bias")


@functools.lru_cache(maxsize=64)
def _teacher_forcing_mask(
    scale_sizes: tuple[int, ...], length: int, device: str
) -> torch.Tensor | ChunkedMask:
    """The chunked block-causal mask of the first `length` tokens. It depends only on the shape, so it is
    built once per shape and device, not on every teacher-forcing step (about 5 ms on a CPU at 680 tokens)."""
    return chunk_mask(group_mask(groups_from_sizes(scale_sizes)[:length])).to(device)


@register("var", VARConfig)
class VAR(nn.Module):
    """Class-conditional next-scale predictor (VAR), key-compatible with the official checkpoints.

    Teacher forcing: `forward(labels_B, var_input_BLCv)` over a block-causal mask (each scale sees itself and
    all coarser scales). Sampling: inside `with model.kv_caches(...)`, `step(si, x_BlC, cond_BD, mods)` runs
    one scale against the static cache (see `argen.sampling.next_scale`).
    """

    def __init__(self, config: VARConfig) -> None:
        super().__init__()
        self.config = config
        C, S = config.dim, len(config.patch_nums)
        self.word_embed = Linear(config.vae_channels, C)
        self.class_emb = nn.Embedding(config.num_classes + 1, C)
        self.pos_start = nn.Parameter(torch.empty(1, config.scale_sizes[0], C))
        self.pos_1LC = nn.Parameter(torch.empty(1, config.seq_len, C))
        self.lvl_embed = nn.Embedding(S, C)
        if config.shared_aln:
            self.shared_ada_lin = nn.Sequential(nn.SiLU(), Linear(C, 6 * C))
        rates = [config.drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.ModuleList(AdaLNBlock(config, drop_path=r) for r in rates)
        self.head_nm = AdaLNBeforeHead(config)
        self.head = Linear(C, config.vocab_size)
        self.init_weights()

    @torch.no_grad()
    def init_weights(
        self, init_adaln: float = 0.5, init_adaln_gamma: float = 1e-5, init_head: float = 0.02
    ) -> None:
        """Official VAR initialisation: truncated normal std sqrt(1/(3C)), scaled residual projections,
        tiny gates (gamma) so every block starts close to the identity, small head."""
        C, std = self.config.dim, math.sqrt(1 / self.config.dim / 3)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=std)
        for p in (self.pos_start, self.pos_1LC):
            nn.init.trunc_normal_(p, std=std)
        self.head.weight.mul_(init_head)
        self.head_nm.ada_lin[-1].weight.mul_(init_adaln)
        depth = self.config.depth
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * depth))
            block.ffn.fc2.weight.div_(math.sqrt(2 * depth))
            if block.attn.l2_norm:
                block.attn.scale_mul_1H11.fill_(math.log(4.0))
            if self.config.shared_aln:
                block.ada_gss.copy_(torch.randn_like(block.ada_gss) / C**0.5)
                block.ada_gss[:, :, 2:].mul_(init_adaln)
                block.ada_gss[:, :, :2].mul_(init_adaln_gamma)
            else:
                block.ada_lin[-1].weight[2 * C :].mul_(init_adaln)
                block.ada_lin[-1].weight[: 2 * C].mul_(init_adaln_gamma)

    # ------------------------------------------------------------------------------------------ pieces
    def scale_ids(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(L,) scale index of every token position."""
        return groups_from_sizes(self.config.scale_sizes, device=device)

    def block_causal_mask(self, length: int, device: torch.device | str | None = None) -> torch.Tensor:
        """(length, length) boolean mask: a token sees its own scale and all coarser ones."""
        ids_L = self.scale_ids(device)[:length]
        return group_mask(ids_L)

    def lvl_pos(self) -> torch.Tensor:
        """(1, L, C) level embedding plus absolute position embedding of every position."""
        return self.lvl_embed(self.scale_ids(self.pos_1LC.device))[None] + self.pos_1LC

    def block_mods(self, cond_BD: torch.Tensor) -> list[Mods]:
        """Per-block modulation vectors for condition (B, D); constant over scales, so samplers reuse them."""
        if self.config.shared_aln:
            cond = self.shared_ada_lin(cond_BD).view(-1, 1, 6, self.config.dim)
            return [b.modulation(cond) for b in self.blocks]
        return [b.modulation(cond_BD) for b in self.blocks]

    def first_scale_input(self, cond_BD: torch.Tensor, lvl_pos_1LC: torch.Tensor) -> torch.Tensor:
        """(B, first_l, C) input of scale 0: class embedding + pos_start + level/position embedding."""
        first_l = self.config.scale_sizes[0]
        sos_BlC = cond_BD[:, None].expand(-1, first_l, -1) + self.pos_start
        return sos_BlC + lvl_pos_1LC[:, :first_l]

    def next_scale_input(self, si: int, next_BlCv: torch.Tensor, lvl_pos_1LC: torch.Tensor) -> torch.Tensor:
        """(B, l, C) input of scale `si` (>= 1) from the VQVAE's (B, l, Cv) downsampled f_hat."""
        begin, end = self.config.scale_bounds[si]
        return self.word_embed(to_weight_dtype(next_BlCv, self.word_embed)) + lvl_pos_1LC[:, begin:end]

    def logits(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        """(B, L, C) hidden states -> (B, L, V) logits (float32)."""
        return self.head(self.head_nm(x_BLC, cond_BD)).float()

    # ------------------------------------------------------------------------------------- entry points
    def forward(self, labels_B: torch.Tensor, var_input_BLCv: torch.Tensor) -> torch.Tensor:
        """Teacher forcing over all scales, or over the first k scales when the input is that prefix.

        Args:
            labels_B: (B,) int64 class ids; `num_classes` is the null (unconditional) label. Label dropout is
                the objective's job.
            var_input_BLCv: (B, L' - first_l, Cv) VQVAE `idxBl_to_var_input` (or its first-k-scales prefix).

        Returns:
            (B, L', V) float32 logits; position i predicts token i of the multi-scale sequence.
        """
        cfg = self.config
        length = cfg.scale_sizes[0] + var_input_BLCv.shape[1]
        if length not in [end for _, end in cfg.scale_bounds]:
            raise ValueError(
                f"var input covers {length} tokens; it must end on a scale boundary "
                f"{[end for _, end in cfg.scale_bounds]} (patch_nums {cfg.patch_nums})"
            )
        cond_BD = self.class_emb(labels_B)
        sos_BlC = cond_BD[:, None].expand(-1, cfg.scale_sizes[0], -1) + self.pos_start
        x_BLC = torch.cat((sos_BlC, self.word_embed(to_weight_dtype(var_input_BLCv, self.word_embed))), dim=1)
        x_BLC = x_BLC + self.lvl_pos()[:, :length]
        mask_LL = _teacher_forcing_mask(cfg.scale_sizes, length, str(x_BLC.device))
        for block, mods in zip(self.blocks, self.block_mods(cond_BD), strict=True):
            x_BLC = block(x_BLC, mods, mask_LL)
        return self.logits(x_BLC, cond_BD)

    @contextmanager
    def kv_caches(
        self, batch: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Iterator[None]:
        """Attach a static (B, H, L, Dh) KV cache to every block for one sampling run."""
        p = self.pos_1LC
        with kv_caches(
            [b.attn for b in self.blocks],
            batch,
            self.config.num_heads,
            self.config.seq_len,
            self.config.dim // self.config.num_heads,
            dtype or p.dtype,
            device or p.device,
        ):
            yield

    def step(self, si: int, x_BlC: torch.Tensor, cond_BD: torch.Tensor, mods: list[Mods]) -> torch.Tensor:
        """One cached scale: write K/V of scale `si`, attend to scales <= si, return (B, l, V) logits.

        Args:
            si: scale index; scales must be fed in order 0, 1, ... within one `kv_caches` block.
            x_BlC: (B, l, C) scale input (`first_scale_input` / `next_scale_input`).
            cond_BD: (B, D) class embedding. mods: `block_mods(cond_BD)`.
        """
        begin, end = self.config.scale_bounds[si]
        for block, mods_b in zip(self.blocks, mods, strict=True):
            x_BlC = block(x_BlC, mods_b, None, slice(begin, end), end)
        return self.logits(x_BlC, cond_BD)


# ---------------------------------------------------------------------------------------- official files
def adapt_official_var_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official VAR state dict -> argen VAR state dict (drops the derivable buffers; names are shared)."""
    return drop_keys(state, DERIVED_BUFFERS)


def load_official_var(path: str | Path, config: VARConfig, device: torch.device | str = "cpu") -> VAR:
    """Load an official `var_d*.pth` (plain state dict, read weights-only) strictly into a VAR.

    Args:
        path: official checkpoint file (or a safetensors file with the same keys).
        config: e.g. `var_config("d16")`; must match the file (depth, vocabulary, patch_nums).

    Returns:
        The VAR in eval mode on `device`.
    """
    state = adapt_official_var_state(read_official(path))
    with torch.device("meta"):
        model = VAR(config)
    model = model.to_empty(device=device)
    load_strict(model, state, source=str(path))
    return model.eval()


def num_params(model: nn.Module) -> int:
    """Parameter count as the official code reports it (all parameters, no buffers)."""
    return sum(p.numel() for p in model.parameters())


def load_var(path: str | Path, preset: str | None = None, device: torch.device | str = "cpu") -> VAR:
    """A VAR from an argen model file (`.safetensors` + `.json`) or an official `.pth` (needs `preset`)."""
    if Path(path).suffix in (".pth", ".pt"):
        if preset is None:
            raise ValueError(f"{path} is an official checkpoint: name its preset (one of {sorted(PRESETS)})")
        return load_official_var(path, var_config(preset), device)
    model = load_model(path, device=device)
    if not isinstance(model, VAR):
        raise ValueError(f"{path} holds a {type(model).__name__} (kind {model.kind!r}), not a VAR")
    return model
