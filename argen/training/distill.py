"""Two-stage distillation of a dense VAR (frozen teacher) into an ActVAR student.

Shape legend: B batch, L tokens over all scales, C width, V vocabulary, E experts, Cv VQVAE channels.

Stage 1 (backbone frozen): per block, on the teacher's own activations, the router learns the teacher's
per-expert output norms (soft cross-entropy), the gate regresses the teacher's residual-update norm
(standardised log norm per scale) and the adapter regresses the update itself, only where it is used.
Stage 2 (end to end, sparse forward): logit KL to the teacher + final-feature MSE + ground-truth CE + a
penalty pulling the soft gate / router occupancy toward the target budget (keep_ratio, experts_k).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from argen.config import DataConfig, OptimConfig, to_dict


def _stage1_optim() -> OptimConfig:
    return OptimConfig(lr=3e-3, weight_decay=0.0, warmup_steps=0, schedule="constant")


def _stage2_optim() -> OptimConfig:
    return OptimConfig(lr=1e-4, weight_decay=0.0, warmup_steps=0, schedule="cosine")


@dataclass
class DistillConfig:
    """One distillation run (`argen distill`).

    teacher: dense VAR file: an argen model file (.safetensors + .json) or an official `var_d*.pth`.
    teacher_preset: VAR preset of an official .pth (e.g. "d16"); ignored for argen files.
    budget: ActVAR preset giving the sparsity budget; `actvar` overrides its fields (experts_k, keep_ratio,
        num_experts, gate_layers, adapter_rank, ...). The VAR part always comes from the teacher.
    source: "tokens" (data.root = multi-scale token .npz, needs `vqvae`) or "random" (uniform codes and
        labels; without `vqvae` the teacher-forcing features are Gaussian noise: smoke tests only).
    vqvae: multi-scale VQVAE model file that turns codes into VAR's teacher-forcing input.
    stage1_steps / stage2_steps: optimizer steps of each stage (0 skips a stage).
    router_tau: temperature of the router target softmax(log(expert norm) / tau).
    balance_weight: optional Switch-style load-balance loss on the routers (stage 1 and 2).
    kl_weight / feature_weight / ce_weight / budget_weight / kl_temperature: stage-2 loss terms.
    label_dropout: fraction of labels replaced by the null class (both models see the same), for CFG.
    stage2_backbone: "all" trains every student parameter in stage 2; "sparse" only routers/gates/adapters.
    """

    teacher: str = ""
    teacher_preset: str | None = None
    budget: str = "debug"
    actvar: dict[str, Any] = field(default_factory=dict)
    source: str = "tokens"
    data: DataConfig = field(default_factory=lambda: DataConfig(source="tokens"))
    vqvae: str | None = None
    stage1_steps: int = 500
    stage2_steps: int = 1000
    batch_size: int = 16
    stage1_optim: OptimConfig = field(default_factory=_stage1_optim)
    stage2_optim: OptimConfig = field(default_factory=_stage2_optim)
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
    out_dir: str = "runs/distill"
    ckpt_every: int = 200
    keep_last: int = 2
    log_every: int = 10
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.source not in ("tokens", "random"):
            raise ValueError(f"source must be 'tokens' or 'random', got {self.source!r}")
        if self.source == "tokens" and self.teacher and (self.vqvae is None or self.data.root is None):
            raise ValueError(
                "source=tokens needs data.root (token .npz from `argen tokenize`) and vqvae (msvq file)"
            )
        if self.stage1_steps < 0 or self.stage2_steps < 0 or self.batch_size < 1:
            raise ValueError("stage1_steps/stage2_steps must be >= 0 and batch_size >= 1")
        if self.stage2_backbone not in ("all", "sparse"):
            raise ValueError(f"stage2_backbone must be 'all' or 'sparse', got {self.stage2_backbone!r}")
        if self.router_tau <= 0 or self.kl_temperature <= 0 or not 0 <= self.label_dropout < 1:
            raise ValueError("router_tau and kl_temperature must be > 0, label_dropout in [0, 1)")


# ------------------------------------------------------------------------------------------- teacher
@torch.no_grad()
def teacher_signals(
    var: nn.Module, labels_B: torch.Tensor, var_input_BLCv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Dense VAR forward that also returns each block's signals.

    Returns:
        logits (B, L, V), last hidden state (B, L, C), and per block a dict with "h_attn" / "h_ffn" (the
        modulated attention / FFN inputs, (B, L, C)), "update" (block output minus input, (B, L, C)) and
        "gamma" (gamma1 + gamma2, (B, 1, C): the scale of the skipped tokens' adapter).
        The loop mirrors `VAR.forward` (drop path is a training-only identity at eval).
    """
    cfg = var.config
    length = cfg.scale_sizes[0] + var_input_BLCv.shape[1]
    cond_BD = var.class_emb(labels_B)
    lvl_pos_1LC = var.lvl_pos()
    x_BLC = torch.cat(
        (
            var.first_scale_input(cond_BD, lvl_pos_1LC),
            var.word_embed(var_input_BLCv.to(var.word_embed.weight.dtype))
            + lvl_pos_1LC[:, cfg.scale_sizes[0] : length],
        ),
        1,
    )
    mask_LL = var.block_causal_mask(length, x_BLC.device)
    signals = []
    for block, mods in zip(var.blocks, var.block_mods(cond_BD), strict=True):
        gamma1, gamma2, scale1, scale2, shift1, shift2 = mods
        x_in = x_BLC
        h_attn = block.ln_wo_grad(x_BLC).mul(scale1.add(1)).add(shift1)
        x_BLC = x_BLC + block.attn_branch(x_BLC, mods, mask_LL)
        h_ffn = block.ln_wo_grad(x_BLC).mul(scale2.add(1)).add(shift2)
        x_BLC = x_BLC + block.ffn_branch(x_BLC, mods)
        signals.append({"h_attn": h_attn, "h_ffn": h_ffn, "update": x_BLC - x_in, "gamma": gamma1 + gamma2})
    return var.logits(x_BLC, cond_BD), x_BLC, signals


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
    student: nn.Module, signals: list[dict[str, torch.Tensor]], cfg: DistillConfig
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
    used = [weights[k] * v for k, v in means.items() if v is not None and weights[k] > 0]
    if not used:
        raise ValueError("stage 1 has nothing to train: the budget keeps every expert and token")
    loss = torch.stack(used).sum()
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
    cfg: DistillConfig,
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


