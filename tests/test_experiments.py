"""Every experiment's ``--smoke`` run, through the public command line.

Each must exit 0 and leave metrics.csv, summary.json (with a verdict) and a
PNG in --out, every number finite (BatchNorm at batch size 1 is the one
documented exception: it cannot train there and is recorded as NaN/null).
"""

import csv
import json
import math

import pytest

from layernorm.cli import main
from layernorm.experiments import EXPERIMENTS, _common


def _numbers(value):
    """Every number inside a JSON value."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_smoke_run_writes_its_files(name, tmp_path, capsys):
    out = tmp_path / name
    assert main(["experiment", name, "--smoke", "--device", "cpu", "--out", str(out)]) == 0

    printed = capsys.readouterr().out
    assert f"VERDICT {name}: " in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == name
    assert summary["verdict"].split(":")[0] in ("supported", "refuted")
    assert all(math.isfinite(x) for x in _numbers(summary))
    assert list(out.glob("*.png")) and all(p.stat().st_size > 1000 for p in out.glob("*.png"))
    assert not list(out.glob(".*.tmp"))  # atomic writes leave nothing behind

    if name == "small-batch":  # BatchNorm cannot train at batch size 1: reported, not a crash
        assert summary["test_accuracy"]["batchnorm"]["1"] is None  # NaN, written as null
        assert "BatchNorm cannot train" in summary["verdict"]
        assert 0.0 < summary["test_accuracy"]["layernorm"]["1"] <= 1.0

    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert rows
    for row in rows:
        cannot_train = name == "small-batch" and row["norm"] == "batchnorm" and row["batch_size"] == "1"
        for key, value in row.items():
            try:
                number = float(value)
            except (TypeError, ValueError):  # text columns and empty cells
                continue
            assert math.isfinite(number) or cannot_train, (key, row)


def test_same_seed_same_numbers(tmp_path):
    from layernorm.experiments import run_experiment

    a = run_experiment("transformer", tmp_path / "a", smoke=True, device="cpu", seed=3)
    b = run_experiment("transformer", tmp_path / "b", smoke=True, device="cpu", seed=3)
    assert a["final_val_loss"] == b["final_val_loss"]
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()


def test_own_text_file(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 400)
    assert main(["experiment", "rnn", "--smoke", "--device", "cpu", "--data", str(text), "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["corpus"] == str(text)


def test_missing_text_file_is_an_error(tmp_path):
    assert main(["experiment", "rnn", "--smoke", "--data", str(tmp_path / "missing.txt")]) == 2


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "m.csv"
    _common.write_csv(path, [{"a": 1, "b": float("nan")}, {"a": 2, "c": 0.5}])
    assert path.read_text() == "a,b,c\n1,nan,\n2,,0.5\n"
    _common.write_json(tmp_path / "s.json", {"x": float("nan"), "y": [1.0]})
    assert json.loads((tmp_path / "s.json").read_text()) == {"x": None, "y": [1.0]}
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*"))


def test_ln_lstm_cell_uses_layernorm():
    import torch

    from layernorm import LayerNorm
    from layernorm.experiments.rnn import LayerNormLSTMCell

    cell = LayerNormLSTMCell(8, 16)
    assert sum(isinstance(m, LayerNorm) for m in cell.modules()) == 3
    h, c = cell(torch.randn(4, 8), (torch.zeros(4, 16), torch.zeros(4, 16)), 0)
    assert h.shape == c.shape == (4, 16)


def test_cuda_without_a_gpu_is_a_clean_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["experiment", "transformer", "--device", "cuda", "--out", str(tmp_path)]) == 2


def test_cross_process_batchnorm_is_batchnorm_on_one_process():
    """The synced BatchNorm of the distributed experiment: same outputs, gradients
    and running statistics as torch.nn.BatchNorm1d when there is one process."""
    import torch
    import torch.distributed as dist

    from layernorm.experiments.distributed import CrossProcessBatchNorm1d, free_port

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        ours, ref = CrossProcessBatchNorm1d(6), torch.nn.BatchNorm1d(6)
        for _ in range(3):
            x = torch.randn(16, 6) * 3 + 5  # a mean far from 0: the shifted sums must stay precise
            xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
            ya, yb = ours(xa), ref(xb)
            dy = torch.randn_like(ya)
            ya.backward(dy)
            yb.backward(dy)
            torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad)
        torch.testing.assert_close(ours.running_mean, ref.running_mean)
        torch.testing.assert_close(ours.running_var, ref.running_var)
    finally:
        dist.destroy_process_group()


# ---- sizes: smoke, quick, default ---------------------------------------------
# The quick runs take minutes, so these tests check the wiring, not the runs.


def _flat_numbers(cfg, prefix=""):
    """{"model.n_layer": 8, "steps": 300, ...}; None (text_chars: all of it) counts as infinite."""
    flat = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(_flat_numbers(value, f"{prefix}{key}."))
        elif value is None or isinstance(value, (int, float)):
            flat[prefix + key] = math.inf if value is None else value
    return flat


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_quick_size_lies_between_smoke_and_default(name):
    from layernorm.experiments import experiment_module

    config = experiment_module(name).config
    smoke, quick, default = (_flat_numbers(config(size)) for size in _common.SIZES)
    assert smoke.keys() == quick.keys() == default.keys()
    for key in quick:
        assert smoke[key] <= quick[key] <= default[key], (key, smoke[key], quick[key], default[key])
    assert quick != smoke  # quick is more than smoke somewhere (steps, data or model)


def test_default_sizes_are_the_documented_runs():
    """docs/experiments.md documents these; the quick size must not have moved them."""
    from layernorm.experiments import experiment_module

    def config(name):
        return experiment_module(name).config("default")

    assert config("small-batch") == {"examples": 40_000, "mnist1d_samples": 5_000}
    assert config("running-stats") == {"train_steps": 3_000, "mnist1d_samples": 5_000, "companion_examples": 64}
    assert config("rnn")["steps"] == 600 and config("rnn")["d_hidden"] == 256 and config("rnn")["seq_len"] == 64
    assert config("distributed") == {"steps": 300, "mnist1d_samples": 5_000}
    assert config("transformer")["steps"] == 300 and config("transformer")["model"]["n_layer"] == 8


def test_config_returns_a_copy():
    from layernorm.experiments import transformer

    transformer.config("quick")["model"]["n_layer"] = 99
    assert transformer.config("quick")["model"]["n_layer"] != 99


def test_resolve_size_keeps_the_smoke_flag_working():
    assert _common.resolve_size(None) == "default"
    assert _common.resolve_size(None, smoke=True) == "smoke"
    assert _common.resolve_size("quick") == "quick"
    assert _common.resolve_size("smoke", smoke=True) == "smoke"
    with pytest.raises(ValueError, match="contradicts"):
        _common.resolve_size("quick", smoke=True)
    with pytest.raises(ValueError, match="unknown experiment size"):
        _common.resolve_size("huge")


@pytest.mark.parametrize("kwargs, size", [({}, "default"), ({"smoke": True}, "smoke"),
                                          ({"size": "quick"}, "quick"), ({"size": "smoke"}, "smoke")])
def test_run_experiment_passes_the_size_to_the_experiment(kwargs, size, tmp_path, monkeypatch):
    from layernorm.experiments import run_experiment, small_batch

    seen = {}
    monkeypatch.setattr(small_batch, "run", lambda **kw: seen.update(kw) or {"verdict": "stub"})
    assert run_experiment("small-batch", tmp_path, device="cpu", **kwargs) == {"verdict": "stub"}
    assert seen["size"] == size


def test_run_experiment_rejects_smoke_with_another_size(tmp_path):
    from layernorm.experiments import run_experiment

    with pytest.raises(ValueError, match="contradicts"):
        run_experiment("small-batch", tmp_path, smoke=True, size="quick", device="cpu")


@pytest.mark.parametrize("flags, size", [([], "default"), (["--smoke"], "smoke"), (["--quick"], "quick")])
def test_cli_size_flags(flags, size, tmp_path, monkeypatch):
    import layernorm.experiments as experiments

    seen = {}
    monkeypatch.setattr(experiments, "run_experiment", lambda name, out, **kw: seen.update(kw))
    assert main(["experiment", "rnn", "--device", "cpu", "--out", str(tmp_path)] + flags) == 0
    assert seen["size"] == size


def test_cli_smoke_and_quick_together_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "rnn", "--smoke", "--quick"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("args, note", [({"size": "smoke"}, " (smoke size: too small to be evidence)"),
                                        ({"smoke": True}, " (smoke size: too small to be evidence)"),
                                        ({"size": "quick"}, " (quick size)"),
                                        ({"size": "default"}, ""), ({}, "")])
def test_verdict_line_names_its_size(args, note, tmp_path, capsys):
    summary = _common.finish("x", tmp_path, [{"a": 1}], {}, "supported: 1 > 0", args, _common.Timer())
    assert summary["verdict"] == "supported: 1 > 0" + note
    assert f"VERDICT x: supported: 1 > 0{note}\n" in capsys.readouterr().out
