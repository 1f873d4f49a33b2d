"""KV-cached autoregressive sampling: raster next-token (LlamaGen) and next-any-tokens groups (EAR).

Shape legend: B batch, L sequence positions (n*n), N slots fed in one pass, S visible cache positions,
V vocabulary, K centre crop side.

Cache layout: position 0 holds the class token, position 1 + j the token at sequence position j. In EAR
mode a [MASK] slot predicting position j is written at 1 + j and overwritten by the real token one pass
later, so a mask over the cache is plain block-causal over step ids.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from argen.models.gpt import CLS_ID, GPT, MASK_ID
from argen.nn.masks import group_mask
from argen.nn.rope import CLS_ROW
from argen.orders import GenerationOrder, Step, build_order, square_prefix, step_plan
from argen.sampling.logits import SamplingConfig, cfg_combine, cfg_scale_at, sample_keys, sample_tokens


@dataclass
class SampleOutput:
    """tokens_BL: raster-ordered tokens. snapshots: (B, L) raster tokens after each pass (-1 = not yet
    generated), when asked. logits_BLV: guided logits per sequence position, when asked. passes: forward
    passes run. passes_each / shapes_each: adaptive schedules only, per image the passes and each pass's
    (slots fed, visible cache width, positions predicted), from which `models.flops` counts what ran."""

    tokens_BL: torch.Tensor
    snapshots: list[torch.Tensor] = field(default_factory=list)
    logits_BLV: torch.Tensor | None = None
    passes: int = 0
    passes_each: list[int] = field(default_factory=list)
    shapes_each: list[list[tuple[int, int, int]]] = field(default_factory=list)


_COMPILED: weakref.WeakKeyDictionary[GPT, dict[str, Callable]] = weakref.WeakKeyDictionary()


def _compiled_step(model: GPT, backend: str, mode: str | None = None) -> Callable[..., torch.Tensor]:
    """`model.decode_step` under torch.compile, made once per model, backend and mode (prefill is the same
    computation)."""
    per_backend = _COMPILED.setdefault(model, {})
    key = f"{backend}/{mode}"
    if key not in per_backend:
        per_backend[key] = torch.compile(model.decode_step, backend=backend, mode=mode)
    return per_backend[key]


@dataclass
class _Pass:
    """One cached pass, built before sampling starts: fed_F / pred_P sequence positions read / predicted,
    ids_N slot ids (CLS_ID, MASK_ID, or -1 where the fed token goes), pos_N cache positions, rows_N /
    cols_N RoPE cells, mask_NS over the whole cache, n_out logits returned, cls (the class slot leads),
    span: pos_N as a slice when the positions are a run (always, for the orders here: a plain cache copy)."""

    fed_F: torch.Tensor
    pred_P: torch.Tensor
    ids_N: torch.Tensor
    pos_N: torch.Tensor
    rows_N: torch.Tensor
    cols_N: torch.Tensor
    mask_NS: torch.Tensor
    n_out: int
    cls: bool
    span: slice | None = None


class GenerationProcess:
    """Order + schedule + sampling rule, apart from the network that scores tokens.

    Args:
        order: which cell each sequence position holds and how positions group into passes.
        sampling: CFG scale/schedule, temperature, top-k, top-p and seed.
        compile: run the cached pass through `torch.compile` (inductor), its masks as wide as the cache so
            the passes share graphs (pass sizes that differ are one dynamic-shape graph after a recompile).
            Measured on the shipped EAR, one shared CPU thread: 1.25x faster per batch after a 224 s
            compile, so off by default. compile_backend: torch.compile backend ("eager" checks capture).
        compile_mode: torch.compile mode; "reduce-overhead" replays each pass as a CUDA graph on a GPU, where
            a cached pass is bound by kernel launches (see docs/05, GPU).
    """

    def __init__(
        self,
        order: GenerationOrder,
        sampling: SamplingConfig | None = None,
        compile: bool = False,
        compile_backend: str = "inductor",
        compile_mode: str | None = None,
    ) -> None:
        self.order = order
        self.sampling = sampling or SamplingConfig()
        self.compile, self.compile_backend, self.compile_mode = compile, compile_backend, compile_mode

    @classmethod
    def for_model(
        cls,
        model: GPT,
        sampling: SamplingConfig | None = None,
        order: str | None = None,
        schedule: str | int | list[int] | None = None,
        grid: int | None = None,
        compile: bool = False,
    ) -> GenerationProcess:
        """The process a model was trained for (its config's order/schedule/grid), with optional changes."""
        cfg = model.config
        sched = cfg.schedule if schedule is None else schedule
        return cls(build_order(order or cfg.order, grid or cfg.grid, sched), sampling, compile)

    def steps(self, model: GPT, prefix_len: int = 0) -> list[Step]:
        return step_plan(self.order, model.config.mode, prefix_len)

    def _key_groups(self, mode: str) -> torch.Tensor:
        """Step id of every cache position (class token = 0)."""
        if mode == "next_token":
            return torch.arange(self.order.length + 1)
        return torch.cat([torch.zeros(1, dtype=torch.long), self.order.group_id_L + 1])

    def _plan(self, model: GPT, step: Step, key_groups: torch.Tensor, device: torch.device) -> _Pass:
        """The token-independent tensors of one pass, built on the host once and moved to `device`."""
        rows_L, cols_L = model.cells(self.order)
        fed = torch.tensor(list(step.fed), dtype=torch.long)
        pred = torch.tensor(list(step.predicted), dtype=torch.long)
        cls = torch.tensor([CLS_ROW]) if step.cls else torch.zeros(0, dtype=torch.long)
        slot_ids = [torch.full((len(cls),), CLS_ID), torch.full((len(fed),), -1)]  # -1: read from seq
        pos, rows, cols = [torch.zeros_like(cls), fed + 1], [cls, rows_L[fed]], [cls, cols_L[fed]]
        if model.config.mode == "next_any":
            slot_ids.append(torch.full((len(pred),), MASK_ID))
            pos, rows, cols = [*pos, pred + 1], [*rows, rows_L[pred]], [*cols, cols_L[pred]]
        pos_N = torch.cat(pos)
        # eager: keys up to the last one written (less attention work); compiled: the whole cache, so every
        # pass has one key width and one graph serves them all
        width = len(key_groups) if self.compile else int(pos_N.max()) + 1
        mask_NS = group_mask(key_groups[pos_N], key_groups[:width])
        n_out = len(pred) if model.config.mode == "next_any" else 1
        tensors = (fed, pred, torch.cat(slot_ids), pos_N, torch.cat(rows), torch.cat(cols), mask_NS)
        first = int(pos_N[0]) if len(pos_N) else 0
        run = torch.equal(pos_N, torch.arange(first, first + len(pos_N)))
        span = slice(first, first + len(pos_N)) if run else None
        return _Pass(*(t.to(device) for t in tensors), n_out=n_out, cls=step.cls, span=span)

    def _labels_in(self, model: GPT, labels_B: torch.Tensor) -> torch.Tensor:
        """Conditional rows, then (with CFG) the same number of null-class rows."""
        if not self.sampling.guided:
            return labels_B
        return torch.cat([labels_B, torch.full_like(labels_B, model.config.num_classes)])

    def _guided_logits(
        self,
        model: GPT,
        plan: _Pass,
        seq_BL: torch.Tensor,
        labels_in: torch.Tensor,
        index: int,
        num_steps: int,
    ) -> torch.Tensor:
        """(B, n_out, V) logits of one cached pass, CFG applied (the batch is doubled inside)."""
        ids = plan.ids_N.expand(seq_BL.shape[0], -1).clone()
        ids[:, plan.cls : plan.cls + len(plan.fed_F)] = seq_BL[:, plan.fed_F]
        if self.sampling.guided:
            ids = torch.cat([ids, ids])
        if self.compile:
            run = _compiled_step(model, self.compile_backend, self.compile_mode)
        else:
            run = model.prefill if plan.cls else model.decode_step
        # compiled: positions as a tensor, so the passes share a graph (a slice would be a constant)
        pos = plan.pos_N if self.compile or plan.span is None else plan.span
        logits = run(ids, labels_in, pos, plan.rows_N, plan.cols_N, plan.mask_NS, plan.n_out)
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
        keys_B: torch.Tensor | None = None,
        on_pass: Callable[[int, int, torch.Tensor], None] | None = None,
    ) -> SampleOutput:
        """Generate one image's tokens per label.

        Args:
            model: a GPT (eval mode).
            labels_B: class ids.
            prefix_BP: known leading tokens in sequence order (image extension / inpainting); in EAR mode P
                must end on a step boundary.
            snapshots: keep the raster token map after every pass (for a growth GIF).
            return_logits: keep the guided logits of every sampled position (tests, analysis).
            keys_B: per-sample random streams (`sample_keys`); default: samples 0..B-1 of `sampling.seed`.
            on_pass: called after each pass with (pass index, number of passes, (B, L) raster tokens so far,
                -1 where not generated yet), while sampling (a server streams the growth from it).

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
        keys_B = sample_keys(cfg.seed, range(b), device) if keys_B is None else keys_B.to(device)
        out = SampleOutput(seq_BL)
        logits_all = torch.zeros(b, length, model.config.vocab_size, device=device) if return_logits else None
        plans = [self._plan(model, step, key_groups, device) for step in steps]  # once per call, on device
        with model.kv_cache(labels_in.shape[0], length + 1):
            for i, plan in enumerate(plans):
                logits = self._guided_logits(model, plan, seq_BL, labels_in, i, len(plans))
                # counters = the sequence position: schedules share their noise
                seq_BL[:, plan.pred_P] = sample_tokens(
                    logits, keys_B, plan.pred_P, cfg.temperature, cfg.top_k, cfg.top_p
                )
                if logits_all is not None:
                    logits_all[:, plan.pred_P] = logits
                if snapshots:
                    out.snapshots.append(self.order.to_raster(seq_BL).clone())
                if on_pass is not None:
                    on_pass(i, len(plans), self.order.to_raster(seq_BL))
        out.tokens_BL = self.order.to_raster(seq_BL)
        out.logits_BLV, out.passes = logits_all, len(steps)
        return out


@dataclass
class AdaptiveConfig:
    """Confidence-adaptive EAR passes (for models trained with randomised partitions), decided per image.

    Each pass proposes a window of the next spiral positions, w = round(ratio * 2 * (sqrt(done) + 1))
    clamped to [min_tokens, max_tokens] (about `ratio` ring sides; ratio 1 proposes roughly what the fixed
    "sides" schedule takes), samples them all, and keeps the longest prefix whose sampled tokens have a mean
    probability >= threshold, but never less than `min_keep` of the window. The window is large, the floor
    bounds the pass count, and confident regions (the background) go through in one pass. A mean rather than
    every token: one unsure token in a confident ring side would otherwise stop the prefix (measured on the
    shipped any-schedule EAR, 20 images: every-token prefix 17.3 passes at threshold 0.5, mean 11.9).
    threshold 0 keeps whole windows (fewest passes); threshold > 1 keeps only the floor.
    """

    threshold: float = 0.5
    ratio: float = 2.0
    min_keep: float = 0.5
    min_tokens: int = 1
    max_tokens: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"need 1 <= min_tokens <= max_tokens, got {self.min_tokens}, {self.max_tokens}")
        if self.ratio <= 0:
            raise ValueError(f"ratio must be > 0, got {self.ratio}")
        if not 0 < self.min_keep <= 1:
            raise ValueError(f"min_keep must be in (0, 1], got {self.min_keep}")
        if not self.threshold >= 0:
            raise ValueError(f"the adaptive threshold is a probability (>= 0), got {self.threshold}")

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
    keys_B: torch.Tensor | None = None,
) -> SampleOutput:
    """EAR sampling whose group sizes are decided on the fly from the model's confidence, per image.

    Each image runs on its own (its schedule is its own, so the result does not depend on the batch); this
    is a latency tool: for throughput use a fixed pass count. Snapshots (first image only) and `passes`
    (the mean over images, rounded up) describe what ran.
    """
    if model.config.mode != "next_any":
        raise ValueError("adaptive schedules need a next_any (EAR) model")
    device = model.output.weight.device
    b = labels_B.shape[0]
    keys_B = sample_keys(process.sampling.seed, range(b), device) if keys_B is None else keys_B.to(device)
    outs = [
        _adaptive_one(process, model, labels_B[i : i + 1], adaptive, snapshots and i == 0, keys_B[i : i + 1])
        for i in range(b)
    ]
    out = SampleOutput(torch.cat([o.tokens_BL for o in outs]), outs[0].snapshots)
    out.passes = -(-sum(o.passes for o in outs) // b)
    out.passes_each = [o.passes for o in outs]
    out.shapes_each = [o.shapes_each[0] for o in outs]
    return out


def _adaptive_one(
    process: GenerationProcess,
    model: GPT,
    labels_1: torch.Tensor,
    adaptive: AdaptiveConfig,
    snapshots: bool,
    keys_1: torch.Tensor,
) -> SampleOutput:
    """One image: cache groups are assigned per pass (window of pass p = group p + 2, class 0); masks
    rejected at a pass are hidden again (group = infinity) until re-proposed with a fresh draw."""
    cfg, device, length = process.sampling, model.output.weight.device, process.order.length
    labels_1 = labels_1.to(device)
    seq_1L = torch.full((1, length), -1, dtype=torch.long, device=device)
    labels_in = process._labels_in(model, labels_1)
    hidden = length + 2
    key_groups = torch.full((length + 1,), hidden, dtype=torch.long)
    key_groups[0] = 0
    tries_L = torch.zeros(length, dtype=torch.long)  # draws per position so far: a redraw is a new counter
    out, prev, done, p, shapes = SampleOutput(seq_1L), 0, 0, 0, []
    with model.kv_cache(labels_in.shape[0], length + 1):
        while done < length:
            w = adaptive.window(done, length)
            hi = done + w
            key_groups[1 + done :] = hidden
            key_groups[1 + done : 1 + hi] = p + 2
            plan = process._plan(
                model, Step(range(prev, done), range(done, hi), cls=p == 0), key_groups, device
            )
            logits = process._guided_logits(model, plan, seq_1L, labels_in, 0, 1)
            pos_W = torch.arange(done, hi)
            counters_W = pos_W + length * tries_L[done:hi]
            tries_L[done:hi] += 1
            tok_1W = sample_tokens(logits, keys_1, counters_W, cfg.temperature, cfg.top_k, cfg.top_p)
            conf_W = (logits.float() / cfg.temperature).softmax(-1).gather(-1, tok_1W[..., None])[0, :, 0]
            mean_W = conf_W.cumsum(0) / torch.arange(1, w + 1, device=conf_W.device)
            ok = (mean_W >= adaptive.threshold).nonzero()
            sure = int(ok[-1]) + 1 if len(ok) else 0  # the longest prefix of mean confidence >= threshold
            keep = min(max(sure, math.ceil(adaptive.min_keep * w), adaptive.min_tokens), w)
            seq_1L[:, done : done + keep] = tok_1W[:, :keep]
            shapes.append((done - prev + int(p == 0) + w, 1 + hi, w))
            prev, done, p = done, done + keep, p + 1
            if snapshots:
                out.snapshots.append(process.order.to_raster(seq_1L).clone())
    out.tokens_BL = process.order.to_raster(seq_1L)
    out.passes, out.shapes_each = p, [shapes]
    return out


@dataclass
class ARSampleConfig:
    """How `argen sample` draws tokens from a GPT/EAR model.

    order / schedule / grid: None = the model's own (config.order, config.schedule, config.grid). schedule:
        "sides" | "rings" | "tokens:K" | a number of passes (any-schedule EAR models) | a list of sizes.
    batch_size: images per forward batch (CFG doubles the rows).
    sampling: CFG scale, temperature, top-k, top-p, seed (sample i draws from `sample_keys(seed, [i])`).
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
    model: GPT,
    labels_N: torch.Tensor,
    cfg: ARSampleConfig,
    snapshots: bool = False,
    indices_N: torch.Tensor | None = None,
) -> SampleOutput:
    """Sample tokens for every label, in batches of `cfg.batch_size`.

    Sample n draws from `sample_keys(cfg.sampling.seed, indices_N[n])` (default indices 0..N-1), so the
    result does not depend on the batch size.

    Returns:
        SampleOutput with (N, L) raster tokens, snapshots of the first batch, and the passes run (the most
        over batches; adaptive: the mean over images, rounded up).
    """
    indices_N = torch.arange(len(labels_N)) if indices_N is None else indices_N
    keys_N = sample_keys(cfg.sampling.seed, indices_N)
    proc = GenerationProcess.for_model(model, cfg.sampling, cfg.order, cfg.schedule, cfg.grid)
    outs = []
    batches = zip(labels_N.split(cfg.batch_size), keys_N.split(cfg.batch_size), strict=True)
    for i, (labels_B, keys_B) in enumerate(batches):
        shots = snapshots and i == 0
        if cfg.adaptive is None:
            outs.append(proc.sample(model, labels_B, snapshots=shots, keys_B=keys_B))
        else:
            outs.append(sample_adaptive(proc, model, labels_B, cfg.adaptive, snapshots=shots, keys_B=keys_B))
    out = SampleOutput(torch.cat([o.tokens_BL for o in outs]), outs[0].snapshots)
    if cfg.adaptive is None:
        out.passes = max(o.passes for o in outs)
    else:
        each = [p for o in outs for p in o.passes_each]
        out.passes, out.passes_each = -(-sum(each) // len(each)), each
        out.shapes_each = [s for o in outs for s in o.shapes_each]
    return out


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