# ------------------------------------------------------------------------------------------- setup
def load_teacher(cfg: DistillConfig, device: torch.device) -> nn.Module:
    """The frozen dense VAR: an argen model file, or an official .pth with `teacher_preset`."""
    from argen.models.checkpoints import load_model
    from argen.models.var import load_official_var, var_config

    path = Path(cfg.teacher)
    if path.suffix in (".pth", ".pt"):
        if not cfg.teacher_preset:
            raise ValueError(
                f"{path} is an official checkpoint: set teacher_preset (e.g. d16) to build its VAR"
            )
        var = load_official_var(path, var_config(cfg.teacher_preset), device)
    else:
        var = load_model(path, device=device)
        if getattr(var, "kind", None) != "var":
            raise ValueError(
                f"{path} holds a {getattr(var, 'kind', '?')!r} model; the teacher must be a dense VAR"
            )
    return var.eval().requires_grad_(False)


def build_student(teacher: nn.Module, cfg: DistillConfig) -> nn.Module:
    """ActVAR.from_dense(teacher) at the budget preset `cfg.budget` with `cfg.actvar` overrides."""
    from argen.models.actvar import ActVAR, actvar_config

    return ActVAR.from_dense(teacher, actvar_config(cfg.budget, var=teacher.config, **cfg.actvar))


class StepBatches:
    """Batch of step s drawn from a generator seeded by (seed, s): resuming needs no loader state.

    Returns (labels_B with label dropout, var_input (B, L - first, Cv), codes (B, L)) on the device.
    """

    def __init__(self, cfg: DistillConfig, var_cfg: Any, device: torch.device) -> None:
        from argen.models.checkpoints import load_model

        self.cfg, self.var_cfg, self.device = cfg, var_cfg, device
        self.dataset = None
        if cfg.source == "tokens":
            from argen.data import TokenDataset

            self.dataset = TokenDataset(cfg.data.root)
            if self.dataset.codes_NL.shape[1] != var_cfg.seq_len:
                raise ValueError(
                    f"{cfg.data.root}: codes have {self.dataset.codes_NL.shape[1]} positions, the "
                    f"teacher expects {var_cfg.seq_len} (all scales of {var_cfg.patch_nums})"
                )
        vqvae = load_model(cfg.vqvae, device=device, expect=("msvq",)) if cfg.vqvae else None
        self.vqvae = vqvae.requires_grad_(False) if vqvae is not None else None

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, vc, batch = self.cfg, self.var_cfg, self.cfg.batch_size
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        if self.dataset is not None:
            idx = torch.randint(len(self.dataset), (batch,), generator=g)
            codes, labels = self.dataset.codes_NL[idx], self.dataset.labels_N[idx]
        else:
            codes = torch.randint(vc.vocab_size, (batch, vc.seq_len), generator=g)
            labels = torch.randint(vc.num_classes, (batch,), generator=g)
        drop = torch.rand(batch, generator=g) < cfg.label_dropout
        labels = torch.where(drop, torch.full_like(labels, vc.num_classes), labels).to(self.device)
        codes = codes.to(self.device)
        if self.vqvae is not None:
            with torch.no_grad():
                var_input = self.vqvae.idxBl_to_var_input(list(codes.split(vc.scale_sizes, dim=1)))
        else:
            var_input = torch.randn(batch, vc.seq_len - vc.scale_sizes[0], vc.vae_channels, generator=g)
        return labels, var_input.to(self.device), codes


