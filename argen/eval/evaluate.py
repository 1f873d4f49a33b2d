"""`argen eval`: FID, KID, precision/recall and class accuracy of a sample set, with its real-vs-real floor.

Samples come from a folder of images, an ADM-format `.npz` (`arr_0` uint8 NHWC, labels in `labels` or
`arr_1`), or in-memory tensors from a sampler. The reference is a Fashion-MNIST split (default; statistics
cached per split, n and feature extractor) or an ADM reference `.npz` (its `mu`/`sigma` when present, else
its images). Every report states the sample count, the seeds and the floor: the same metrics for as many
real held-out images (Fashion-MNIST test split) against the same reference.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from argen.config import to_dict
from argen.eval.fid import FeatureStats, cached_stats, feature_stats, fid_from_stats, kid, precision_recall
from argen.eval.inception import INCEPTION_NAME, Extractor, to_uint8
from argen.io import atomic_write_text

FMNIST = "fashion_mnist"
_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@dataclass
class EvalConfig:
    """What to evaluate and against what.

    samples: folder of images (labels from integer sub-folder names, if any) or ADM `.npz`; None when images
        are passed to `evaluate` in memory.
    reference: "fashion_mnist" or the path of an ADM reference `.npz`.
    ref_split / ref_n: Fashion-MNIST split and image count for the reference statistics.
    floor_split: Fashion-MNIST split for the real-vs-real floor (disjoint from ref_split).
    features: "inception" (standard FID) or "classifier" (NON-STANDARD domain features of argen's classifier).
    classifier: argen classifier file for class accuracy / domain features (None = the shipped one).
    n: use the first n samples (None = all). keep_feats: reference features kept for KID / PR.
    fid_method: "sqrtm" (standard scipy sqrtm) or "eigh" (same value from eigendecompositions, faster).
    kid_subsets / kid_subset_size: KID averaging. pr_k: k of the k-NN manifolds; pr_max: samples per side.
    seed: seed of every random subset drawn here. sample_seed: the sampler's seed, recorded in the report.
    out: JSON report path (None = do not write).
    """

    samples: str | None = None
    reference: str = FMNIST
    ref_split: str = "train"
    ref_n: int = 5000  # the README results protocol
    floor_split: str = "test"
    floor: bool = True
    features: str = "inception"
    classifier: str | None = None
    n: int | None = None
    keep_feats: int = 10000
    fid_method: str = "sqrtm"
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pr_k: int = 3
    pr_max: int = 10000
    batch_size: int = 50
    device: str = "cpu"
    seed: int = 0
    sample_seed: int | None = None
    out: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.fid_method not in ("sqrtm", "eigh"):
            raise ValueError(f"fid_method must be 'sqrtm' or 'eigh', got {self.fid_method!r}")
        if self.features not in ("inception", "classifier"):
            raise ValueError(f"features must be 'inception' or 'classifier', got {self.features!r}")
        if self.reference != FMNIST and not self.reference.endswith(".npz"):
            raise ValueError(
                f"reference must be {FMNIST!r} or an ADM reference .npz file, got {self.reference!r}"
            )
        if self.reference == FMNIST and self.floor and self.floor_split == self.ref_split:
            raise ValueError("floor_split must differ from ref_split so the floor uses disjoint real images")
        if (self.n is not None and self.n < 2) or self.ref_n < 2:
            raise ValueError("n and ref_n must be at least 2")


# --------------------------------------------------------------------------------------------- loading
def _u8_NCHW(arr_NHWC: np.ndarray) -> torch.Tensor:
    if arr_NHWC.dtype != np.uint8:
        raise ValueError(f"sample arrays must be uint8 NHWC (ADM format), got {arr_NHWC.dtype}")
    if arr_NHWC.ndim == 3:
        arr_NHWC = arr_NHWC[..., None]
    return torch.from_numpy(np.ascontiguousarray(arr_NHWC)).permute(0, 3, 1, 2).contiguous()


def load_npz(path: str | Path) -> tuple[torch.Tensor | None, torch.Tensor | None, dict[str, np.ndarray]]:
    """ADM `.npz` -> (uint8 (N, C, H, W) images or None, labels (N,) or None, other arrays: mu, sigma...)."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    images = _u8_NCHW(arrays.pop("arr_0")) if "arr_0" in arrays else None
    labels = arrays.pop("labels", arrays.pop("arr_1", None))
    return images, (torch.from_numpy(labels).long() if labels is not None else None), arrays


def load_folder(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images under `path` (sorted, recursive) as uint8 (N, C, H, W); labels when every image sits in an
    integer-named sub-folder (`path/<class id>/<file>`)."""
    from PIL import Image

    root = Path(path)
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in _IMAGE_EXTS)
    if not files:
        raise ValueError(
            f"no images ({', '.join(sorted(_IMAGE_EXTS))}) found under {root}; a folder of .npz sample "
            "shards must be packed first (argen.sampling.writer.pack_npz) and evaluated as one .npz"
        )
    arrs = []
    for f in files:
        with Image.open(f) as im:
            arrs.append(np.asarray(im.convert("L" if im.mode in ("L", "I;16", "1") else "RGB")))
    if len({a.shape for a in arrs}) != 1:
        raise ValueError(f"images under {root} differ in size/mode; resize them to one size first")
    parents = [f.parent.relative_to(root).as_posix() for f in files]
    labels = torch.tensor([int(p) for p in parents]) if all(p.isdigit() for p in parents) else None
    return _u8_NCHW(np.stack(arrs)), labels


def load_samples(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Folder or `.npz` -> (uint8 images (N, C, H, W), labels (N,) or None)."""
    path = Path(path)
    if path.suffix == ".npz":
        images, labels, _ = load_npz(path)
        if images is None:
            raise ValueError(f"{path} has no arr_0 image array (ADM sample format: uint8 NHWC)")
        return images, labels
    if path.is_dir():
        return load_folder(path)
    raise ValueError(f"samples {path} must be a folder of images or an ADM .npz file")


def fmnist_u8(split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` Fashion-MNIST images of `split` (random subset by `seed`) as uint8 (n, 1, 32, 32), with labels."""
    from argen.config import DataConfig
    from argen.data import build_image_dataset

    ds = build_image_dataset(DataConfig(source=FMNIST, split=split))
    if n > len(ds):
        raise ValueError(f"asked for {n} Fashion-MNIST {split} images, the split has {len(ds)}")
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False)))
    imgs, labels = zip(*(ds[int(i)] for i in idx), strict=True)
    return to_uint8((torch.stack(imgs) + 1) / 2), torch.tensor(labels)


# ------------------------------------------------------------------------------------------- metrics
def build_extractor(cfg: EvalConfig) -> Extractor:
    if cfg.features == "inception":
        from argen.eval.inception import InceptionExtractor

        return InceptionExtractor(cfg.device, cfg.batch_size, cfg.progress)
    from argen.eval.classifier import ClassifierExtractor, load_default_classifier

    return ClassifierExtractor(load_default_classifier(cfg.classifier, cfg.device))


def reference_stats(cfg: EvalConfig, extractor: Extractor) -> tuple[FeatureStats, dict[str, Any]]:
    """Reference statistics (cached) and a description of where they came from."""
    if cfg.reference == FMNIST:
        key = {
            "dataset": FMNIST,
            "split": cfg.ref_split,
            "n": cfg.ref_n,
            "extractor": extractor.name,
            "seed": cfg.seed,
            "keep": cfg.keep_feats,
        }
        stats, path = cached_stats(
            key,
            lambda: feature_stats(
                extractor(fmnist_u8(cfg.ref_split, cfg.ref_n, cfg.seed)[0]), cfg.keep_feats, cfg.seed
            ),
        )
        return stats, {**key, "cache": str(path)}
    ref = Path(cfg.reference)
    images, _, arrays = load_npz(ref)
    use_moments = "mu" in arrays and "sigma" in arrays and extractor.name == INCEPTION_NAME
    key = {
        "dataset": ref.resolve().as_posix(),
        "split": "npz",
        "n": 0 if images is None else len(images),
        "extractor": extractor.name,
        "mtime": ref.stat().st_mtime_ns,
        "keep": cfg.keep_feats,
    }

    def compute() -> FeatureStats:
        if images is None and not use_moments:
            raise ValueError(f"{ref} has neither mu/sigma (Inception) nor arr_0 images to compute them from")
        stats = feature_stats(extractor(images), cfg.keep_feats, cfg.seed) if images is not None else None
        if use_moments:
            feats = stats.feats if stats is not None else None
            return FeatureStats(
                arrays["mu"], arrays["sigma"], len(images) if images is not None else 0, feats
            )
        return stats

    stats, path = cached_stats(key, compute)
    return stats, {**key, "moments_from": "npz mu/sigma" if use_moments else "images", "cache": str(path)}


def set_metrics(feats: np.ndarray, ref: FeatureStats, cfg: EvalConfig) -> dict[str, Any]:
    """FID, KID and precision/recall of one feature set against the reference."""
    out: dict[str, Any] = {"n": len(feats), "fid": fid_from_stats(feature_stats(feats), ref, cfg.fid_method)}
    if ref.feats is None:
        out.update(
            kid_mean=None,
            kid_std=None,
            precision=None,
            recall=None,
            note="reference has no features (moments only): KID and precision/recall skipped",
        )
        return out
    out["kid_mean"], out["kid_std"] = kid(feats, ref.feats, cfg.kid_subsets, cfg.kid_subset_size, cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    m = min(len(feats), len(ref.feats), cfg.pr_max)
    fake = feats[np.sort(rng.choice(len(feats), m, replace=False))]
    real = ref.feats[np.sort(rng.choice(len(ref.feats), m, replace=False))]
    out["precision"], out["recall"] = precision_recall(real, fake, cfg.pr_k)
    out["pr_samples_per_side"] = m
    return out


def _class_accuracy(cfg: EvalConfig, images: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Non-standard class accuracy; None when no classifier was named and none is shipped."""
    from argen.eval.classifier import ASSET, class_accuracy, load_default_classifier

    if cfg.classifier is None and not (ASSET / "model.safetensors").is_file():
        return None
    return class_accuracy(load_default_classifier(cfg.classifier, cfg.device), images, labels)


def evaluate(
    cfg: EvalConfig,
    images: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a sample set; returns (and writes to `cfg.out`) the JSON report.

    Args:
        cfg: what to evaluate. images: in-memory samples (N, C, H, W), uint8 or float in [0, 1]; used
            instead of `cfg.samples`. labels: (N,) intended classes of in-memory samples, optional.
        extra: JSON-able fields added to the report (e.g. the generator that made the samples).

    Returns:
        {"n", "features", "standard_fid", "fid", "kid_mean", "kid_std", "precision", "recall",
         "class_accuracy" (non-standard; None without labels or off Fashion-MNIST), "floor" {same metrics for
         n real held-out images}, "reference", "seeds", "config", "seconds"}.
    """
    t0 = time.time()
    if images is None:
        if cfg.samples is None:
            raise ValueError("give EvalConfig.samples (folder or .npz) or pass images to evaluate()")
        images, labels = load_samples(cfg.samples)
    images = to_uint8(images)
    if cfg.n is not None:
        if cfg.n > len(images):
            raise ValueError(f"n={cfg.n} but only {len(images)} samples were given")
        images, labels = images[: cfg.n], labels[: cfg.n] if labels is not None else None
    extractor = build_extractor(cfg)
    ref, ref_info = reference_stats(cfg, extractor)
    report: dict[str, Any] = {"features": extractor.name, "standard_fid": extractor.name == INCEPTION_NAME}
    report.update(set_metrics(extractor(images), ref, cfg))
    on_fmnist = cfg.reference == FMNIST
    report["class_accuracy"] = (
        _class_accuracy(cfg, images, labels) if labels is not None and on_fmnist else None
    )
    report["class_accuracy_note"] = "NON-STANDARD: argen classifier trained on the Fashion-MNIST train split"
    report["floor"] = _floor(cfg, extractor, ref, len(images)) if cfg.floor and on_fmnist else None
    report["reference"] = ref_info
    report["seeds"] = {"eval_seed": cfg.seed, "sample_seed": cfg.sample_seed}
    report["config"] = to_dict(cfg)
    report["seconds"] = round(time.time() - t0, 1)
    report.update(extra or {})
    if cfg.out is not None:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg.out, json.dumps(report, indent=2) + "\n")
    return report


def _floor(cfg: EvalConfig, extractor: Extractor, ref: FeatureStats, n: int) -> dict[str, Any]:
    """The same metrics for `n` real images of the held-out split (features cached)."""
    from argen.config import DataConfig
    from argen.data import build_image_dataset

    n_real = min(n, len(build_image_dataset(DataConfig(source=FMNIST, split=cfg.floor_split))))
    imgs, labels = fmnist_u8(cfg.floor_split, n_real, cfg.seed + 1)
    key = {
        "dataset": FMNIST,
        "split": cfg.floor_split,
        "n": n_real,
        "extractor": extractor.name,
        "seed": cfg.seed + 1,
        "keep": n_real,
    }
    stats, _ = cached_stats(key, lambda: feature_stats(extractor(imgs), None))
    out = set_metrics(stats.feats, ref, cfg)
    out["split"] = cfg.floor_split
    out["class_accuracy"] = _class_accuracy(cfg, imgs, labels)
    if n_real < n:
        out["note"] = f"only {n_real} held-out real images exist; floor computed at that count"
    return out
