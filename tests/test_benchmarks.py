"""Every benchmark's smoke mode runs (tiny models, seconds): no benchmark behind a README number can rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import runner


def test_the_runner_lists_every_benchmark(capsys) -> None:
    assert runner.main([]) == 0
    listed = capsys.readouterr().out
    assert runner.names() and all(name in listed for name in runner.names())


def test_an_unknown_benchmark_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="no benchmark 'nope'; there are: "):
        runner.run("nope", [])


@pytest.mark.parametrize("name", runner.names())
def test_smoke(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARGEN_BENCH_WORK", str(tmp_path / "work"))
    monkeypatch.setattr("benchmarks.common.WORK", tmp_path / "work")
    out = tmp_path / "report.json"
    report = runner.run(name, ["--smoke", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=str))
    machine = report["machine"]
    assert machine["cpu_model"] and machine["threads"] >= 1 and machine["torch"]
    assert report["smoke"] and report["command"].startswith(f"python -m benchmarks {name}")
    check = getattr(runner.load(name), "check", None)
    if check is not None:  # the benchmark's own assertions on real values of its smoke result
        check(report["result"])
