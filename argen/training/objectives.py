"""Training objectives (losses) and the model/dataset builders of each family; `training/tasks.py` names
them as tasks (this module imports nothing from there: no import circle).

Losses live here so that training and distillation reuse the same forward passes. Each objective reads its
options (`TrainConfig.objective`) into a dataclass: an unknown key is an error that names the closest field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from argen.config import from_dict

# what the trainer adds to the objective options of every step: the optimizer step about to be taken
TRAINER_KEYS = ("step",)


def objective_options(cls: type, opts: dict[str, Any], trainer_keys: tuple[str, ...] = TRAINER_KEYS) -> Any:
    """`opts` (less the trainer's keys) as the option dataclass `cls`; unknown keys or wrong types refused."""
    return from_dict(cls, {k: v for k, v in opts.items() if k not in trainer_keys}, where="objective")


# ---------------------------------------------------------------------------------------------- tokenizers
def build_tokenizer(kind: str, model: dict):
    """A freshly initialised tokenizer from {"preset": ..., <config overrides>, "disc": <optional>}.

    kind: "vq" (VQModel) or "msvq" (MultiScaleVQVAE). "disc": true or a dict of DiscConfig fields (an empty
    dict = the defaults) wraps the tokenizer in a TokenizerWithDisc for GAN training (only the tokenizer is
    exported); absent, null or false = no discriminator. The default preset is "fmnist", which matches
    the default data (1-channel Fashion-MNIST).
    """
    from argen.config import from_dict
    from argen.tokenizers.losses import DiscConfig, PatchDiscriminator, TokenizerWithDisc

    spec = dict(model)
    disc = spec.pop("disc", None)
    tok = _tokenizer_class(kind)(tokenizer_config(kind, spec))
    tok.init_weights()
    if disc is None or disc is False:
        return tok
    if not isinstance(disc, dict | bool):
        raise ValueError(f"model.disc must be true, false or a dict of discriminator options, got {disc!r}")
    disc_opts = {"in_channels": tok.config.in_channels, **(disc if isinstance(disc, dict) else {})}
    wrapper = TokenizerWithDisc(tok, PatchDiscriminator(from_dict(DiscConfig, disc_opts, where="model.disc")))
    wrapper.disc.init_weights()
    return wrapper


def _tokenizer_class(kind: str):
    if kind == "vq":
        from argen.tokenizers.vqgan import VQModel

        return VQModel
    from argen.tokenizers.multiscale import MultiScaleVQVAE

    return MultiScaleVQVAE


def tokenizer_config(kind: str, spec: dict):
    spec = {k: v for k, v in spec.items() if k != "disc"}
    preset = spec.pop("preset", "fmnist")
    if kind == "vq":
        from argen.tokenizers.vqgan import vq_config

        return vq_config(preset, **spec)
    from argen.tokenizers.multiscale import msvq_config

    return msvq_config(preset, **spec)


def tokenizer_dataset(cfg, kind: str):
    from argen.data import build_image_dataset

    dataset = build_image_dataset(cfg.data, cfg.seed)
    channels = tokenizer_config(kind, cfg.model).in_channels
    if len(dataset) and dataset[0][0].shape[0] != channels:
        have = dataset[0][0].shape[0]
        raise ValueError(
            f"the data ({cfg.data.source}) has {have}-channel images but the tokenizer takes {channels}: "
            f"choose a preset for this data or set --set model.in_channels={have}"
            + (f" --set model.out_channels={have}" if kind == "vq" else "")
        )
    return dataset


def tokenizer_loss(model, batch, opts: dict) -> tuple:
    """Reconstruction + codebook + commitment (+ GAN) loss. Options = TokenizerLossConfig fields: rec_loss
    "l1"|"l2", rec_weight, codebook_weight, commit_weight, gan, gan_weight, disc_weight, gan_start."""
    from argen.tokenizers.losses import tokenizer_loss as loss_fn

    return loss_fn(model, batch, opts)


# ------------------------------------------------------------------------------------------ GPT (raster, EAR)
def gpt_model(model: dict):
    from argen.models.gpt import GPT, gpt_config

    overrides = dict(model)
    return GPT(gpt_config(overrides.pop("preset", "debug"), **overrides))


def gpt_dataset(cfg):
    from argen.data import build_dataset

    if cfg.data.source != "tokens":
        raise ValueError(
            "the gpt task trains on pre-extracted tokens: set data.source=tokens and data.root to the token "
            "store (or .npz) written by `argen tokenize` with a single-scale tokenizer"
        )
    from argen.models.gpt import gpt_config

    spec = dict(cfg.model)
    dataset = build_dataset(cfg.data, cfg.seed)
    _check_vocab(dataset, gpt_config(spec.pop("preset", "debug"), **spec).vocab_size, cfg.data.root)
    return dataset


def _check_vocab(dataset, model_vocab: int, root) -> None:
    """A token store records its codebook size; a model with a smaller vocabulary cannot embed its codes."""
    vocab = getattr(dataset, "metadata", {}).get("vocab_size")
    if vocab is not None and vocab > model_vocab:
        raise ValueError(
            f"{root} holds codes of a {vocab}-entry codebook but the model's vocabulary is {model_vocab}: "
            f"set model.vocab_size={vocab}, or tokenize with the model's tokenizer"
        )


@dataclass
class GPTObjective:
    """Options of the gpt objective (None = the model's own setting).

    order: "raster" | "spiral" | "random". mode: must equal the model's. schedule: "sides" | "rings" |
    "tokens:K" | a step count | sizes. randomize: random contiguous partitions per batch (any-schedule EAR),
    of min_steps..max_steps (None = one per token) steps. label_dropout: share of null labels.
    """

    order: str | None = None
    mode: str | None = None
    schedule: str | int | list[int] | None = None
    randomize: bool = False
    min_steps: int = 1
    max_steps: int | None = None
    label_dropout: float | None = None


def gpt_training_order(cfg, opts: dict):
    """The order used for one batch: the model's (or `opts`) order/schedule, or a random contiguous
    partition of it when `randomize` is on (any-schedule EAR training)."""
    from argen.orders import build_order, random_partition

    o = objective_options(GPTObjective, opts)
    if o.mode is not None and o.mode != cfg.mode:
        raise ValueError(f"objective mode {o.mode!r} differs from the model's mode {cfg.mode!r}")
    schedule = cfg.schedule if o.schedule is None else o.schedule
    order = build_order(o.order or cfg.order, cfg.grid, schedule)
    if o.randomize:
        if cfg.mode != "next_any":
            raise ValueError("randomized partitions need a next_any (EAR) model")
        hi = order.length if o.max_steps is None else o.max_steps
        order = order.with_sizes(random_partition(order.length, None, o.min_steps, hi))
    return order


def gpt_loss(model, batch, opts: dict) -> tuple:
    """Cross-entropy on every predicted position (next token, or EAR [MASK] slots), with label dropout.

    Batch: (codes_BL int64 in raster order, labels_B). Options: order ("raster" | "spiral" | "random"),
    mode (must equal the model's), schedule ("sides" | "rings" | "tokens:K" | steps | sizes), randomize
    (random contiguous partitions per batch; min_steps / max_steps), label_dropout (model default).
    """
    import torch.nn.functional as F

    codes_BL, label_B = batch
    net = getattr(model, "module", model)
    cfg = net.config
    if codes_BL.shape[1] != cfg.grid * cfg.grid:
        raise ValueError(f"token codes have {codes_BL.shape[1]} positions; the model expects {cfg.grid}^2")
    order = gpt_training_order(cfg, opts)
    dropout = objective_options(GPTObjective, opts).label_dropout
    labels_B = net.cls_embedding.drop(label_B, cfg.label_dropout if dropout is None else dropout)
    target_BL = order.to_sequence(codes_BL)
    logits_BLV = model(target_BL, labels_B, order)
    loss = F.cross_entropy(logits_BLV.reshape(-1, logits_BLV.shape[-1]), target_BL.reshape(-1))
    acc = (logits_BLV.detach().argmax(-1) == target_BL).float().mean()
    return loss, {"loss": float(loss.detach()), "acc": float(acc), "steps": float(order.num_steps)}


# --------------------------------------------------------------------------------------------------- VAR
@dataclass
class VARObjective:
    """Options of the var objective.

    vqvae: the frozen multi-scale VQVAE (msvq model file, or a module) giving the teacher-forcing input.
    vqvae_bf16: encode images under bf16 autocast (None: on CUDA with bf16 support).
    label_dropout: share of null labels (for CFG).
    progressive_steps / progressive_start: grow the trained scales from progressive_start to all over
        progressive_steps optimizer steps (0 = all scales from the start).
    """

    vqvae: Any = None
    vqvae_bf16: bool | None = None
    label_dropout: float = 0.1
    progressive_steps: int = 0
    progressive_start: int = 1


def var_model(model: dict):
    from argen.models.var import VAR, var_config

    overrides = dict(model)
    return VAR(var_config(overrides.pop("preset", "debug"), **overrides))


def var_dataset(cfg):
    """Pre-extracted multi-scale tokens (data.source=tokens), or images encoded on the fly by the frozen
    objective.vqvae (the official VAR way; items are then (img_CHW, label))."""
    from argen.data import build_dataset
    from argen.models.checkpoints import tokenizer_fingerprint

    dataset = build_dataset(cfg.data, cfg.seed)
    spec = objective_options(VARObjective, cfg.objective).vqvae
    if cfg.data.source != "tokens":
        if spec is None:
            raise ValueError(
                "the var task trains on images encoded on the fly by objective.vqvae=<msvq model file>, or "
                "on pre-extracted tokens (data.source=tokens, data.root=the store of `argen tokenize`)"
            )
        vqvae = _var_vqvae(spec, "cpu")
        if len(dataset) and dataset[0][0].shape[0] != vqvae.config.in_channels:
            raise ValueError(
                f"objective.vqvae encodes {vqvae.config.in_channels}-channel images but {cfg.data.source} "
                f"gives {dataset[0][0].shape[0]}-channel ones"
            )
        dataset.metadata = {"tokenizer": str(spec), "tokenizer_fingerprint": tokenizer_fingerprint(vqvae)}
        return dataset
    from argen.models.var import var_config

    overrides = dict(cfg.model)
    _check_vocab(dataset, var_config(overrides.pop("preset", "debug"), **overrides).vocab_size, cfg.data.root)
    recorded = getattr(dataset, "metadata", {}).get("tokenizer_fingerprint")
    if isinstance(spec, str) and recorded and tokenizer_fingerprint(_var_vqvae(spec, "cpu")) != recorded:
        raise ValueError(
            f"objective.vqvae={spec} is not the tokenizer that wrote {cfg.data.root} "
            f"({dataset.metadata.get('tokenizer')}): the VAR would learn one codebook's tokens with "
            "another's embeddings. Use that tokenizer, or re-tokenize with this one."
        )
    return dataset


_VAR_VQVAES: dict = {}


def _var_vqvae(spec, device):
    """The frozen multi-scale VQVAE named by objective option "vqvae" (an argen model file, or a module)."""
    if spec is None:
        raise ValueError(
            "the var objective needs objective.vqvae=<path of the msvq model file> to build the "
            "teacher-forcing input from token codes"
        )
    if not isinstance(spec, str):
        return spec
    key = (spec, str(device))
    if key not in _VAR_VQVAES:  # loaded once per process and device, never trained
        import torch

        from argen.models.checkpoints import load_model

        with torch.random.fork_rng(devices=[]):  # building it must not move the run's RNG (cached or not)
            _VAR_VQVAES[key] = load_model(spec, device=device, expect=("msvq",)).requires_grad_(False)
    return _VAR_VQVAES[key]


def var_progressive_scales(num_scales: int, opts: dict) -> int:
    """Scales trained at `opts["step"]`: all, or (with `progressive_steps` > 0) growing linearly from
    `progressive_start` (default 1) to all scales over `progressive_steps` optimizer steps."""
    o = objective_options(VARObjective, opts)
    ramp = o.progressive_steps
    if ramp <= 0:
        return num_scales
    if "step" not in opts:
        raise ValueError("progressive VAR training needs the optimizer step in objective option 'step'")
    start = max(1, min(o.progressive_start, num_scales))
    return start + int(min(int(opts["step"]) / ramp, 1.0) * (num_scales - start))


def var_encode(vqvae, img_BCHW, bf16: bool):
    """Images (B, C, H, W) in [-1, 1] -> codes (B, L) of all scales, by the frozen VQVAE: the encoder under
    bf16 autocast when `bf16`, the residual quantizer (nearest-code search) always in fp32."""
    import torch

    dev = img_BCHW.device.type
    with torch.no_grad():
        with torch.autocast(dev, torch.bfloat16, enabled=bf16):
            f_BChw = vqvae.encode_latent(img_BCHW)
        with torch.autocast(dev, enabled=False):
            return torch.cat(vqvae.quantize.f_to_idxBl(f_BChw.float()), dim=1)


def var_loss(model, batch, opts: dict) -> tuple:
    """VAR next-scale cross-entropy over all (or the first k) scales, with label dropout for CFG.

    Batch: (codes_BL int64 of all scales concatenated, labels_B), or (img_BCHW float, labels_B) encoded here
    by the VQVAE. Options: vqvae (path or module, required), vqvae_bf16 (encode images under bf16 autocast;
    default: on CUDA with bf16 support), label_dropout (0.1), progressive_steps / progressive_start / step
    (progressive-scale training).
    """
    import torch
    import torch.nn.functional as F

    codes_BL, label_B = batch
    cfg = getattr(model, "module", model).config
    o = objective_options(VARObjective, opts)
    if codes_BL.is_floating_point():
        dev = codes_BL.device
        bf16 = o.vqvae_bf16
        if bf16 is None:
            bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        codes_BL = var_encode(_var_vqvae(o.vqvae, dev), codes_BL, bf16)
    if codes_BL.shape[1] != cfg.seq_len:
        raise ValueError(
            f"token codes have {codes_BL.shape[1]} positions; VAR with patch_nums {cfg.patch_nums} "
            f"expects {cfg.seq_len} (all scales concatenated)"
        )
    vqvae = _var_vqvae(o.vqvae, codes_BL.device)
    with torch.no_grad():
        var_input_BLCv = vqvae.idxBl_to_var_input(list(codes_BL.split(cfg.scale_sizes, dim=1)))
    num = var_progressive_scales(len(cfg.patch_nums), opts)
    begin, end = cfg.scale_bounds[num - 1]
    drop_B = torch.rand(label_B.shape, device=label_B.device) < o.label_dropout
    labels_B = torch.where(drop_B, torch.full_like(label_B, cfg.num_classes), label_B)
    logits_BLV = model(labels_B, var_input_BLCv[:, : end - cfg.scale_sizes[0]])
    target_BL = codes_BL[:, :end]
    loss = F.cross_entropy(logits_BLV.reshape(-1, logits_BLV.shape[-1]), target_BL.reshape(-1))
    hit_BL = (logits_BLV.detach().argmax(-1) == target_BL).float()
    return loss, {
        "loss": float(loss.detach()),
        "acc": float(hit_BL.mean()),
        "acc_last_scale": float(hit_BL[:, begin:end].mean()),
        "scales": float(num),
    }


# ------------------------------------------------------------------------------------------------ classifier
def classifier_model(model: dict):
    from argen.models.classifier import build_classifier

    return build_classifier(model)


def classifier_dataset(cfg):
    from argen.data import build_image_dataset

    return build_image_dataset(cfg.data, cfg.seed)


@dataclass
class ClassifierObjective:
    """Options of the classifier objective: label_smoothing of the cross-entropy."""

    label_smoothing: float = 0.0


def classifier_loss(model, batch, opts: dict) -> tuple:
    """Cross-entropy of the evaluation classifier on (images in [-1, 1], labels), ClassifierObjective."""
    import torch.nn.functional as F

    img_BCHW, label_B = batch
    logits_BK = model(img_BCHW)
    smoothing = objective_options(ClassifierObjective, opts).label_smoothing
    loss = F.cross_entropy(logits_BK, label_B, label_smoothing=smoothing)
    acc = (logits_BK.argmax(-1) == label_B).float().mean()
    return loss, {"loss": float(loss.detach()), "acc": float(acc)}
