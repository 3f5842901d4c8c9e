"""``layernorm bench`` on the CPU: the whole pipeline with a stub timer, the kernels on Triton's
interpreter (``TRITON_INTERPRET=1``); the figures mean nothing here, the plumbing is what is tested."""

import pytest
import torch


def test_bench_pipeline_on_cpu(monkeypatch, tmp_path, interpreted_kernels):
    """Inputs, correctness gate, timing loop, table, summary and plot, with do_bench stubbed out."""
    from layernorm.cli import bench

    monkeypatch.setattr(bench, "DEVICE", "cpu")
    calls = []
    monkeypatch.setattr(bench, "_do_bench", lambda fn, args, grad_to_none=None: calls.append(fn()) or 0.5)
    cases = [bench.Case("layer_norm", "bf16", "fp32", 8, 24), bench.Case("add_rms_norm", "fp32", "fp32", 8, 40)]
    for case in cases:
        bench.measure_case(case, bench.implementations(case.op, ["layernorm", "torch", "add + layernorm"]),
                           list(bench.PASSES), 3000.0, None)
    results = [r for c in cases for r in c.results]
    assert {r.impl for r in results} == {"layernorm", "torch", "add + layernorm"}
    assert all(not r.note and r.ratio_to_best_peer == 1.0 for r in results)  # same stub time everywhere
    expected = 5 * 8 * 24 * 2 / 0.5e-3 / 1e9  # both passes of layer_norm: 5·M·N·s bytes
    assert any(abs(r.gbps - expected) < 1e-9 for r in results if r.pass_ == "both" and r.op == "layer_norm")
    bench.print_table(cases, 3000.0)
    summary = {(s.op, s.pass_): s for s in bench.summarize(results)}
    assert set(summary) == {(c.op, p) for c in cases for p in bench.PASSES}
    assert all(s.shapes == s.compared == s.fastest == 1 and s.worst_ratio == 1.0 for s in summary.values())
    big = bench.Case("layer_norm", "bf16", "bf16", 4096, 32, results=[
        bench.Result("layer_norm", "bf16", "bf16", 4096, 32, "layernorm", "forward", 1.0, 2.0, 0.1, 1.0)])
    assert bench.plot([big], str(tmp_path)) == [str(tmp_path / "layer_norm.png")]


def test_bench_graph_times_progress_and_results_file(monkeypatch, tmp_path, capsys, interpreted_kernels):
    """--cuda-graph: GPU-only times per pass (backward = both - forward); results.json after each case."""
    import json
    import types

    from layernorm.cli import bench

    monkeypatch.setattr(bench, "DEVICE", "cpu")
    monkeypatch.setattr(bench, "_do_bench", lambda fn, args, grad_to_none=None: (fn(), 0.5)[1])
    graph_calls = []

    def fake_graph_ms(fn, args, leaves):  # forward first, then both
        fn()
        graph_calls.append(fn)
        return 0.1 if len(graph_calls) % 2 else 0.25

    monkeypatch.setattr(bench, "_graph_ms", fake_graph_ms)
    args = types.SimpleNamespace(cuda_graph=True)
    case = bench.Case("layer_norm", "fp32", "fp32", 4, 16)
    bench.measure_case(case, bench.implementations("layer_norm", ["layernorm", "torch"]), list(bench.PASSES), 3000.0, args)
    graph = {(r.impl, r.pass_): r.graph_ms for r in case.results}
    assert graph[("layernorm", "forward")] == 0.1 and graph[("layernorm", "both")] == 0.25
    assert abs(graph[("torch", "backward")] - 0.15) < 1e-12
    r = next(r for r in case.results if r.pass_ == "backward")
    assert abs(r.graph_gbps - 3 * 4 * 16 * 4 / 0.15e-3 / 1e9) < 1e-9
    bench.print_progress(case)
    bench.print_table([case], 3000.0)
    printed = capsys.readouterr().out
    assert "[graph 150.0 us" in printed and "graph us" in printed
    path = bench.write_results(str(tmp_path), {"device": "cpu"}, 3000.0, "table", [case])
    saved = json.loads(open(path).read())
    assert saved["complete"] is False and len(saved["results"]) == len(case.results)
    assert saved["results"][0]["graph_ms"] == 0.1 and "pass" in saved["results"][0]


def test_summary_counts_where_ours_is_fastest_and_names_the_worst_shape():
    from layernorm.cli import bench

    def result(impl, n, pct, ratio):
        return bench.Result("layer_norm", "bf16", "bf16", 32768, n, impl, "forward", pct_ceiling=pct, ratio_to_best_peer=ratio)

    results = [result("layernorm", 768, 90.0, 0.97), result("layernorm", 4096, 97.0, 1.02),
               result("layernorm", 65536, 93.0, float("nan")),  # no peer could run this shape
               result("torch", 768, 93.0, 1.0)]
    (s,) = bench.summarize(results)
    assert (s.shapes, s.compared, s.fastest) == (3, 2, 1)
    assert (s.worst_ratio, s.worst_shape) == (0.97, "32768x768")
    assert (s.pct_ceiling_min, s.pct_ceiling_max) == (90.0, 97.0)


def test_bench_gate_rejects_a_wrong_implementation(monkeypatch):
    from layernorm.cli import bench

    monkeypatch.setattr(bench, "DEVICE", "cpu")
    monkeypatch.setattr(bench, "_do_bench", lambda fn, args, grad_to_none=None: 1.0)
    case = bench.Case("layer_norm", "fp32", "fp32", 4, 16)
    bench.measure_case(case, {"broken": lambda x, r, w, b, eps: (x * 2,)}, ["forward"], 3000.0, None)
    assert case.results[0].note.startswith("wrong output")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where no GPU is")
def test_bench_without_a_gpu_says_so_and_returns_2(capsys):
    from layernorm.cli import main

    assert main(["bench"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