def _stage_setup(student: nn.Module, cfg: DistillConfig, stage: int) -> tuple[Any, Any]:
    """Freeze what the stage does not train; fresh AdamW + schedule over the stage's trainable params."""
    from argen.training.optim import build_optimizer, build_scheduler

    sparse_only = stage == 1 or cfg.stage2_backbone == "sparse"
    for name, p in student.named_parameters():
        p.requires_grad_(not sparse_only or ".router." in name or name.startswith("selectors."))
    optim_cfg = cfg.stage1_optim if stage == 1 else cfg.stage2_optim
    opt = build_optimizer(student, optim_cfg)
    return opt, build_scheduler(opt, optim_cfg, cfg.stage1_steps if stage == 1 else cfg.stage2_steps)


# --------------------------------------------------------------------------------------------- loop
def _train_step(
    student: nn.Module, teacher: nn.Module, batch: tuple, cfg: DistillConfig, stage: int, opt: Any, sched: Any
) -> dict[str, float]:
    labels, var_input, codes = batch
    t_logits, t_hidden, signals = teacher_signals(teacher, labels, var_input)
    student.train()
    if stage == 1:
        loss, metrics = stage1_losses(student, signals, cfg)
    else:
        loss, metrics = stage2_losses(student, t_logits, t_hidden, labels, var_input, codes, cfg)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    optim_cfg = cfg.stage1_optim if stage == 1 else cfg.stage2_optim
    if optim_cfg.grad_clip > 0:
        params = [p for p in student.parameters() if p.requires_grad]
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, optim_cfg.grad_clip))
    opt.step()
    sched.step()
    if stage == 1:  # the quantity stage 2 optimises, to follow progress through both stages
        with torch.no_grad():
            metrics["kl"] = float(
                kl_to_teacher(student.eval()(labels, var_input), t_logits, cfg.kl_temperature)
            )
    return metrics


def _resume(student: nn.Module, opt: Any, sched: Any, state: Any, stage: int, source: str) -> None:
    """Full state when the checkpoint is from this stage; model weights only at a stage boundary."""
    from argen.training.checkpoint import apply_training_state, check_shapes

    if state.config.get("stage") == stage:
        apply_training_state(state, student, opt, sched, None, source)
    else:
        check_shapes(student, state.model, source)
        student.load_state_dict(state.model, strict=True)


def _save(
    ckpt_dir: Path, student: nn.Module, opt: Any, sched: Any, step: int, config: dict, keep: int
) -> None:
    from argen.training.checkpoint import gather_training_state, save_checkpoint

    state = gather_training_state(student, opt, sched, None, step, config)
    if state is not None:
        save_checkpoint(ckpt_dir, state, keep_last=keep)


def distill(cfg: DistillConfig) -> Path:
    """Run (or resume) both distillation stages; returns the ActVAR model file `out_dir/actvar.safetensors`.

    Writes `out_dir/metrics.jsonl` (one JSON line per logged step: stage, lr and every loss term, "kl" =
    KL(teacher || sparse student) on the step's batch) and resumable checkpoints under `out_dir/checkpoints`.
    """
    from tqdm.auto import tqdm

    from argen.distributed import resolve_device
    from argen.models.checkpoints import read_meta, save_model
    from argen.training.checkpoint import check_compatible, latest_checkpoint, load_checkpoint

    out, device = Path(cfg.out_dir), resolve_device(cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    teacher = load_teacher(cfg, device)
    student = build_student(teacher, cfg).to(device)
    batches = StepBatches(cfg, teacher.config, device)
    run_config = {"task": "distill", "model": to_dict(student.config), "distill": to_dict(cfg)}
    ckpt_dir, total = out / "checkpoints", cfg.stage1_steps + cfg.stage2_steps
    latest = latest_checkpoint(ckpt_dir)
    state = load_checkpoint(latest) if latest else None
    if state is not None:
        check_compatible(state.config, run_config, str(latest))
    step, stage, opt, sched = (state.step if state else 0), 0, None, None
    with open(out / "metrics.jsonl", "a") as log, tqdm(total=total, initial=step, desc="distill") as bar:
        while step < total:
            if stage != (1 if step < cfg.stage1_steps else 2):
                stage = 1 if step < cfg.stage1_steps else 2
                opt, sched = _stage_setup(student, cfg, stage)
                if state is not None:
                    _resume(student, opt, sched, state, stage, str(latest))
                    state = None
            metrics = _train_step(student, teacher, batches(step), cfg, stage, opt, sched)
            step += 1
            bar.update(1)
            bar.set_postfix(stage=stage, loss=f"{metrics['loss']:.4f}")
            if step % cfg.log_every == 0 or step == total or step == cfg.stage1_steps:
                lr = opt.param_groups[0]["lr"]
                log.write(
                    json.dumps({"step": step, "stage": stage, "lr": lr, **metrics, "time": time.time()})
                    + "\n"
                )
                log.flush()
            if step % cfg.ckpt_every == 0 or step == total or step == cfg.stage1_steps:
                _save(ckpt_dir, student, opt, sched, step, {**run_config, "stage": stage}, cfg.keep_last)
    # the student samples with its teacher's tokenizer: keep the teacher's record of it
    teacher_meta = read_meta(cfg.teacher) if cfg.teacher else {}
    trained_with = {**teacher_meta.get("trained_with", {}), "objective": {"distilled_from": str(cfg.teacher)}}
    return save_model(student.eval().requires_grad_(False), out / "actvar", trained_with=trained_with)
