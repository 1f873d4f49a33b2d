"""ActVAR: a VAR whose FFNs run as top-k experts and whose blocks compute only high-potential tokens.

Shape legend: B batch, L tokens (all scales or a prefix), l tokens of one scale, n kept tokens, C width,
V vocabulary, Cv VQVAE channels, E experts, S scales, H heads, Dh head dim.

The dense VAR is held as `self.var` (same parameter names, FFNs replaced by a sparse FFN variant such as
`MoEFFN`, which keeps fc1/fc2), so its embeddings, modulations, blocks, head and cache helpers are reused as
they are. ActVAR only decides, per block and scale, which tokens a VAR block computes and with how many
experts: a gate keeps the top ceil(rho * l) tokens, which run VAR's block (their queries against every
token's keys/values, their top-k experts); the others take `x + up(down(h))` (a zero-initialised low-rank
adapter) and keep their place in the sequence. With every expert on and rho = 1 the computation is VAR's.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from argen.model_io import load_strict, register
from argen.models.var import PRESETS as VAR_PRESETS
from argen.models.var import VAR, VARConfig
from argen.nn.layers import Mods, scatter_rows, to_weight_dtype
from argen.nn.linear import Linear
from argen.nn.masks import group_mask
from argen.nn.moe import MoEConfig, fp32_linear, sparse_ffn_class


@dataclass
class ActVARConfig:
    """ActVAR = a VAR config plus the sparsity design (every choice is a field, for ablations).

    var: the dense VAR's config.
    num_experts: E experts per FFN (equal splits of the 4C hidden units).
    experts_k: experts run per token at each scale (len S); None = all E at every scale.
    keep_ratio: fraction rho of tokens computed at each scale (len S, in (0, 1]); None = 1 everywhere.
        DESIGN default: < 1 only on the last three scales (77% of the tokens).
    gate_layers: blocks that get a token selector; None = all blocks.
    adapter_rank: rank r of the reconstruction adapter of skipped tokens (up projection starts at zero);
        its output is scaled by the block's AdaLN gates (gamma1 + gamma2) so it lives on the scale of the
        block's real update (tiny at the official initialisation) and trains stably whatever that scale.
    kmeans_iters / split_seed: balanced k-means used to split each FFN (block i uses seed split_seed + i).
    straight_through: router/gate scores scale the kept outputs by exactly 1 while passing gradients.
    expert_backend: how chosen experts run ("auto", "padded", "segment", "masked"; see argen.nn.moe).
    ffn: the sparse FFN variant (a name registered with `argen.nn.moe.register_sparse_ffn`).
    """

    var: VARConfig = field(default_factory=VARConfig)
    num_experts: int = 16
    experts_k: tuple[int, ...] | None = None
    keep_ratio: tuple[float, ...] | None = None
    gate_layers: tuple[int, ...] | None = None
    adapter_rank: int = 16
    kmeans_iters: int = 20
    split_seed: int = 0
    straight_through: bool = True
    expert_backend: str = "auto"
    ffn: str = "moe"

    def __post_init__(self) -> None:
        num_scales, depth = len(self.var.patch_nums), self.var.depth
        sparse_ffn_class(self.ffn)  # validates the name
        self.moe  # noqa: B018 (validates the expert split)
        self.experts_k = tuple(int(k) for k in (self.experts_k or (self.num_experts,) * num_scales))
        self.keep_ratio = tuple(float(r) for r in (self.keep_ratio or (1.0,) * num_scales))
        if self.gate_layers is not None:
            self.gate_layers = tuple(int(i) for i in self.gate_layers)
        if len(self.experts_k) != num_scales or not all(1 <= k <= self.num_experts for k in self.experts_k):
            raise ValueError(
                f"experts_k needs one value in [1, {self.num_experts}] per scale ({num_scales} "
                f"scales), got {self.experts_k}"
            )
        if len(self.keep_ratio) != num_scales or not all(0 < r <= 1 for r in self.keep_ratio):
            raise ValueError(
                f"keep_ratio needs one value in (0, 1] per scale ({num_scales}), got {self.keep_ratio}"
            )
        if self.gate_layers is not None and not all(0 <= i < depth for i in self.gate_layers):
            raise ValueError(f"gate_layers must be block indices in [0, {depth}), got {self.gate_layers}")
        if self.adapter_rank < 1:
            raise ValueError(f"adapter_rank must be >= 1, got {self.adapter_rank}")

    @property
    def gated(self) -> tuple[int, ...]:
        return tuple(range(self.var.depth)) if self.gate_layers is None else self.gate_layers

    @property
    def moe(self) -> MoEConfig:
        """The sparse FFNs' config."""
        vc = self.var
        return MoEConfig(
            vc.dim, vc.hidden, self.num_experts, self.straight_through, self.expert_backend, self.kmeans_iters
        )


