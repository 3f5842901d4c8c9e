"""`layernorm tour`: every section in the report, the summary before the details, the time left,
and a failing step does not hide the others."""

from pathlib import Path

import pytest

from layernorm.cli import main, tour
from layernorm.experiments import EXPERIMENTS

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
    printed = capsys.readouterr().out
    assert "report.html" in printed
    assert "[1/2] Check" in printed and "left)" in printed  # the time left, printed before each step


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
    """Replace the experiments with a stub that records the size each was asked for
    and leaves its key plot and a second plot behind."""
    import layernorm.experiments as experiments

    sizes = {}

    def stub(name, out, size=None, **kwargs):
        sizes[name] = size
        out.mkdir(parents=True, exist_ok=True)
        for png in (experiments.EXPERIMENTS[name].key_plot, "zz_other.png"):
            (out / png).write_bytes(b"png")
        return {"verdict": f"stub verdict of {name} at the {size} size"}

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
    assert f"experiments at the {size} size" in md and f"stub verdict of rnn at the {size} size" in md


def test_tour_rejects_an_unknown_size(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tour", "--experiment-size", "huge"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_gpu_bench_section_shows_ours_against_the_best_peer(tmp_path, monkeypatch):
    """The GPU branch, with the bench stubbed: its summary rows become the section's table."""
    import json

    from layernorm.cli import bench

    def fake_run(args):
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        summary = [bench.Summary("layer_norm", "bf16", "bf16", "forward", 9, 8, 9, 0.981, "4096x65536", 93.2, 97.8),
                   bench.Summary("rms_norm", "bf16", "fp32", "backward", 9, 9, 9, 1.04, "32768x768", 71.0, 95.4)]
        (out / "results.json").write_text(json.dumps({
            "environment": {"device": "Some GPU"}, "copy_ceiling_gbps": 3000.0,
            "summary": [bench._record(s) for s in summary]}))
        return 0

    monkeypatch.setattr(bench, "run", fake_run)
    section = tour.Section("Benchmark on the GPU")
    tour._gpu_bench_step(section, tmp_path / "bench")
    assert section.status == "ok"
    assert section.table[1:] == [
        ["layer_norm", "bf16", "forward", "8 of 9 shapes", "0.981 (4096x65536)", "93-98%"],
        ["rms_norm", "bf16/fp32", "backward", "9 of 9 shapes", "1.040 (32768x768)", "71-95%"]]
    assert section.verdict.startswith(
        "layernorm fastest at 17 of 18 (op, shape, pass) against the best peer on Some GPU (copy ceiling 3000 GB/s)")


def test_gpu_bench_section_fails_without_results(tmp_path, monkeypatch):
    from layernorm.cli import bench

    monkeypatch.setattr(bench, "run", lambda args: 2)
    section = tour.Section("Benchmark on the GPU")
    tour._gpu_bench_step(section, tmp_path / "bench")
    assert section.status == "failed" and "wrote no" in section.verdict


def _position(text, needle):
    assert needle in text, needle
    return text.index(needle)


@pytest.mark.parametrize("report", ["report.md", "report.html"])
def test_report_opens_with_the_summary(report, tmp_path, monkeypatch):
    """Every verdict and every key plot come before the details; the check's long table is folded away."""
    _stub_experiments(monkeypatch)
    assert main(["tour", "--out", str(tmp_path), "--experiment-size", "smoke"]) == 0
    text = (tmp_path / report).read_text()
    details = _position(text, "Details")
    assert _position(text, "Summary") < details
    assert _position(text, "cases within tolerance") < details  # the check's verdict, in the summary
    for name in tour.EXPERIMENTS:
        assert _position(text, f"stub verdict of {name}") < details
        assert _position(text, f"{name}/{EXPERIMENTS[name].key_plot}") < details  # the key plot, in the summary
        assert text.index(f"{name}/zz_other.png") > details  # the other plots only in the details
    folded = _position(text, "<details>")
    assert details < folded < _position(text, "error vs reference")  # the check table opens folded


def test_short_tables_are_not_folded(tmp_path, monkeypatch):
    section = tour.Section("Short", table=[["a", "b"], ["1", "2"]])
    page = tour._html([section], tmp_path, "header")
    assert "<table>" in page and "<details>" not in page
    section.table += [[str(i), str(i)] for i in range(tour.TABLE_ROWS_SHOWN)]
    assert "<details>" in tour._html([section], tmp_path, "header")


def test_gpu_bar_is_in_the_summary(tmp_path):
    bench = tour.Section("Benchmark on the GPU", verdict="1 of 2 rows held", headline_table=True,
                         table=[["row of the bar", "measured", "held"], ["forward at 95% of copy", "97%", "yes"]])
    check = tour.Section("Check", verdict="all within tolerance", table=[["op"], ["layer_norm"]])
    for render in (tour._markdown, tour._html):
        text = render([check, bench], tmp_path, "header")
        details = _position(text, "Details")
        assert _position(text, "forward at 95% of copy") < details  # the bar, in the summary
        assert text.index("layer_norm") > details  # the check's table, only in the details


def test_time_left_scales_the_estimates_by_the_pace_so_far():
    assert tour.time_left([], [10, 20]) == pytest.approx(30)  # nothing finished yet: the estimates as they are
    assert tour.time_left([(300, 300)], [100]) == pytest.approx(100)  # on time so far
    slow = tour.time_left([(300, 600)], [100])  # five minutes took twice their estimate: so will the rest
    assert 180 < slow < 200
    fast = tour.time_left([(300, 150), (300, 150)], [100])
    assert 50 < fast < 55
    assert tour.time_left([(300, 600)], []) == 0
    # a step of a second that took a third of its estimate hardly moves the estimate of the rest
    assert 90 < tour.time_left([(3, 1)], [100]) < 100


def test_every_step_has_an_estimate():
    from layernorm.experiments._common import SIZES

    for size in SIZES:
        for step in ("check", "bench") + tour.EXPERIMENTS:
            assert tour.expected_seconds(step, size) > 0
    assert tour.duration_text(42) == "about 40 s"
    assert tour.duration_text(185) == "about 3 min"
    assert tour.duration_text(3900) == "about 1 h 5 min"


def test_a_pipe_in_a_verdict_does_not_break_the_markdown_table(tmp_path):
    import re

    section = tour.Section("Experiment: distributed", verdict="supported: |loss - loss on 1 process| is 2e-7",
                           table=[["a | b", "c"], ["1", "2"]])
    md = tour._markdown([section], tmp_path, "header")
    summary_row = next(line for line in md.splitlines() if line.startswith("| Experiment: distributed"))
    header_row = next(line for line in md.splitlines() if line.startswith("| a "))
    rows = [summary_row, header_row]
    for row in rows:  # the cells' own pipes are escaped: only the separators remain
        assert len(re.findall(r"(?<!\\)\|", row)) == row.count(" | ") + 2
