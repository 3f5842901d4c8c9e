"""layernorm.cli.hosttime and `layernorm bench --host-time`, on the CPU (the figures mean nothing here;
the pipeline, the records and the bar's rule are what is checked)."""

import json

import torch

from layernorm.cli import bench, hosttime


def test_host_us_counts_only_the_timed_calls():
    calls = []
    us = hosttime.host_us(lambda: calls.append(1), 50, "cpu")
    assert len(calls) == 50 + 5  # a tenth as warm-up
    assert 0 < us < 1e4


def test_measure_every_impl_and_pass(monkeypatch, capsys):
    monkeypatch.setattr(bench, "DEVICE", "cpu")
    impls = bench.implementations("add_layer_norm", ["torch"])

    def refuses(x, r, w, b, eps):
        raise ValueError("no such shape")

    impls["refuses"] = refuses
    rows = bench.measure_host_time({"add_layer_norm": impls}, type("Args", (), {"host_calls": 3})())
    assert {(r.impl, r.M, r.N, r.pass_) for r in rows} == {
        (i, 8, n, p) for i in ("torch", "refuses") for n in (1024, 4096) for p in hosttime.HOST_PASSES}
    assert all(r.us > 0 and not r.note for r in rows if r.impl == "torch")
    assert all(r.note.startswith("failed: ValueError") for r in rows if r.impl == "refuses")
    hosttime.print_table(rows)
    assert "add_layer_norm bf16 8x4096 forward+backward" in capsys.readouterr().out


def test_results_file_holds_the_host_rows(tmp_path):
    rows = [hosttime.HostTime("rms_norm", "bf16", 8, 1024, "torch", "forward", 12.5)]
    path = bench.write_results(str(tmp_path), {"device": "cpu"}, float("nan"), "table", [], host_time=rows)
    with open(path) as f:
        (record,) = json.load(f)["host_time"]
    assert record == {"op": "rms_norm", "dtype": "bf16", "M": 8, "N": 1024, "impl": "torch", "pass": "forward",
                      "us": 12.5, "note": ""}


def test_inputs_require_grad_for_every_operand():
    x, r, w, b = hosttime._inputs("add_rms_norm", 2, 8, torch.float32, "cpu")
    assert b is None and all(t.requires_grad for t in (x, r, w))