def _last3(n: int, dense: Any, sparse: Any) -> tuple:
    return (dense,) * (n - 3) + (sparse,) * 3


PRESETS: dict[str, dict[str, Any]] = {
    "debug": dict(
        var="debug", num_experts=4, experts_k=(4, 4, 2, 2), keep_ratio=(1.0, 1.0, 0.5, 0.5), adapter_rank=4
    ),
    # 22% fewer sampling FLOPs than dense on the 10-scale layout (d16: 465 vs 597 GFLOPs with CFG; see
    # argen.models.flops.actvar_sampling_flops): 12 of 16 experts and 80% of tokens on the last three scales.
    **{
        name: dict(var=name, num_experts=16, experts_k=_last3(10, 16, 12), keep_ratio=_last3(10, 1.0, 0.8))
        for name in ("d16", "d20", "d24", "d30", "fmnist")
    },
    # Token sparsity only (70% of tokens on the last three scales, all experts): 20% fewer FLOPs. The CPU
    # budget at width 128: 32-unit experts never beat the dense FFN on a CPU (the crossover in
    # argen.nn.expert_kernels runs them masked), so only tokens save time there (docs/actvar_speed.md).
    "fmnist_tokens": dict(var="fmnist", num_experts=16, keep_ratio=_last3(10, 1.0, 0.7)),
}


def actvar_config(preset: str, var: VARConfig | None = None, **overrides: Any) -> ActVARConfig:
    """Config of a named budget preset; `var` replaces the preset's VAR config (e.g. a loaded teacher's)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown ActVAR preset {preset!r}; choose one of {sorted(PRESETS)}")
    fields = dict(PRESETS[preset])
    var_cfg = var or VARConfig(**VAR_PRESETS[fields.pop("var")])
    fields.pop("var", None)
    return ActVARConfig(var=var_cfg, **{**fields, **overrides})


def kept_count(keep_ratio: float, tokens: int) -> int:
    """Tokens computed at a scale: ceil(rho * l), at least 1 (rounded first so 0.7 * 10 gives 7, not 8)."""
    return max(1, math.ceil(round(keep_ratio * tokens, 9)))


class TokenSelector(nn.Module):
    """Scores each token's update potential and reconstructs the tokens that skip the block."""

    def __init__(self, width: int, rank: int) -> None:
        super().__init__()
        self.gate = nn.Linear(width, 1)
        self.down = Linear(width, rank, bias=False)
        self.up = Linear(rank, width, bias=False)

    def init_weights(self) -> None:
        nn.init.normal_(self.gate.weight, std=self.gate.in_features**-0.5)
        nn.init.zeros_(self.gate.bias)
        nn.init.normal_(self.down.weight, std=self.down.in_features**-0.5)
        nn.init.zeros_(self.up.weight)  # skipped tokens start as the identity

    def score(self, h_BLC: torch.Tensor) -> torch.Tensor:
        """(B, L) gate logits from the modulated attention input."""
        return fp32_linear(self.gate, h_BLC).squeeze(-1)

    def reconstruct(self, h_BLC: torch.Tensor, gamma_B1C: torch.Tensor) -> torch.Tensor:
        """(B, L, C) residual update of skipped tokens; gamma_B1C = the block's gamma1 + gamma2."""
        return self.up(self.down(h_BLC)) * gamma_B1C


