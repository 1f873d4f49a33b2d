"""Two-stage distillation of a dense VAR (frozen teacher) into an ActVAR student: task "distill" of the one
trainer (`argen.training.loop`), objective and stages here, model and data in `distill_data`.

Shape legend: B batch, L tokens over all scales, C width, V vocabulary, E experts, Cv VQVAE channels.

Stage 1 (backbone frozen): per block, on the teacher's own activations, the router learns the teacher's
per-expert output norms (soft cross-entropy), the gate regresses the teacher's residual-update norm
(standardised log norm per scale) and the adapter regresses the update itself, only where it is used.
Stage 2 (end to end, sparse forward): logit KL to the teacher + final-feature MSE + ground-truth CE + a
penalty pulling the soft gate / router occupancy toward the target budget (keep_ratio, experts_k).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import DataConfig, OptimConfig, TrainConfig, to_dict
from argen.training.objectives import TRAINER_KEYS, objective_options
from argen.training.optim import Stage


def _stage1_optim() -> OptimConfig:
    return OptimConfig(lr=3e-3, weight_decay=0.0, warmup_steps=0, schedule="constant")


def _stage2_optim() -> OptimConfig:
    return OptimConfig(lr=1e-4, weight_decay=0.0, warmup_steps=0, schedule="cosine")


@dataclass
class DistillObjective:
    """The distillation objective's options: `TrainConfig.objective` of task "distill" (unknown keys refused).

    source: "tokens" (data.root = multi-scale token .npz or store, needs the model's `vqvae`) or "random"
        (uniform codes and labels; without a vqvae the teacher-forcing features are Gaussian noise: for
        smoke tests).
    stage1_steps / stage1_optim: steps and optimizer of stage 1 (stage 2 takes the run's other steps and
        its `optim`); 0 skips stage 1.
    router_tau: temperature of the router target softmax(log(expert norm) / tau).
    balance_weight: optional Switch-style load-balance loss on the routers (stage 1 and 2).
    kl_weight / feature_weight / ce_weight / budget_weight / kl_temperature: stage-2 loss terms.
    label_dropout: fraction of labels replaced by the null class (both models see the same), for CFG; drawn
        per (seed, epoch, item), so it does not depend on the number of ranks.
    stage2_backbone: "all" trains every student parameter in stage 2; "sparse" only routers/gates/adapters.
    """

    source: str = "tokens"
    stage1_steps: int = 500
    stage1_optim: OptimConfig = field(default_factory=_stage1_optim)
    router_weight: float = 1.0
    gate_weight: float = 1.0
    adapter_weight: float = 1.0
    router_tau: float = 1.0
    balance_weight: float = 0.0
    kl_weight: float = 1.0
    feature_weight: float = 1.0
    ce_weight: float = 0.1
    budget_weight: float = 0.1
    kl_temperature: float = 1.0
    label_dropout: float = 0.1
    stage2_backbone: str = "all"

    def __post_init__(self) -> None:
        if self.source not in ("tokens", "random"):
            raise ValueError(f"source must be 'tokens' or 'random', got {self.source!r}")
        if self.stage1_steps < 0:
            raise ValueError("stage1_steps must be >= 0")
        if self.stage2_backbone not in ("all", "sparse"):
            raise ValueError(f"stage2_backbone must be 'all' or 'sparse', got {self.stage2_backbone!r}")
        if self.router_tau <= 0 or self.kl_temperature <= 0 or not 0 <= self.label_dropout < 1:
            raise ValueError("router_tau and kl_temperature must be > 0, label_dropout in [0, 1)")


def distill_options(opts: dict[str, Any]) -> DistillObjective:
    """The typed options of a loss call (the trainer's "step" and the stage's "stage" set aside)."""
    return objective_options(DistillObjective, opts, (*TRAINER_KEYS, "stage"))


@dataclass
class DistillConfig(DistillObjective):
    """One `argen distill` run: the objective's options plus the teacher, budget, data and run settings.

    teacher: dense VAR file: an argen model file (.safetensors + .json) or an official `var_d*.pth`.
    teacher_preset: VAR preset of an official .pth (e.g. "d16"); ignored for argen files.
    budget: ActVAR preset giving the sparsity budget; `actvar` overrides its fields (experts_k, keep_ratio,
        num_experts, gate_layers, adapter_rank, ...). The VAR part always comes from the teacher.
    vqvae: multi-scale VQVAE model file that turns codes into VAR's teacher-forcing input.
    stage2_steps / stage2_optim: steps and optimizer of stage 2 (0 skips it).
    strategy, precision, grad_accum, ema_decay, resume, tensorboard: as in `argen train` (TrainConfig).
    The run writes `out_dir/actvar.safetensors`, `metrics.jsonl` and resumable `checkpoints/`.
    """

    teacher: str = ""
    teacher_preset: str | None = None
    budget: str = "debug"
    actvar: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=lambda: DataConfig(source="tokens"))
    vqvae: str | None = None
    stage2_steps: int = 1000
    batch_size: int = 16
    stage2_optim: OptimConfig = field(default_factory=_stage2_optim)
    grad_accum: int = 1
    precision: str = "fp32"
    ema_decay: float = 0.0
    strategy: str = "none"
    resume: str = "auto"
    tensorboard: bool = False
    out_dir: str = "runs/distill"
    ckpt_every: int = 200
    keep_last: int = 2
    log_every: int = 10
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source == "tokens" and self.teacher and (self.vqvae is None or self.data.root is None):
            raise ValueError(
                "source=tokens needs data.root (token .npz from `argen tokenize`) and vqvae (msvq file)"
            )
        if self.stage2_steps < 0 or self.batch_size < 1:
            raise ValueError("stage1_steps/stage2_steps must be >= 0 and batch_size >= 1")

    def train_config(self) -> TrainConfig:
        """The same run as a TrainConfig of task "distill" (what `argen train distill` takes)."""
        names = {f.name for f in dataclasses.fields(DistillObjective)}
        objective = {k: v for k, v in to_dict(self).items() if k in names}
        return TrainConfig(
            task="distill",
            model={
                "teacher": self.teacher,
                "teacher_preset": self.teacher_preset,
                "budget": self.budget,
                "actvar": dict(self.actvar),
                "vqvae": self.vqvae,
            },
            objective=objective,
            data=self.data,
            optim=self.stage2_optim,
            steps=self.stage1_steps + self.stage2_steps,
            **{k: getattr(self, k) for k in _RUN_FIELDS},
        )


_RUN_FIELDS = ("batch_size", "grad_accum", "precision", "ema_decay", "strategy", "resume", "tensorboard")
_RUN_FIELDS += ("out_dir", "ckpt_every", "keep_last", "log_every", "seed", "device")


# ------------------------------------------------------------------------------------------- teacher
@torch.no_grad()
def teacher_signals(
    var: nn.Module, labels_B: torch.Tensor, var_input_BLCv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
    """The teacher's own forward, watched by hooks: logits and each block's signals.

    Returns:
        logits (B, L, V), last hidden state (B, L, C), and per block a dict with "h_attn" / "h_ffn" (the
        modulated attention / FFN inputs, (B, L, C): what `block.attn` / `block.ffn` receive), "update"
        (block output minus input, (B, L, C)) and "gamma" (gamma1 + gamma2, (B, 1, C): the scale of the
        skipped tokens' adapter).
    """
    signals: list[dict[str, torch.Tensor]] = [{} for _ in var.blocks]

    def keep(sig: dict, key: str):
        return lambda _m, args: sig.__setitem__(key, args[0])

    def update(sig: dict):
        return lambda _m, args, out: sig.update(update=out - args[0], out=out)

    handles = []
    for sig, block in zip(signals, var.blocks, strict=True):
        handles += [
            block.attn.register_forward_pre_hook(keep(sig, "h_attn")),
            block.ffn.register_forward_pre_hook(keep(sig, "h_ffn")),
            block.register_forward_hook(update(sig)),
        ]
    try:
        logits = var(labels_B, var_input_BLCv)
    finally:
        for handle in handles:
            handle.remove()
    for sig, mods in zip(signals, var.block_mods(var.class_emb(labels_B)), strict=True):
        sig["gamma"] = mods.gamma1 + mods.gamma2
    return logits, signals[-1]["out"], signals


# ------------------------------------------------------------------------------------------- losses
def _scale_mask(values: tuple, sizes: tuple[int, ...], pred, device: torch.device) -> torch.Tensor:
    flags = torch.tensor([bool(pred(v)) for v in values], device=device)
    return torch.repeat_interleave(flags, torch.tensor(sizes, device=device))


def _standardise_per_scale(t_BL: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
    parts = [
        p.sub(p.mean(1, keepdim=True)).div(p.std(1, keepdim=True).nan_to_num(1.0).clamp_min(1e-3))
        if p.shape[1] > 1
        else p.sub(p)
        for p in t_BL.split(list(sizes), dim=1)
    ]
    return torch.cat(parts, dim=1)


def balance_loss(logits_NE: torch.Tensor, k_N: torch.Tensor) -> torch.Tensor:
    """Switch-style load balance E * sum_e f_e * P_e (1 when uniform); f = top-k share, P = mean prob."""
    num = logits_NE.shape[-1]
    ranks_NE = logits_NE.detach().argsort(-1, descending=True).argsort(-1)
    f_E = (ranks_NE < k_N[:, None]).float().mean(0) / k_N.float().mean()
    return num * (f_E * logits_NE.softmax(-1).mean(0)).sum()


def stage1_losses(
    student: nn.Module, signals: list[dict[str, torch.Tensor]], cfg: DistillObjective
) -> tuple[torch.Tensor, dict[str, float]]:
    """Router / gate / adapter losses of every block on the teacher's activations (backbone untouched)."""
    acfg = student.config
    sizes = acfg.var.scale_sizes
    device = signals[0]["h_ffn"].device
    routed_L = _scale_mask(acfg.experts_k, sizes, lambda k: k < acfg.num_experts, device)
    gated_L = _scale_mask(acfg.keep_ratio, sizes, lambda r: r < 1.0, device)
    k_L = torch.repeat_interleave(
        torch.tensor(acfg.experts_k, device=device), torch.tensor(sizes, device=device)
    )
    terms = {"router": [], "gate": [], "adapter": [], "balance": []}
    for i, (block, sig) in enumerate(zip(student.var.blocks, signals, strict=True)):
        if routed_L.any():
            h_NC = sig["h_ffn"][:, routed_L].reshape(-1, acfg.var.dim)
            with torch.no_grad():
                target_NE = (block.ffn.expert_norms(h_NC).clamp_min(1e-8).log() / cfg.router_tau).softmax(-1)
            logits_NE = block.ffn.router_logits(h_NC)
            # KL(target || router): zero when the router ranks and weighs experts like the teacher's norms
            kl_N = (target_NE * (target_NE.clamp_min(1e-12).log() - logits_NE.log_softmax(-1))).sum(-1)
            terms["router"].append(kl_N.mean())
            k_N = k_L[routed_L].repeat(sig["h_ffn"].shape[0])
            terms["balance"].append(balance_loss(logits_NE, k_N))
        if str(i) in student.selectors and gated_L.any():
            sel = student.selectors[str(i)]
            target_BL = _standardise_per_scale(sig["update"].norm(dim=-1).clamp_min(1e-8).log(), sizes)
            terms["gate"].append(F.mse_loss(sel.score(sig["h_attn"])[:, gated_L], target_BL[:, gated_L]))
            upd = sig["update"][:, gated_L]
            recon = sel.reconstruct(sig["h_attn"][:, gated_L], sig["gamma"])
            terms["adapter"].append(F.mse_loss(recon, upd) / upd.square().mean().clamp_min(1e-12))
    means = {k: torch.stack(v).mean() if v else None for k, v in terms.items()}
    weights = {
        "router": cfg.router_weight,
        "gate": cfg.gate_weight,
        "adapter": cfg.adapter_weight,
        "balance": cfg.balance_weight,
    }
    if not any(v is not None and weights[k] > 0 for k, v in means.items()):
        raise ValueError("stage 1 has nothing to train: the budget keeps every expert and token")
    # terms weighted 0 are kept (times 0), so every trainable parameter takes part in each step (DDP)
    loss = torch.stack([weights[k] * v for k, v in means.items() if v is not None]).sum()
    metrics = {f"s1_{k}": float(v.detach()) for k, v in means.items() if v is not None}
    return loss, {"loss": float(loss.detach()), **metrics}


def kl_to_teacher(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Mean over positions of KL(teacher || student) at `temperature` (times T^2)."""
    t_log = (teacher_logits / temperature).log_softmax(-1)
    s_log = (student_logits / temperature).log_softmax(-1)
    return (t_log.exp() * (t_log - s_log)).sum(-1).mean() * temperature**2


def budget_penalty(trace: dict, num_experts: int) -> torch.Tensor:
    """Squared gap between soft occupancy and the budget: mean sigmoid(gate) vs rho per gated scale
    position, and sum_e sigmoid(router logit) vs k (as a fraction of E) per routed token."""
    terms = []
    for score_BL, rho_L in trace["gate"]:
        gated = rho_L < 1.0
        terms.append((torch.sigmoid(score_BL[:, gated]).mean(0) - rho_L[gated]).square().mean())
    for logits_BnE, k_Bn in trace["router"]:
        routed = k_Bn < num_experts
        if routed.any():
            occupancy = torch.sigmoid(logits_BnE[routed]).sum(-1)
            terms.append(((occupancy - k_Bn[routed]) / num_experts).square().mean())
    return torch.stack(terms).mean() if terms else torch.zeros(())


def stage2_losses(
    student: nn.Module,
    teacher_logits: torch.Tensor,
    teacher_hidden: torch.Tensor,
    labels_B: torch.Tensor,
    var_input_BLCv: torch.Tensor,
    codes_BL: torch.Tensor,
    cfg: DistillObjective,
) -> tuple[torch.Tensor, dict[str, float]]:
    """End-to-end sparse forward: KL + feature MSE + ground-truth CE + budget penalty."""
    trace: dict = {}
    logits = student(labels_B, var_input_BLCv, trace=trace)
    kl = kl_to_teacher(logits, teacher_logits, cfg.kl_temperature)
    feat = F.mse_loss(trace["hidden"], teacher_hidden) / teacher_hidden.square().mean().clamp_min(1e-12)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes_BL.reshape(-1))
    budget = budget_penalty(trace, student.config.num_experts).to(logits.device)
    loss = cfg.kl_weight * kl + cfg.feature_weight * feat + cfg.ce_weight * ce + cfg.budget_weight * budget
    if cfg.balance_weight > 0 and trace["router"]:
        bal = torch.stack(
            [balance_loss(lg.reshape(-1, lg.shape[-1]), k.reshape(-1)) for lg, k in trace["router"]]
        )
        loss = loss + cfg.balance_weight * bal.mean()
    return loss, {
        "loss": float(loss.detach()),
        "kl": float(kl.detach()),
        "feature": float(feat.detach()),
        "ce": float(ce.detach()),
        "budget": float(budget.detach()),
    }


# ----------------------------------------------------------------------------------- model and stages
class Distiller(nn.Module):
    """What task "distill" trains: the ActVAR student (`.student`, the only part trained and exported) with
    the frozen teacher VAR and multi-scale VQVAE beside it, outside the module tree (so they are not in
    checkpoints, not wrapped by DDP/FSDP2, but moved with the module).

    `forward(batch, opts)` computes the stage's whole loss, so DDP sees one forward per micro-step and
    FSDP2 (which shards the root only: stage 1 calls the student's routers and gates directly) gathers
    the student's parameters once.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, vqvae: nn.Module | None = None) -> None:
        super().__init__()
        self.student = student
        self.config = student.config
        self.frozen = (teacher.eval().requires_grad_(False), vqvae)  # a tuple: not registered

    def _apply(self, fn, recurse=True):  # .to(device) etc. reach the frozen models too
        for m in self.frozen:
            if m is not None:
                m._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def export_model(self) -> nn.Module:
        return self.student

    def inputs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(codes_BL, labels_B[, var_input]) -> labels, teacher-forcing input (B, L - first, Cv), codes."""
        codes_BL, labels_B, *given = batch
        if given:
            return labels_B, given[0], codes_BL
        vqvae, sizes = self.frozen[1], self.config.var.scale_sizes
        if vqvae is None:
            raise ValueError("distillation on token codes needs the model's vqvae (an msvq model file)")
        with torch.no_grad():
            var_input = vqvae.idxBl_to_var_input(list(codes_BL.split(sizes, dim=1)))
        return labels_B, var_input, codes_BL

    def forward(self, batch: Any, opts: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = distill_options(opts)
        labels, var_input, codes = self.inputs(batch)
        t_logits, t_hidden, signals = teacher_signals(self.frozen[0], labels, var_input)
        if opts["stage"] == 2:
            return stage2_losses(self.student, t_logits, t_hidden, labels, var_input, codes, cfg)
        loss, metrics = stage1_losses(self.student, signals, cfg)
        with torch.no_grad():  # the quantity stage 2 optimises, to follow progress through both stages
            training = self.student.training
            logits = self.student.eval()(labels, var_input)
            metrics["kl"] = float(kl_to_teacher(logits, t_logits, cfg.kl_temperature))
            self.student.train(training)
        return loss, metrics


def distill_loss(model: Any, batch: Any, opts: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of task "distill": the `Distiller`'s forward (through DDP when wrapped)."""
    return model(batch, opts)


def _sparse_part(name: str) -> bool:
    return ".router." in name or name.startswith("student.selectors.")


def distill_stages(cfg: TrainConfig) -> tuple[Stage, Stage]:
    """Stage 1: routers, gates and adapters on `objective.stage1_optim`; stage 2: the rest of the steps
    on `optim`, every student parameter (or the sparse parts only, `stage2_backbone="sparse"`)."""
    opts = distill_options(cfg.objective)
    if opts.stage1_steps > cfg.steps:
        raise ValueError(f"objective.stage1_steps={opts.stage1_steps} exceeds steps={cfg.steps}")
    stage2 = _sparse_part if opts.stage2_backbone == "sparse" else (lambda name: True)
    return (
        Stage(opts.stage1_steps, opts.stage1_optim, _sparse_part, {"stage": 1}),
        Stage(cfg.steps - opts.stage1_steps, cfg.optim, stage2, {"stage": 2}),
    )
