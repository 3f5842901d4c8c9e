"""`layernorm tour`: every section in the report, and a failing step does not hide the others."""

from pathlib import Path

import pytest

from layernorm import tour
from layernorm.cli import main

ALL_EXPERIMENTS = [arg for name in tour.EXPERIMENTS for arg in ("--skip", name)]


def test_tour_writes_both_reports(tmp_path, capsys):
    status = main(["tour", "--out", str(tmp_path)] + ALL_EXPERIMENTS)
    assert status == 0
    md = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for title in ("Check: every implementation", "Benchmark on the CPU"):
        assert title in md and title in page
    assert "cases within tolerance" in md
    assert "<table>" in page and page.count("<tr>") > 20
    assert "report.html" in capsys.readouterr().out


def test_a_failing_step_is_reported_and_the_rest_still_run(tmp_path, monkeypatch):
    def broken(section):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(tour, "_check_step", broken)
    status = main(["tour", "--out", str(tmp_path)] + ALL_EXPERIMENTS)
    assert status == 1
    md = (tmp_path / "report.md").read_text()
    assert "**failed**" in md and "planted failure" in md
    assert "Benchmark on the CPU" in md and "**ok**" in md


def _stub_experiments(monkeypatch):
    """Replace the experiments with a stub that records the size each was asked for."""
    import layernorm.experiments as experiments

    sizes = {}

    def stub(name, out, size=None, **kwargs):
        sizes[name] = size
        return {"verdict": f"stub at the {size} size"}

    monkeypatch.setattr(experiments, "run_experiment", stub)
    return sizes


@pytest.mark.parametrize("flags, size", [([], "quick"), (["--experiment-size", "smoke"], "smoke"),
                                         (["--experiment-size", "quick"], "quick"),
                                         (["--experiment-size", "default"], "default")])
def test_tour_runs_every_experiment_at_the_chosen_size(flags, size, tmp_path, monkeypatch):
    sizes = _stub_experiments(monkeypatch)
    status = main(["tour", "--out", str(tmp_path), "--skip", "check", "--skip", "bench"] + flags)
    assert status == 0
    assert sizes == {name: size for name in tour.EXPERIMENTS}
    md = (tmp_path / "report.md").read_text()
    assert f"experiments at the {size} size" in md and f"stub at the {size} size" in md


def test_tour_rejects_an_unknown_size(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tour", "--experiment-size", "huge"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_gpu_bench_section_shows_the_bar(tmp_path, monkeypatch):
    """The GPU branch, with the bench stubbed: its bar rows become the section's table."""
    import json

    from layernorm import bench

    def fake_run(args):
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({
            "environment": {"device": "Some GPU"}, "copy_ceiling_gbps": 3000.0,
            "bar": [{"row": "forward >= 95%", "measured": "97%", "held": True},
                    {"row": "backward >= 90%", "measured": "40%", "held": False}]}))
        return 0

    monkeypatch.setattr(bench, "run", fake_run)
    section = tour.Section("Benchmark on the GPU")
    tour._gpu_bench_step(section, tmp_path / "bench")
    assert section.status == "ok"
    assert section.table[1:] == [["forward >= 95%", "97%", "yes"], ["backward >= 90%", "40%", "no"]]
    assert section.verdict.startswith("1 of 2 rows of the bar held on Some GPU (copy ceiling 3000 GB/s)")


def test_gpu_bench_section_fails_without_results(tmp_path, monkeypatch):
    from layernorm import bench

    monkeypatch.setattr(bench, "run", lambda args: 2)
    section = tour.Section("Benchmark on the GPU")
    tour._gpu_bench_step(section, tmp_path / "bench")
    assert section.status == "failed" and "wrote no" in section.verdict