@dataclass
class _Segment:
    """The positions a block loop covers (scales `scales` = sequence range [begin, end)) and the settings
    per position, computed once per forward or cached step.

    ids_L: scale id of each position. rho_L: keep ratio per position. k: experts per token (None = all, an
    int when uniform, else an (L,) tensor). pos_l: the positions when cached (written to the KV cache).
    """

    scales: tuple[int, ...]
    begin: int
    end: int
    cached: bool
    ids_L: torch.Tensor
    rho_L: torch.Tensor
    k: torch.Tensor | int | None
    pos_l: slice | None


def _ste(score: torch.Tensor) -> torch.Tensor:
    """Exactly 1 in the forward pass; d/dscore = sigmoid'(score)."""
    s = torch.sigmoid(score)
    return (s - s.detach()) + 1.0


@register("actvar", ActVARConfig)
class ActVAR(nn.Module):
    """VAR with dynamic expert (router) and token (gate) sparsity; same entry points as `VAR`."""

    def __init__(self, config: ActVARConfig) -> None:
        super().__init__()
        self.config = config
        vc = config.var
        self.var = VAR(vc)
        ffn_cls = sparse_ffn_class(config.ffn)
        for block in self.var.blocks:
            block.ffn = ffn_cls(config.moe)
        self.selectors = nn.ModuleDict(
            {str(i): TokenSelector(vc.dim, config.adapter_rank) for i in config.gated}
        )
        self._segments: dict[tuple, _Segment] = {}  # `_segment`'s results, reused by every step of a scale
        self.init_weights()

    def init_weights(self) -> None:
        """Routers at zero, gates random, adapters identity; backbone weights come from `from_dense`."""
        for block in self.var.blocks:
            block.ffn.init_weights()
        for sel in self.selectors.values():
            sel.init_weights()

    @classmethod
    def from_dense(cls, var: VAR, config: ActVARConfig | None = None) -> ActVAR:
        """Wrap a trained dense VAR: split each FFN into experts (no new weights), add routers and gates."""
        config = config or ActVARConfig(var=var.config)
        if config.var != var.config:
            raise ValueError("ActVARConfig.var must equal the dense model's config; pass var=teacher.config")
        model = cls(config).to(device=var.pos_1LC.device, dtype=var.pos_1LC.dtype)
        model.var = copy.deepcopy(var)
        ffn_cls = sparse_ffn_class(config.ffn)
        for i, block in enumerate(model.var.blocks):
            block.ffn = ffn_cls.from_dense(
                block.ffn.fc1, block.ffn.fc2, config.moe, seed=config.split_seed + i
            )
        return model

    def to_dense(self) -> VAR:
        """Export the backbone as a plain VAR (routers, gates and adapters dropped; FFN units un-permuted)."""
        state = {k: v for k, v in self.var.state_dict().items() if ".ffn." not in k}
        for i, block in enumerate(self.var.blocks):
            state.update({f"blocks.{i}.ffn.{k}": v for k, v in block.ffn.dense_state().items()})
        dense = VAR(self.config.var).to(device=self.var.pos_1LC.device, dtype=self.var.pos_1LC.dtype)
        load_strict(dense, state, source="ActVAR.to_dense")
        return dense

    # --------------------------------------------------------------------------------------- block
    def _segment(self, scales: tuple[int, ...], cached: bool, device: torch.device) -> _Segment:
        """The settings per position of a block loop, made once per (scales, cached, device) and mode (their
        small tensors cost 0.13 ms to build, a tenth of a batch-1 step of the Fashion-MNIST model)."""
        key = (scales, cached, str(device), torch.is_inference_mode_enabled())
        if key not in self._segments:
            self._segments[key] = self._make_segment(scales, cached, device)
        return self._segments[key]

    def _make_segment(self, scales: tuple[int, ...], cached: bool, device: torch.device) -> _Segment:
        cfg, vc = self.config, self.config.var
        begin, end = vc.scale_bounds[scales[0]][0], vc.scale_bounds[scales[-1]][1]
        sizes = torch.tensor([vc.scale_sizes[s] for s in scales], device=device)

        def per_position(values: tuple) -> torch.Tensor:
            return torch.repeat_interleave(torch.tensor([values[s] for s in scales], device=device), sizes)

        ks = {cfg.experts_k[s] for s in scales}
        k = None if ks == {cfg.num_experts} else ks.pop() if len(ks) == 1 else per_position(cfg.experts_k)
        ids_L = self.var.scale_ids(device)[begin:end]
        pos_l = slice(begin, end) if cached else None
        return _Segment(scales, begin, end, cached, ids_L, per_position(cfg.keep_ratio), k, pos_l)

    def _keep_index(
        self, i: int, h_BLC: torch.Tensor, seg: _Segment
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Sorted kept positions (B, n) within the segment and all gate logits (B, L); None = keep all."""
        rhos = [self.config.keep_ratio[s] for s in seg.scales]
        if str(i) not in self.selectors or all(r >= 1.0 for r in rhos):
            return None
        score_BL = self.selectors[str(i)].score(h_BLC)
        parts, offset = [], 0
        for s, rho in zip(seg.scales, rhos, strict=True):
            size = self.config.var.scale_sizes[s]
            n = kept_count(rho, size) if rho < 1.0 else size
            top = torch.topk(score_BL[:, offset : offset + size], n, dim=1, sorted=False).indices
            parts.append(torch.sort(top, dim=1).values + offset)
            offset += size
        return torch.cat(parts, dim=1), score_BL

    def _block(
        self,
        i: int,
        x_BLC: torch.Tensor,
        mods: Mods,
        seg: _Segment,
        mask_LL: torch.Tensor | None,
        trace: dict | None,
    ) -> torch.Tensor:
        """VAR's block i over the segment's kept tokens, (B, L, C) -> (B, L, C)."""
        block = self.var.blocks[i]
        ffn_kwargs: dict = {} if trace is None else {"router_trace": trace["router"]}
        h_BLC = block.attn_input(x_BLC, mods)
        keep = self._keep_index(i, h_BLC, seg)
        end = seg.end if seg.cached else None
        if keep is None:  # every token computed: VAR's own block
            k = seg.k.expand(x_BLC.shape[0], -1) if isinstance(seg.k, torch.Tensor) else seg.k
            return block(x_BLC, mods, mask_LL, seg.pos_l, end, h_BLC=h_BLC, k=k, **ffn_kwargs)
        keep_Bn, score_BL = keep
        if trace is not None:
            trace["gate"].append((score_BL, seg.rho_L))
        # kept positions share their scale ids across the batch (a fixed count per scale), and a cached
        # step's cache prefix holds exactly the scales its queries may see
        mask_nS = None if seg.cached else group_mask(seg.ids_L[keep_Bn[0]], seg.ids_L)
        weight_Bn1 = None
        if self.config.straight_through and torch.is_grad_enabled():
            weight_Bn1 = _ste(torch.gather(score_BL, 1, keep_Bn))[..., None].to(x_BLC.dtype)
        k = seg.k[keep_Bn] if isinstance(seg.k, torch.Tensor) else seg.k
        x_BnC = block(
            x_BLC,
            mods,
            mask_nS,
            seg.pos_l,
            end,
            h_BLC=h_BLC,
            rows_Bn=keep_Bn,
            weight_Bn1=weight_Bn1,
            k=k,
            **ffn_kwargs,
        )
        recon_BLC = self.selectors[str(i)].reconstruct(h_BLC, mods.gamma1 + mods.gamma2)
        if torch.is_grad_enabled() or not recon_BLC.dtype == x_BLC.dtype == x_BnC.dtype:  # (autocast mixes)
            return scatter_rows(x_BLC + recon_BLC, keep_Bn, x_BnC)
        # inference: the skipped rows' update and the kept rows' write reuse the adapter's buffer
        return scatter_rows(recon_BLC.add_(x_BLC), keep_Bn, x_BnC, inplace=True)

    # -------------------------------------------------------------------------------- entry points
    def forward(
        self, labels_B: torch.Tensor, var_input_BLCv: torch.Tensor, trace: dict | None = None
    ) -> torch.Tensor:
        """Sparse teacher forcing (same contract as `VAR.forward`).

        Args:
            labels_B: (B,) class ids (`num_classes` = null label).
            var_input_BLCv: (B, L' - first_l, Cv) VQVAE teacher-forcing input (or a prefix of whole scales).
            trace: optional dict filled for distillation: "gate" [(gate logits (B, L), rho (L,))],
                "router" [(router logits (B, n, E), experts k (B, n))], "hidden" (B, L, C) last hidden state.
        Returns:
            (B, L', V) float32 logits.
        """
        var, vc = self.var, self.config.var
        length = vc.scale_sizes[0] + var_input_BLCv.shape[1]
        ends = [end for _, end in vc.scale_bounds]
        if length not in ends:
            raise ValueError(f"var input covers {length} tokens; it must end on a scale boundary {ends}")
        if trace is not None:
            trace.update(gate=[], router=[])
        cond_BD = var.class_emb(labels_B)
        lvl_pos_1LC = var.lvl_pos()
        x_BLC = torch.cat(
            (
                var.first_scale_input(cond_BD, lvl_pos_1LC),
                var.word_embed(to_weight_dtype(var_input_BLCv, var.word_embed))
                + lvl_pos_1LC[:, vc.scale_sizes[0] : length],
            ),
            1,
        )
        seg = self._segment(tuple(range(ends.index(length) + 1)), False, x_BLC.device)
        mask_LL = group_mask(seg.ids_L)
        for i, mods in enumerate(var.block_mods(cond_BD)):
            x_BLC = self._block(i, x_BLC, mods, seg, mask_LL, trace)
        if trace is not None:
            trace["hidden"] = x_BLC
        return var.logits(x_BLC, cond_BD)

    def step(self, si: int, x_BlC: torch.Tensor, cond_BD: torch.Tensor, mods: list[Mods]) -> torch.Tensor:
        """One cached scale (same contract as `VAR.step`): kept tokens computed, every token's K/V written."""
        seg = self._segment((si,), True, x_BlC.device)
        for i, mods_b in enumerate(mods):
            x_BlC = self._block(i, x_BlC, mods_b, seg, None, None)
        return self.var.logits(x_BlC, cond_BD)

    def sampling_view(self) -> _SamplingView:
        """VAR's sampling interface with ActVAR's sparse `step`.

        Pass it to `argen.sampling.next_scale.sample_next_scale` (CFG, cache, VQVAE handling reused as is).
        """
        return _SamplingView(self)


class _SamplingView:
    """VAR's sampling surface (config, embeddings, modulations, cache) with ActVAR's sparse `step`."""

    def __init__(self, model: ActVAR) -> None:
        var = model.var
        self.config, self.pos_1LC, self.class_emb = var.config, var.pos_1LC, var.class_emb
        self.block_mods, self.lvl_pos = var.block_mods, var.lvl_pos
        self.first_scale_input, self.next_scale_input = var.first_scale_input, var.next_scale_input
        self.kv_caches, self.logits, self.step = var.kv_caches, var.logits, model.step

        self._model = model

    def __call__(self, labels_B: torch.Tensor, var_input_BLCv: torch.Tensor) -> torch.Tensor:
        """Sparse teacher forcing, so `sample_next_scale_reference` also runs on the view."""
        return self._model(labels_B, var_input_BLCv)
