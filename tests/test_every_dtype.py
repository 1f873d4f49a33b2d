"""Every command that runs a model runs in both dtypes, forced, whatever the CPU (bf16 runs everywhere; only
slowly without bf16 units), and records the dtype that ran. Tiny random models keep it fast.

The bf16 outputs are checked against fp32 ones where a value is continuous (reconstruction PSNR within
1 dB; teacher-forcing losses within 1%); sampled images are discrete draws, so there only validity and the
recorded dtype are checked (tests/test_bf16.py compares bf16 and fp32 logits and pixels directly).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from argen.cli import main
from argen.config import to_dict
from argen.models.checkpoints import load_model
from argen.models.pretrained import from_pretrained, save_pretrained
from argen.sampling.pipeline import GenerateConfig, Pipeline

DTYPES = ("bf16", "fp32")
FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
needs_fmnist = pytest.mark.skipif(not FMNIST.is_file(), reason="Fashion-MNIST not installed")


def _run(args: list[str], capsys: pytest.CaptureFixture) -> dict:
    main(args)
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])


def _gen(command: str, model: Path, tokenizer: Path, dtype: str, *extra: str) -> list[str]:
    return [
        command,
        "--model",
        str(model),
        "--tokenizer",
        str(tokenizer),
        "--device",
        "cpu",
        "--dtype",
        dtype,
        *extra,
    ]


@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_and_generate(files: dict, tmp_path: Path, capsys, dtype: str) -> None:
    rep = _run(
        _gen(
            "sample",
            files["ear"],
            files["vq"],
            dtype,
            "--gif",
            "--classes",
            "1",
            "--n-per-class",
            "2",
            "--out",
            str(tmp_path / "s"),
        ),
        capsys,
    )
    assert json.loads((tmp_path / "s" / "sample.json").read_text())["run"]["dtype"] == dtype
    assert Image.open(rep["gif"]).n_frames == 31
    rep = _run(
        _gen("generate", files["var"], files["msvq"], dtype, "--n", "3", "--out", str(tmp_path / "g")), capsys
    )
    assert json.loads((tmp_path / "g" / "run.json").read_text())["dtype"] == dtype
    with np.load(rep["npz"]) as f:
        assert f["arr_0"].shape[0] == 3 and f["arr_0"].dtype == np.uint8


@needs_fmnist
@pytest.mark.parametrize("dtype", DTYPES)
def test_extend(files: dict, tmp_path: Path, capsys, dtype: str) -> None:
    args = _gen(
        "extend",
        files["ear"],
        files["vq"],
        dtype,
        "--centre",
        "6",
        "--canvas",
        "20",
        "--images",
        "0",
        "--out",
        str(tmp_path),
    )
    rep = _run(args, capsys)
    assert rep["dtype"] == dtype and rep["mode"] == "extension"


@needs_fmnist
def test_reconstruct_in_both_dtypes_agrees(files: dict, tmp_path: Path, capsys) -> None:
    reps = {
        dtype: _run(
            [
                "reconstruct",
                "--tokenizer",
                str(files["vq"]),
                "--n",
                "16",
                "--no-fid",
                "--dtype",
                dtype,
                "--out",
                str(tmp_path / dtype),
            ],
            capsys,
        )
        for dtype in DTYPES
    }
    assert [reps[d]["dtype"] for d in DTYPES] == list(DTYPES)
    assert abs(reps["bf16"]["psnr"] - reps["fp32"]["psnr"]) < 1.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_bench_and_eval_record_the_dtype(files: dict, tmp_path: Path, capsys, dtype: str) -> None:
    rep = _run(
        _gen(
            "bench", files["ear"], files["vq"], dtype, "--batch-sizes", "1", "--repeats", "1", "--warmup", "0"
        ),
        capsys,
    )
    assert rep["dtype"] == dtype
    if not FMNIST.is_file():
        return
    from argen.eval.classifier import build_classifier
    from argen.models.checkpoints import save_model

    clf = save_model(build_classifier({"preset": "debug"}), tmp_path / "clf")
    sets = [
        "features=classifier",
        f"classifier={clf}",
        "ref_n=40",
        "kid_subsets=2",
        "kid_subset_size=10",
        "progress=false",
    ]
    args = _gen(
        "eval", files["var"], files["msvq"], dtype, "--n", "20", *(a for s in sets for a in ("--set", s))
    )
    rep = _run(args, capsys)
    assert rep["generator"]["run"]["dtype"] == dtype and np.isfinite(rep["fid"])


def test_train_and_distill_take_dtype(files: dict, tmp_path: Path, capsys) -> None:
    """`--dtype` is the run's precision; bf16 autocast follows the fp32 run's losses."""
    from tests.test_distill import token_cfg

    rng = np.random.RandomState(0)
    np.savez(tmp_path / "tok.npz", codes=rng.randint(0, 64, (16, 256)), labels=rng.randint(0, 10, (16,)))
    losses = {}
    for dtype in DTYPES:
        sets = [
            "model.preset=debug",
            "model.grid=16",
            "data.source=tokens",
            f"data.root={tmp_path / 'tok.npz'}",
            "steps=3",
            "batch_size=4",
            f"out_dir={tmp_path / dtype}",
            "device=cpu",
            "log_every=1",
            "precision=fp32",
        ]
        main(["train", "gpt", *(a for s in sets for a in ("--set", s)), "--dtype", dtype])
        assert json.loads((tmp_path / dtype / "config.json").read_text())["precision"] == dtype
        rows = (tmp_path / dtype / "metrics.jsonl").read_text().splitlines()
        losses[dtype] = [json.loads(r)["loss"] for r in rows if "loss" in json.loads(r)]
        cfg = tmp_path / f"distill_{dtype}.json"
        cfg.write_text(json.dumps(to_dict(token_cfg(files, tmp_path, tmp_path / f"d_{dtype}"))))
        main(["distill", "--config", str(cfg), "--dtype", dtype])
        assert json.loads((tmp_path / f"d_{dtype}" / "config.json").read_text())["precision"] == dtype
    np.testing.assert_allclose(losses["bf16"], losses["fp32"], rtol=1e-2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exported_folder_samples_in_either_dtype(files: dict, tmp_path: Path, dtype: str) -> None:
    """A folder stored in one dtype loads and samples in the other (and its own)."""
    folder = save_pretrained(load_model(files["ear"]), tmp_path / "ear", dtype=torch.bfloat16)
    model = from_pretrained(folder, dtype={"bf16": torch.bfloat16, "fp32": torch.float32}[dtype])
    assert next(model.parameters()).dtype == {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    pipe = Pipeline.load(
        GenerateConfig(str(folder), str(files["vq"]), batch_size=2, device="cpu", dtype=dtype)
    )
    images = pipe.sample(torch.tensor([0, 1])).images
    assert pipe.dtype == dtype and images.dtype == torch.float32 and images.shape == (2, 1, 32, 32)
