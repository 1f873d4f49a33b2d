"""GPT backbone for raster (LlamaGen) and spiral next-any-tokens (EAR) generation.

Shape legend: B batch, L sequence positions (tokens of the order), N slots fed in one pass, S key positions,
D width, H heads, Dh head dim, V vocabulary.

Input slots are token ids plus two sentinels: CLS_ID (the class embedding) and MASK_ID (EAR's learned [MASK]).
Positions are explicit (row, col) per slot (row < 0 = class token) and attention masks come from group ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from argen.config import from_dict
from argen.model_io import drop_keys, load_strict, read_official, register
from argen.nn.attention import additive_mask, attention, chunk_mask
from argen.nn.kv_cache import Positions, kv_caches
from argen.nn.layers import LabelEmbedder, RMSNorm, SwiGLU, block_mods, modulate, swiglu_hidden
from argen.nn.linear import Linear
from argen.nn.masks import group_mask
from argen.nn.rope import CLS_ROW, apply_rope, rope_table
from argen.orders import GenerationOrder

MASK_ID = -1
CLS_ID = -2
MODES = ("next_token", "next_any")
ROPE_MODES = ("grid", "sequence")


@dataclass
class GPTConfig:
    """LlamaGen-style GPT; EAR = mode "next_any" (+ adaln).

    mode: "next_token" (predict token j from tokens < j; raster LlamaGen) or "next_any" (EAR: two streams,
        [MASK] slots predict a whole group given earlier groups).
    adaln: adaLN modulation (SiLU, Linear(D, 6D)) of every block by the class embedding (EAR).
    rope_mode: "grid" (each slot gets the phase of its true cell) or "sequence" (official quirk: sequence
        position j gets raster cell j's phase; required for official EAR checkpoints).
    label_dropout: probability of the null class during training (used by the objective).
    grid, order, schedule: the canvas and the order/schedule the model is trained with (sampling defaults).
    """

    vocab_size: int = 16384
    num_classes: int = 1000
    dim: int = 768
    n_layer: int = 12
    n_head: int = 12
    mode: str = "next_token"
    adaln: bool = False
    rope_mode: str = "grid"
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    multiple_of: int = 256
    label_dropout: float = 0.1
    dropout: float = 0.0
    init_std: float = 0.02
    grid: int = 16
    order: str = "raster"
    schedule: str | int | list[int] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.rope_mode not in ROPE_MODES:
            raise ValueError(f"rope_mode must be one of {ROPE_MODES}, got {self.rope_mode!r}")
        if self.dim % self.n_head or (self.dim // self.n_head) % 4:
            raise ValueError(
                f"dim {self.dim} / n_head {self.n_head} must give a head dim divisible by 4 (2D RoPE)"
            )
        if min(self.vocab_size, self.num_classes, self.n_layer, self.grid) < 1:
            raise ValueError("vocab_size, num_classes, n_layer and grid must be >= 1")
        if not 0 <= self.label_dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def ffn_hidden(self) -> int:
        return swiglu_hidden(self.dim, self.multiple_of)


_LLAMAGEN = dict(vocab_size=16384, num_classes=1000, rope_mode="sequence", order="raster", grid=16)
_EAR = dict(
    vocab_size=8192,
    num_classes=1000,
    mode="next_any",
    adaln=True,
    rope_mode="sequence",
    order="spiral",
    schedule="sides",
    grid=16,
)
_FMNIST = dict(vocab_size=512, num_classes=10, grid=16, label_dropout=0.1)  # the fmnist VQ codebook
PRESETS: dict[str, dict] = {
    "debug": dict(
        vocab_size=64,
        num_classes=10,
        dim=64,
        n_layer=2,
        n_head=2,
        grid=4,
        mode="next_any",
        adaln=True,
        order="spiral",
        schedule="sides",
    ),
    "debug_raster": dict(vocab_size=64, num_classes=10, dim=64, n_layer=2, n_head=2, grid=4),
    "S": dict(_LLAMAGEN, dim=512, n_layer=8, n_head=8),
    "B": dict(_LLAMAGEN, dim=768, n_layer=12, n_head=12),
    "L": dict(_LLAMAGEN, dim=1024, n_layer=24, n_head=16),
    "XL": dict(_LLAMAGEN, dim=1280, n_layer=36, n_head=20),
    "ear_B": dict(_EAR, dim=768, n_layer=12, n_head=12),
    "ear_L": dict(_EAR, dim=1024, n_layer=24, n_head=16),
    "ear_XL": dict(_EAR, dim=1280, n_layer=36, n_head=20),
    "fmnist_s": dict(
        _FMNIST, dim=384, n_layer=8, n_head=6, mode="next_any", adaln=True, order="spiral", schedule="sides"
    ),
    "fmnist_raster_s": dict(_FMNIST, dim=384, n_layer=8, n_head=6),
}


def gpt_config(preset: str, **overrides) -> GPTConfig:
    """GPTConfig from a named preset plus field overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown GPT preset {preset!r}; choose one of {sorted(PRESETS)}")
    return from_dict(GPTConfig, {**PRESETS[preset], **overrides}, where=f"gpt preset {preset!r}")


class Attention(nn.Module):
    """Fused-qkv multi-head attention with 2D RoPE; uses `self.cache` (a KVCache) when one is attached."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.wqkv = Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.wo = Linear(cfg.dim, cfg.dim, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.cache = None

    def forward(
        self,
        x_BND: torch.Tensor,
        table_NK2: torch.Tensor,
        mask_NS: torch.Tensor,
        pos_N: Positions | None = None,
    ) -> torch.Tensor:
        b, n, d = x_BND.shape
        qkv = self.wqkv(x_BND).view(b, n, 3, self.n_head, self.head_dim)
        q, k = apply_rope(qkv[:, :, :2], table_NK2).unbind(2)  # queries and keys in one rotation
        v = qkv[:, :, 2]
        q_BHND, k_BHND, v_BHND = (t.transpose(1, 2) for t in (q, k, v))
        if self.cache is not None:
            k_all, v_all = self.cache.update(pos_N, k_BHND, v_BHND)
            # keys past the mask's width are never visible: slice so SDPA does not compute them (a mask as
            # wide as the cache gives every pass one key shape: one compiled graph)
            k_BHND, v_BHND = k_all[:, :, : mask_NS.shape[1]], v_all[:, :, : mask_NS.shape[1]]
        out = attention(q_BHND, k_BHND, v_BHND, mask_NS)
        return self.dropout(self.wo(out.transpose(1, 2).reshape(b, n, d)))


class Block(nn.Module):
    """Pre-norm block; with adaLN: h = x + g1*attn(norm(x)(1+s1)+b1), out = h + g2*ffn(norm(h)(1+s2)+b2)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.dim = cfg.dim
        self.attention = Attention(cfg)
        self.feed_forward = SwiGLU(cfg.dim, cfg.ffn_hidden, cfg.dropout)
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ada_lin = nn.Sequential(nn.SiLU(), Linear(cfg.dim, 6 * cfg.dim)) if cfg.adaln else None

    def forward(
        self,
        x_BND: torch.Tensor,
        cond_BD: torch.Tensor,
        table_NK2: torch.Tensor,
        mask_NS: torch.Tensor,
        pos_N: Positions | None = None,
    ) -> torch.Tensor:
        if self.ada_lin is None:
            h = x_BND + self.attention(self.attention_norm(x_BND), table_NK2, mask_NS, pos_N)
            return h + self.feed_forward(self.ffn_norm(h))
        m = block_mods(self.ada_lin(cond_BD), self.dim)
        attn_in = modulate(self.attention_norm(x_BND), m.scale1, m.shift1)
        h = x_BND + m.gamma1 * self.attention(attn_in, table_NK2, mask_NS, pos_N)
        return h + m.gamma2 * self.feed_forward(modulate(self.ffn_norm(h), m.scale2, m.shift2))


@register("gpt", GPTConfig)
class GPT(nn.Module):
    """LlamaGen GPT / EAR. Key names match the official checkpoints (see `load_official_gpt`)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.cls_embedding = LabelEmbedder(config.num_classes, config.dim)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.mask_token = nn.Embedding(1, config.dim) if config.mode == "next_any" else None
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = Linear(config.dim, config.vocab_size, bias=False)
        self.init_weights()  # as VAR and ActVAR: a new model is initialised (loaders overwrite it)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Normal(0, init_std) linears/embeddings, zero biases, zero output head (as LlamaGen/EAR)."""
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=self.config.init_std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
        nn.init.zeros_(self.output.weight)

    # ------------------------------------------------------------------------------------------ positions
    def cells(self, order: GenerationOrder) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows_L, cols_L) whose RoPE phase each sequence position gets under `rope_mode`."""
        if self.config.rope_mode == "grid":
            return order.rows_L, order.cols_L
        j = torch.arange(order.length)
        return j // order.grid, j % order.grid

    # ---------------------------------------------------------------------------------------------- core
    def _embed(self, ids_BN: torch.Tensor, labels_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cond_BD = self.cls_embedding(labels_B)
        h = self.tok_embeddings(ids_BN.clamp(min=0))
        h = torch.where((ids_BN == CLS_ID)[..., None], cond_BD[:, None].to(h.dtype), h)
        if self.mask_token is not None:
            h = torch.where((ids_BN == MASK_ID)[..., None], self.mask_token.weight[0].to(h.dtype), h)
        return h, cond_BD

    def _run(
        self,
        ids_BN: torch.Tensor,
        labels_B: torch.Tensor,
        rows_N: torch.Tensor,
        cols_N: torch.Tensor,
        mask_NS: torch.Tensor,
        n_out: int,
        pos_N: Positions | None = None,
    ) -> torch.Tensor:
        h, cond_BD = self._embed(ids_BN, labels_B)
        table = rope_table(
            rows_N.to(h.device), cols_N.to(h.device), self.config.head_dim, self.config.rope_base
        )
        mask_NS = mask_NS.to(h.device)
        for layer in self.layers:
            h = layer(h, cond_BD, table, mask_NS, pos_N)
        return self.output(self.norm(h[:, h.shape[1] - n_out :])).float()

    def forward(
        self, tokens_BL: torch.Tensor, labels_B: torch.Tensor, order: GenerationOrder
    ) -> torch.Tensor:
        """Teacher forcing.

        Args:
            tokens_BL: ground-truth tokens in the order's sequence order (use `order.to_sequence`).
            labels_B: class ids (num_classes = the null class, for CFG-dropped samples).
            order: the generation order (cells and groups of each sequence position).

        Returns:
            (B, L, V) float32 logits; position j predicts sequence token j.
        """
        ids, rows, cols, groups, streams = self.teacher_forcing_layout(tokens_BL, order)
        mask = chunk_mask(group_mask(groups, None, streams))
        return self._run(ids, labels_B, rows, cols, mask, n_out=order.length)

    def teacher_forcing_layout(
        self, tokens_BL: torch.Tensor, order: GenerationOrder
    ) -> tuple[torch.Tensor, ...]:
        """Slots of the teacher-forcing sequence: (ids_BN, rows_N, cols_N, group_N, stream_N).

        next_token: [class, t_0 .. t_{L-2}], causal. next_any: [class, t_0 .. t_{L-1}, class, L x MASK] with
        context tokens on stream 0 and [MASK] slots on stream 1 (group 0 = class, group g+1 = step g).
        """
        b, length = tokens_BL.shape
        rows, cols = self.cells(order)
        cls = torch.full((b, 1), CLS_ID, dtype=tokens_BL.dtype, device=tokens_BL.device)
        neg = torch.tensor([CLS_ROW])
        if self.config.mode == "next_token":
            ids = torch.cat([cls, tokens_BL[:, :-1]], dim=1)
            n = torch.arange(length)
            return ids, torch.cat([neg, rows[:-1]]), torch.cat([neg, cols[:-1]]), n, torch.zeros_like(n)
        masks = torch.full_like(tokens_BL, MASK_ID)
        ids = torch.cat([cls, tokens_BL, cls, masks], dim=1)
        half_rows, half_cols = torch.cat([neg, rows]), torch.cat([neg, cols])
        half_groups = torch.cat([torch.zeros(1, dtype=torch.long), order.group_id_L + 1])
        streams = torch.cat(
            [torch.zeros(length + 1, dtype=torch.long), torch.ones(length + 1, dtype=torch.long)]
        )
        return (ids, half_rows.repeat(2), half_cols.repeat(2), half_groups.repeat(2), streams)

    # ------------------------------------------------------------------------------------- cached decoding
    @contextmanager
    def kv_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> Iterator[None]:
        """Attach static KV caches of `max_len` positions to every layer for the duration of the block."""
        p = self.output.weight
        with kv_caches(
            [blk.attention for blk in self.layers],
            batch,
            self.config.n_head,
            max_len,
            self.config.head_dim,
            dtype or p.dtype,
            p.device,
        ):
            yield

    def prefill(
        self,
        ids_BN: torch.Tensor,
        labels_B: torch.Tensor,
        pos_N: Positions,
        rows_N: torch.Tensor,
        cols_N: torch.Tensor,
        mask_NS: torch.Tensor,
        n_out: int,
    ) -> torch.Tensor:
        """First cached pass: the class token (cache position 0) plus any known prefix and first [MASK]s.
        Same contract as `decode_step` (unchecked: reading device tensors would stall the device)."""
        return self.decode_step(ids_BN, labels_B, pos_N, rows_N, cols_N, mask_NS, n_out)

    def decode_step(
        self,
        ids_BN: torch.Tensor,
        labels_B: torch.Tensor,
        pos_N: Positions,
        rows_N: torch.Tensor,
        cols_N: torch.Tensor,
        mask_NS: torch.Tensor,
        n_out: int,
    ) -> torch.Tensor:
        """One cached pass inside `kv_cache`: write K/V of the N slots at cache positions `pos_N`.

        Args:
            ids_BN: token ids, CLS_ID or MASK_ID per slot.
            pos_N: cache position of each slot ([MASK] K/V are overwritten when the real token is fed); a
                slice when they are a run (a plain copy into the cache).
            rows_N, cols_N: RoPE cell of each slot (row < 0 = class token).
            mask_NS: boolean mask over the first S cache positions (from `group_mask`).
            n_out: number of trailing slots whose logits are returned.

        Returns:
            (B, n_out, V) float32 logits.
        """
        device = ids_BN.device
        pos_N = pos_N if isinstance(pos_N, slice) else pos_N.to(device)
        if not torch.is_autocast_enabled(device.type):  # (autocast: the queries' dtype is not the weights')
            mask_NS = additive_mask(mask_NS.to(device), self.output.weight.dtype)  # once for all layers
        return self._run(ids_BN, labels_B, rows_N, cols_N, mask_NS, n_out, pos_N)


def load_official_gpt(path: str, config: GPTConfig) -> GPT:
    """Load an official LlamaGen GPT or EAR checkpoint (weights under "model"), strictly.

    Derivable buffers (`freqs_cis`, masks, KV caches) are accepted and dropped. Official checkpoints need
    rope_mode "sequence" for EAR (the phase quirk); for raster LlamaGen both modes coincide.
    """
    state = read_official(path, key="model")
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    state = drop_keys(state, [r"freqs_cis", r"causal_mask", r"mask_expandAR", r".*kv_cache\..*"])
    model = GPT(config)
    load_strict(model, state, source=str(path))
    return model.eval()
