"""KV-cached autoregressive sampling: raster next-token (LlamaGen) and next-any-tokens groups (EAR).

Shape legend: B batch, L sequence positions (n*n), N slots fed in one pass, S visible cache positions,
V vocabulary, K centre crop side.

Cache layout: position 0 holds the class token, position 1 + j the token at sequence position j. In EAR
mode a [MASK] slot predicting position j is written at 1 + j and overwritten by the real token one pass
later, so a mask over the cache is plain block-causal over step ids.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from argen.models.gpt import CLS_ID, GPT, MASK_ID
from argen.nn.masks import group_mask
from argen.nn.rope import CLS_ROW
from argen.orders import GenerationOrder, Step, build_order, square_prefix, step_plan
from argen.sampling.logits import SamplingConfig, cfg_combine, cfg_scale_at, make_generator, sample_tokens


@dataclass
class SampleOutput:
    """tokens_BL: raster-ordered tokens. snapshots: (B, L) raster tokens after each pass (-1 = not yet
    generated), when asked. logits_BLV: guided logits per sequence position, when asked. passes: forward
    passes run."""

    tokens_BL: torch.Tensor
    snapshots: list[torch.Tensor] = field(default_factory=list)
    logits_BLV: torch.Tensor | None = None
    passes: int = 0


class GenerationProcess:
    """Order + schedule + sampling rule, apart from the network that scores tokens.

    Args:
        order: which cell each sequence position holds and how positions group into passes.
        sampling: CFG scale/schedule, temperature, top-k, top-p and seed.
    """

    def __init__(self, order: GenerationOrder, sampling: SamplingConfig | None = None) -> None:
        self.order = order
        self.sampling = sampling or SamplingConfig()

    @classmethod
    def for_model(
        cls,
        model: GPT,
        sampling: SamplingConfig | None = None,
        order: str | None = None,
        schedule: str | int | list[int] | None = None,
        grid: int | None = None,
    ) -> GenerationProcess:
        """The process a model was trained for (its config's order/schedule/grid), with optional changes."""
        cfg = model.config
        sched = cfg.schedule if schedule is None else schedule
        return cls(build_order(order or cfg.order, grid or cfg.grid, sched), sampling)

    def steps(self, model: GPT, prefix_len: int = 0) -> list[Step]:
        return step_plan(self.order, model.config.mode, prefix_len)

    def _key_groups(self, mode: str) -> torch.Tensor:
        """Step id of every cache position (class token = 0)."""
        if mode == "next_token":
            return torch.arange(self.order.length + 1)
        return torch.cat([torch.zeros(1, dtype=torch.long), self.order.group_id_L + 1])

    def _slots(
        self, model: GPT, step: Step, seq_BL: torch.Tensor, key_groups: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """(ids_BN, pos_N, rows_N, cols_N, mask_NS, n_out) of one pass."""
        b = seq_BL.shape[0]
        rows_L, cols_L = model.cells(self.order)
        fed = torch.tensor(list(step.fed), dtype=torch.long)
        ids, pos, rows, cols = [seq_BL[:, fed]], [fed + 1], [rows_L[fed]], [cols_L[fed]]
        if step.cls:
            ids.insert(0, torch.full((b, 1), CLS_ID, dtype=torch.long, device=seq_BL.device))
            pos.insert(0, torch.zeros(1, dtype=torch.long))
            rows.insert(0, torch.tensor([CLS_ROW]))
            cols.insert(0, torch.tensor([CLS_ROW]))
        n_out = 1
        if model.config.mode == "next_any":
            pred = torch.tensor(list(step.predicted), dtype=torch.long)
            ids.append(torch.full((b, len(pred)), MASK_ID, dtype=torch.long, device=seq_BL.device))
            pos.append(pred + 1)
            rows.append(rows_L[pred])
            cols.append(cols_L[pred])
            n_out = len(pred)
        pos_N = torch.cat(pos)
        s = int(pos_N.max()) + 1
        mask_NS = group_mask(key_groups[pos_N], key_groups[:s])
        return torch.cat(ids, dim=1), pos_N, torch.cat(rows), torch.cat(cols), mask_NS, n_out

    def _labels_in(self, model: GPT, labels_B: torch.Tensor) -> torch.Tensor:
        """Conditional rows, then (with CFG) the same number of null-class rows."""
        if not self.sampling.guided:
            return labels_B
        return torch.cat([labels_B, torch.full_like(labels_B, model.config.num_classes)])

    def _guided_logits(
        self,
        model: GPT,
        step: Step,
        seq_BL: torch.Tensor,
        key_groups: torch.Tensor,
        labels_in: torch.Tensor,
        index: int,
        num_steps: int,
    ) -> torch.Tensor:
        """(B, n_out, V) logits of one cached pass, CFG applied (the batch is doubled inside)."""
        ids, pos, rows, cols, mask, n_out = self._slots(model, step, seq_BL, key_groups)
        if self.sampling.guided:
            ids = torch.cat([ids, ids])
        run = model.prefill if step.cls else model.decode_step
        logits = run(ids, labels_in, pos, rows, cols, mask, n_out)
        if not self.sampling.guided:
            return logits
        cond, uncond = logits.chunk(2)
        return cfg_combine(cond, uncond, cfg_scale_at(self.sampling, index, num_steps))

    @torch.no_grad()
    def sample(
        self,
        model: GPT,
        labels_B: torch.Tensor,
        prefix_BP: torch.Tensor | None = None,
        snapshots: bool = False,
        return_logits: bool = False,
    ) -> SampleOutput:
        """Generate one image's tokens per label.

        Args:
            model: a GPT (eval mode).
            labels_B: class ids.
            prefix_BP: known leading tokens in sequence order (image extension / inpainting); in EAR mode P
                must end on a step boundary.
            snapshots: keep the raster token map after every pass (for a growth GIF).
            return_logits: keep the guided logits of every sampled position (tests, analysis).

        Returns:
            SampleOutput with (B, L) raster tokens.
        """
        device = model.output.weight.device
        cfg = self.sampling
        labels_B = labels_B.to(device)
        b, length = labels_B.shape[0], self.order.length
        seq_BL = torch.full((b, length), -1, dtype=torch.long, device=device)
        prefix_len = 0 if prefix_BP is None else prefix_BP.shape[1]
        if prefix_len:
            seq_BL[:, :prefix_len] = prefix_BP.to(device)
        steps = self.steps(model, prefix_len)
        key_groups = self._key_groups(model.config.mode)
        labels_in = self._labels_in(model, labels_B)
        gen = make_generator(cfg.seed, device)
        out = SampleOutput(seq_BL)
        logits_all = torch.zeros(b, length, model.config.vocab_size, device=device) if return_logits else None
        with model.kv_cache(labels_in.shape[0], length + 1):
            for i, step in enumerate(steps):
                logits = self._guided_logits(model, step, seq_BL, key_groups, labels_in, i, len(steps))
                pred = list(step.predicted)
                seq_BL[:, pred] = sample_tokens(logits, gen, cfg.temperature, cfg.top_k, cfg.top_p)
                if logits_all is not None:
                    logits_all[:, pred] = logits
                if snapshots:
                    out.snapshots.append(self.order.to_raster(seq_BL).clone())
        out.tokens_BL = self.order.to_raster(seq_BL)
        out.logits_BLV, out.passes = logits_all, len(steps)
        return out


@dataclass
class AdaptiveConfig:
    """Confidence-adaptive EAR passes (for models trained with randomised partitions).

    Each pass proposes a window of the next spiral positions, w = round(ratio * 2 * (sqrt(done) + 1))
    clamped to [min_tokens, max_tokens] (about `ratio` rings), samples them all, and keeps the longest
    prefix whose tokens all have probability >= threshold in every image of the batch (at least
    min_tokens). threshold 0 keeps whole windows (fewest passes); higher thresholds spend more passes
    where the model is unsure.
    """

    threshold: float = 0.3
    ratio: float = 1.0
    min_tokens: int = 1
    max_tokens: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"need 1 <= min_tokens <= max_tokens, got {self.min_tokens}, {self.max_tokens}")
        if self.ratio <= 0:
            raise ValueError(f"ratio must be > 0, got {self.ratio}")

    def window(self, done: int, length: int) -> int:
        w = round(self.ratio * 2 * (math.sqrt(done) + 1))
        return min(max(w, self.min_tokens), self.max_tokens, length - done)


@torch.no_grad()
def sample_adaptive(
    process: GenerationProcess,
    model: GPT,
    labels_B: torch.Tensor,
    adaptive: AdaptiveConfig,
    snapshots: bool = False,
) -> SampleOutput:
    """EAR sampling whose group sizes are decided on the fly from the model's confidence.

    Cache groups are assigned per pass: window of pass p = group p + 2 (class 0, never a prefix here);
    masks rejected at a pass are hidden again (group = infinity) until re-proposed.

    Returns:
        SampleOutput with (B, L) raster tokens; `passes` = forward passes used.
    """
    if model.config.mode != "next_any":
        raise ValueError("adaptive schedules need a next_any (EAR) model")
    cfg, device, length = process.sampling, model.output.weight.device, process.order.length
    labels_B = labels_B.to(device)
    seq_BL = torch.full((labels_B.shape[0], length), -1, dtype=torch.long, device=device)
    labels_in = process._labels_in(model, labels_B)
    hidden = length + 2
    key_groups = torch.full((length + 1,), hidden, dtype=torch.long)
    key_groups[0] = 0
    gen = make_generator(cfg.seed, device)
    out, prev, done, p = SampleOutput(seq_BL), 0, 0, 0
    with model.kv_cache(labels_in.shape[0], length + 1):
        while done < length:
            hi = done + adaptive.window(done, length)
            key_groups[1 + done :] = hidden
            key_groups[1 + done : 1 + hi] = p + 2
            step = Step(range(prev, done), range(done, hi), cls=p == 0)
            logits = process._guided_logits(model, step, seq_BL, key_groups, labels_in, 0, 1)
            tok_BW = sample_tokens(logits, gen, cfg.temperature, cfg.top_k, cfg.top_p)
            conf_BW = (logits.float() / cfg.temperature).softmax(-1).gather(-1, tok_BW[..., None])[..., 0]
            sure_W = (conf_BW >= adaptive.threshold).all(0).long().cumprod(0)
            keep = min(max(int(sure_W.sum()), adaptive.min_tokens), hi - done)
            seq_BL[:, done : done + keep] = tok_BW[:, :keep]
            prev, done, p = done, done + keep, p + 1
            if snapshots:
                out.snapshots.append(process.order.to_raster(seq_BL).clone())
    out.tokens_BL = process.order.to_raster(seq_BL)
    out.passes = p
    return out


@dataclass
class ARSampleConfig:
    """How `argen sample` draws tokens from a GPT/EAR model.

    order / schedule / grid: None = the model's own (config.order, config.schedule, config.grid). schedule:
        "sides" | "rings" | "tokens:K" | a number of passes (any-schedule EAR models) | a list of sizes.
    batch_size: images per forward batch (CFG doubles the rows).
    sampling: CFG scale, temperature, top-k, top-p, seed (batch i uses seed + i).
    adaptive: confidence-adaptive passes instead of a fixed schedule (EAR models trained with randomize).
    """

    order: str | None = None
    schedule: str | int | list[int] | None = None
    grid: int | None = None
    batch_size: int = 32
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    adaptive: AdaptiveConfig | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def generate(
    model: GPT, labels_N: torch.Tensor, cfg: ARSampleConfig, snapshots: bool = False
) -> SampleOutput:
    """Sample tokens for every label, in batches of `cfg.batch_size`.

    Returns:
        SampleOutput with (N, L) raster tokens (and per-pass snapshots concatenated over batches).
    """
    outs = []
    for i, labels_B in enumerate(labels_N.split(cfg.batch_size)):
        sampling = dataclasses.replace(cfg.sampling, seed=cfg.sampling.seed + i)
        proc = GenerationProcess.for_model(model, sampling, cfg.order, cfg.schedule, cfg.grid)
        if cfg.adaptive is None:
            outs.append(proc.sample(model, labels_B, snapshots=snapshots))
        else:
            outs.append(sample_adaptive(proc, model, labels_B, cfg.adaptive, snapshots=snapshots))
    # adaptive batches may differ in pass count: snapshots are kept per batch then
    same = len({len(o.snapshots) for o in outs}) == 1
    shots = (
        [torch.cat(s) for s in zip(*(o.snapshots for o in outs), strict=True)] if snapshots and same else []
    )
    passes = max(o.passes for o in outs)
    return SampleOutput(torch.cat([o.tokens_BL for o in outs]), shots, passes=passes)


def centre_prefix(order: GenerationOrder, centre_BKK: torch.Tensor) -> torch.Tensor:
    """Sequence-order prefix placing a K x K token crop on the first K*K cells of a spiral order.

    The first K*K spiral positions always cover a K x K square; it must also end on a step boundary.
    """
    k = centre_BKK.shape[-1]
    square_prefix(list(order.group_sizes), k)
    rows, cols = order.rows_L[: k * k], order.cols_L[: k * k]
    r0, c0 = int(rows.min()), int(cols.min())
    if int(rows.max()) - r0 != k - 1 or int(cols.max()) - c0 != k - 1:
        raise ValueError(f"the first {k * k} positions of order {order.name!r} do not form a {k}x{k} square")
    return centre_BKK[:, rows - r0, cols - c0]


def extend_from_centre(
    model: GPT,
    labels_B: torch.Tensor,
    centre_BKK: torch.Tensor,
    process: GenerationProcess,
    snapshots: bool = False,
) -> SampleOutput:
    """Image extension / centre-conditioned inpainting: keep a centre crop, continue the spiral outward.

    With `process.order.grid` larger than the model's training grid this extends the canvas (needs
    rope_mode "grid": relative phases of the crop are unchanged); with the same grid it fills the border.

    Returns:
        SampleOutput on the process's canvas (raster order); the centre tokens are the given ones.
    """
    if process.order.grid != model.config.grid and model.config.rope_mode != "grid":
        raise ValueError("extending beyond the training canvas needs a model with rope_mode='grid'")
    prefix = centre_prefix(process.order, centre_BKK)
    return process.sample(model, labels_B, prefix_BP=prefix, snapshots=snapshots)


def growth_frames(
    snapshots: list[torch.Tensor], decode: Callable[[torch.Tensor], torch.Tensor], grid: int
) -> list[torch.Tensor]:
    """Images of the canvas after each pass (progressive preview / growth GIF).

    Args:
        snapshots: (B, L) raster tokens per pass, -1 where not generated yet (`SampleOutput.snapshots`).
        decode: tokenizer decode, (B, n, n) codes -> (B, C, H, W) images in [0, 1].
        grid: n.

    Returns:
        One (B, C, H, W) image per pass; cells not generated yet are shown mid-grey.
    """
    frames = []
    for snap_BL in snapshots:
        img_BCHW = decode(snap_BL.clamp(min=0).view(-1, grid, grid))
        known = (snap_BL >= 0).view(-1, 1, grid, grid).to(img_BCHW.dtype)
        known = torch.nn.functional.interpolate(known, size=img_BCHW.shape[-2:], mode="nearest")
        frames.append(img_BCHW * known + 0.5 * (1 - known))
    return frames
