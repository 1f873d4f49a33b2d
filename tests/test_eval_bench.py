"""Sampler benchmark JSON and the quality-vs-speed plot."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from argen.eval.bench import BenchConfig, bench_sampler, compare_samplers, run_bench, side_by_side
from argen.eval.plot import _speed, lookup, plot_quality_speed


def _sleepy_sampler(per_call_s: float, per_image_s: float):
    calls = []

    def sample(batch_size: int) -> torch.Tensor:
        calls.append(batch_size)
        time.sleep(per_call_s + per_image_s * batch_size)
        return torch.zeros(batch_size, 1, 8, 8)

    return sample, calls


def test_bench_measures_known_timings_and_merges_meta():
    sample, calls = _sleepy_sampler(0.02, 0.005)
    res = bench_sampler(
        sample,
        batch_sizes=(1, 4),
        warmup=1,
        repeats=3,
        device="cpu",
        meta={"model": "toy", "steps": 31, "flops_per_image": 1e9},
    )
    assert calls == [1] * 4 + [4] * 4  # warmup + repeats per batch size
    rows = {r["batch_size"]: r for r in res["per_batch"]}
    assert rows[1]["median_s"] == pytest.approx(0.025, abs=0.02)
    assert rows[4]["median_s"] == pytest.approx(0.04, abs=0.02)
    assert res["latency_batch1_s"] == rows[1]["median_s"] and res["best_batch_size"] == 4
    assert res["img_per_s"] == pytest.approx(4 / rows[4]["median_s"])
    assert res["model"] == "toy" and res["achieved_flops_per_s"] == pytest.approx(1e9 * res["img_per_s"])
    json.dumps(res)  # JSON-serialisable


def test_bench_cpu_peak_memory_sees_allocations(tmp_path):
    hold = []

    def sample(batch_size: int) -> None:
        hold.append(torch.ones(batch_size, 64 << 20, dtype=torch.uint8))  # 64 MiB per image, kept alive
        time.sleep(0.02)

    res = run_bench(
        BenchConfig(batch_sizes=(1,), warmup=0, repeats=2, device="cpu", out=str(tmp_path / "b.json")), sample
    )
    assert res["peak_mem_bytes"] >= 100 << 20
    assert json.loads((tmp_path / "b.json").read_text())["per_batch"][0]["batch_size"] == 1
    with pytest.raises(ValueError, match="positive"):
        BenchConfig(batch_sizes=(0,))


def test_quality_speed_plot(tmp_path):
    results = [
        {
            "name": f"EAR {s} steps",
            "group": "EAR-B",
            "img_per_s": 100 / s,
            "fid": 5 + 20 / s,
            "floor": {"fid": 1.5},
        }
        for s in (8, 16, 31)
    ] + [{"name": "raster", "img_per_s": 0.4, "fid": 6.0}, {"name": "no speed", "fid": 3.0}]
    path = tmp_path / "r.json"
    path.write_text(
        json.dumps({"name": "VAR d16", "bench": {"img_per_s": 30.0}, "img_per_s": 30.0, "fid": 4.0})
    )
    eval_report = {
        "n": 100,
        "fid": 8.0,
        "generator": {"model": "runs/ear.safetensors", "sample_seconds": 50.0},
    }
    out = plot_quality_speed([*results, path, eval_report], tmp_path / "plot.png", title="test")
    assert out.is_file() and out.stat().st_size > 10_000
    assert _speed(eval_report, "img_per_s") == 2.0
    assert lookup({"a": {"b": 2}}, "a.b") == 2 and lookup({"a": 1}, "a.b") is None
    with pytest.raises(ValueError, match="img_per_s"):
        plot_quality_speed([{"fid": 1.0}], tmp_path / "x.png")


def test_bench_with_a_dtype_reports_its_peak_and_mfu() -> None:
    sample, _ = _sleepy_sampler(0.01, 0.0)
    cfg = BenchConfig(batch_sizes=(2,), warmup=0, repeats=1, device="cpu")
    res = run_bench(cfg, sample, {"flops_per_image": 1e8}, dtype=torch.float32)
    assert res["dtype"] == "fp32" and res["peak_flops_per_s"] > 1e8
    assert res["mfu"] == pytest.approx(res["achieved_flops_per_s"] / res["peak_flops_per_s"])


def test_side_by_side_interleaves_and_separates_cpu_from_wall_time() -> None:
    order: list[str] = []

    def spin() -> str:
        order.append("spin")
        end = time.process_time() + 0.02
        while time.process_time() < end:
            pass
        return "spun"

    def sleep() -> int:
        order.append("sleep")
        time.sleep(0.02)
        return len(order)

    timed = side_by_side({"spin": spin, "sleep": sleep}, rounds=3)
    assert order == ["spin", "sleep"] * 4  # one warm-up each, then alternating rounds
    assert timed["spin"].result == "spun" and timed["sleep"].result == 8  # the last call's result
    assert timed["spin"].cpu_s >= 0.02 and timed["sleep"].wall_s >= 0.02
    assert timed["sleep"].cpu_s < 0.01  # sleeping costs wall-clock, not this process's CPU


def test_side_by_side_counts_the_cpu_time_of_subprocesses() -> None:
    spin = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    child, runs = [sys.executable, "-c", spin], []
    timed = side_by_side({"child": lambda: runs.append(subprocess.run(child, check=True))}, 1, warmup=False)
    assert len(runs) == 1  # no warm-up call
    assert 0.25 <= timed["child"].cpu_s <= timed["child"].wall_s + 0.05  # the child's spin (10 ms ticks)
    assert 0 <= timed["child"].sys_s < timed["child"].cpu_s


def test_compare_samplers_reports_the_cpu_time_ratio_per_batch() -> None:
    def spin(seconds_per_image: float):
        def sample(batch: int) -> int:
            end = time.process_time() + seconds_per_image * batch
            while time.process_time() < end:
                pass
            return batch

        return sample

    samplers = {"fast": spin(0.004), "slow": spin(0.008)}
    res = compare_samplers(samplers, [1, 3], rounds=3, flops_per_image={"fast": 1.0, "slow": 4.0})
    assert res["compared"] == ["fast", "slow"] and res["flops_ratio"] == 0.25
    assert [row["batch_size"] for row in res["per_batch"]] == [1, 3]
    for row in res["per_batch"]:
        assert 0.4 < row["time_ratio"] < 0.65  # 0.5 up to timer granularity
        assert row["slow"]["cpu_s"] >= 0.008 * row["batch_size"]
    with pytest.raises(ValueError, match="exactly two"):
        compare_samplers({"one": spin(0.001)}, [1], rounds=1)
