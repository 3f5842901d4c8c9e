"""scripts/bench_bar.py: the project's bar, judged from the results.json that ``layernorm bench`` writes."""

import json

import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def bar():
    return load_script("bench_bar")


def record(op, m, n, impl, pass_, ms=1.0, pct=97.0, ratio=1.0, dtype="bf16", weight_dtype="bf16"):
    return {"op": op, "dtype": dtype, "weight_dtype": weight_dtype, "M": m, "N": n, "impl": impl, "pass": pass_,
            "ms": ms, "pct_ceiling": pct, "ratio_to_best_peer": ratio}


def test_ceiling_rows_hold_only_when_every_shape_clears_the_line(bar):
    forward = [record("layer_norm", 32768, n, "layernorm", "forward", pct=96.0) for n in (1024, 2048, 4096, 8192, 16384)]
    (row,) = [r for r in bar.bandwidth_rows(forward) if "forward >= 95%" in r[0]]
    assert row[2] and "N=16384: 96.0%" in row[1]
    forward[2]["pct_ceiling"] = 94.9
    (row,) = [r for r in bar.bandwidth_rows(forward) if "forward >= 95%" in r[0]]
    assert not row[2] and "N=4096: 94.9%" in row[1]


def test_worst_ratio_to_best_peer_and_a_nan_counts_as_worst(bar):
    results = [record("rms_norm", 32768, 768, "layernorm", "backward", ratio=1.1),
               record("rms_norm", 32768, 4096, "layernorm", "forward", ratio=0.99)]
    (row,) = [r for r in bar.bandwidth_rows(results) if "ratio to best peer" in r[0]]
    assert row[1].startswith("worst 0.990 (forward M=32768 N=4096)") and row[2] is False
    results.append(record("rms_norm", 4096, 65536, "layernorm", "forward", ratio=float("nan")))
    (row,) = [r for r in bar.bandwidth_rows(results) if "ratio to best peer" in r[0]]
    assert "nan" in row[1] and not row[2]


def test_add_norm_row_is_against_the_unfused_peers_only(bar):
    add = [record("add_layer_norm", 32768, 1024, impl, "forward", ms=ms)
           for impl, ms in (("layernorm", 1.0), ("torch", 1.3), ("add + layernorm", 1.2), ("torch.compile", 0.9))]
    (row,) = [r for r in bar.bandwidth_rows(add) if r[0].startswith("add_layer_norm forward")]
    assert row[1] == "N=1024: 1.20x" and row[2] is False  # the fused compile peer is not the baseline


def test_host_row_is_ours_within_torch_plus_budget(bar):
    def row(impl, us):
        return {"op": "layer_norm", "dtype": "bf16", "M": 8, "N": 4096, "impl": impl, "pass": "forward+backward", "us": us}

    (held,) = bar.host_rows([row("layernorm", 79.0), row("torch", 40.0)])
    (missed,) = bar.host_rows([row("layernorm", 81.0), row("torch", 40.0)])
    assert held[2] and not missed[2]
    assert "81.0 vs torch 40.0" in missed[1]


def test_command_reads_several_files_and_exits_1_on_a_row_not_held(bar, tmp_path, capsys):
    from layernorm.cli import bench

    fast = bench.Result("layer_norm", "bf16", "bf16", 8, 4096, "layernorm", "forward", ms=0.010,
                          ratio_to_best_peer=1.2)
    slow_torch = bench.Result("layer_norm", "bf16", "bf16", 8, 4096, "torch", "forward", ms=0.012)
    slower = [bench.Result("layer_norm", "bf16", "bf16", 8, 4096, peer, "forward", ms=0.013)
              for peer in ("torch.compile", "liger")]  # every peer measured: the ratio row is whole
    first = bench.write_results(str(tmp_path / "a"), {"device": "cpu"}, 3000.0, "table",
                                [bench.Case("layer_norm", "bf16", "bf16", 8, 4096, results=[fast, slow_torch, *slower])],
                                complete=True)
    host = [{"op": "layer_norm", "dtype": "bf16", "M": 8, "N": 4096, "impl": impl, "pass": "forward+backward",
             "us": us, "note": ""} for impl, us in (("layernorm", 90.0), ("torch", 40.0))]
    second = tmp_path / "b.json"
    second.write_text(json.dumps({"environment": {"device": "cpu"}, "host_time": host}))
    assert bar.main([first, str(second)]) == 1
    out = capsys.readouterr().out
    assert "held      layer_norm forward at M=8, N=4096 no slower than torch: 10.0 us vs torch 12.0 us" in out
    assert "NOT HELD  layer_norm host forward+backward" in out
    assert bar.main([first]) == 0


def test_a_row_measured_in_part_is_partial_not_held(bar):
    forward = [record("layer_norm", 32768, n, "layernorm", "forward", pct=96.0) for n in (1024, 2048)]
    (row,) = [r for r in bar.bandwidth_rows(forward) if "forward >= 95%" in r[0]]
    assert row[2] is None and "(2 of 5 shapes measured)" in row[1]
    forward[0]["pct_ceiling"] = 90.0  # what was measured already misses: not held, whatever is missing
    (row,) = [r for r in bar.bandwidth_rows(forward) if "forward >= 95%" in r[0]]
    assert row[2] is False


def test_a_ratio_without_every_peer_is_partial(bar):
    results = [record("layer_norm", 32768, 1024, impl, "forward", ratio=1.05) for impl in ("layernorm", "torch", "liger")]
    (row,) = [r for r in bar.bandwidth_rows(results) if "ratio to best peer" in r[0]]
    assert row[2] is None and "not measured against torch.compile" in row[1]
    results.append(record("layer_norm", 32768, 1024, "torch.compile", "forward"))
    (row,) = [r for r in bar.bandwidth_rows(results) if "ratio to best peer" in r[0]]
    assert row[2] is True


def test_partial_rows_do_not_pass_the_bar(bar, tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"results": [record("layer_norm", 32768, 1024, "layernorm", "forward", pct=99.0)]}))
    assert bar.main([str(path)]) == 1
    assert "partial" in capsys.readouterr().out
