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
        assert summary["test_accuracy"]["batchnorm"]["1"]["mean"] is None  # NaN, written as null
        assert "BatchNorm cannot train" in summary["verdict"]
        assert 0.0 < summary["test_accuracy"]["layernorm"]["1"]["mean"] <= 1.0
    assert summary["seeds"] == [0]  # smoke runs one seed, and its verdict says so
    assert summary["verdict"].endswith("(smoke size: too small to be evidence, one seed (0): no spread)")

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

    a = run_experiment("transformer", tmp_path / "a", size="smoke", device="cpu", seed=3)
    b = run_experiment("transformer", tmp_path / "b", size="smoke", device="cpu", seed=3)
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

    assert config("small-batch") == {"examples": 40_000, "mnist1d_samples": 5_000, "seeds": 3}
    assert config("running-stats") == {"train_steps": 3_000, "mnist1d_samples": 5_000, "companion_examples": 64,
                                       "seeds": 3}
    assert config("rnn")["steps"] == 600 and config("rnn")["d_hidden"] == 128 and config("rnn")["seq_len"] == 64
    assert config("distributed") == {"steps": 300, "mnist1d_samples": 5_000, "seeds": 3}
    transformer = config("transformer")
    assert transformer["steps"] == 300 and transformer["model"]["n_layer"] == 8 and transformer["lr"] == 3e-3
    assert transformer["warmup_steps"] == 100


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_default_size_has_a_spread_and_quick_is_one_seed(name):
    from layernorm.experiments import experiment_module

    config = experiment_module(name).config
    assert config("default")["seeds"] >= 3
    assert config("quick")["seeds"] == config("smoke")["seeds"] == 1


def test_config_returns_a_copy():
    from layernorm.experiments import transformer

    transformer.config("quick")["model"]["n_layer"] = 99
    assert transformer.config("quick")["model"]["n_layer"] != 99


def test_resolve_size_accepts_only_the_known_sizes():
    assert [_common.resolve_size(size) for size in _common.SIZES] == list(_common.SIZES)
    with pytest.raises(ValueError, match="unknown experiment size"):
        _common.resolve_size("huge")


@pytest.mark.parametrize("kwargs, size", [({}, "default"), ({"size": "quick"}, "quick"), ({"size": "smoke"}, "smoke")])
def test_run_experiment_passes_the_size_to_the_experiment(kwargs, size, tmp_path, monkeypatch):
    from layernorm.experiments import run_experiment, small_batch

    seen = {}
    monkeypatch.setattr(small_batch, "run", lambda **kw: seen.update(kw) or {"verdict": "stub"})
    assert run_experiment("small-batch", tmp_path, device="cpu", **kwargs) == {"verdict": "stub"}
    assert seen["size"] == size


def test_run_experiment_rejects_an_unknown_size_before_any_work(tmp_path, monkeypatch):
    from layernorm.experiments import run_experiment, small_batch

    monkeypatch.setattr(small_batch, "run", lambda **kw: pytest.fail("ran"))
    with pytest.raises(ValueError, match="unknown experiment size"):
        run_experiment("small-batch", tmp_path, size="huge", device="cpu")


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


@pytest.mark.parametrize("args, note", [
    ({"size": "smoke"}, " (smoke size: too small to be evidence, one seed (0): no spread)"),
    ({"smoke": True}, " (smoke size: too small to be evidence, one seed (0): no spread)"),
    ({"size": "quick", "seed": 4}, " (quick size, one seed (4): no spread)"),
    ({"size": "default", "seeds": [0, 1, 2]}, " (3 seeds (0-2): mean [min, max])"),
    ({"size": "quick", "seeds": [5, 6]}, " (quick size, 2 seeds (5-6): mean [min, max])"),
    ({}, " (one seed (0): no spread)")])
def test_verdict_line_names_its_size_and_seeds(args, note, tmp_path, capsys):
    summary = _common.finish("x", tmp_path, [{"a": 1}], {}, "supported: 1 > 0", args, _common.Timer())
    assert summary["verdict"] == "supported: 1 > 0" + note
    assert f"VERDICT x: supported: 1 > 0{note}\n" in capsys.readouterr().out


# ---- seeds, spread and the verdict rule ---------------------------------------


def test_seed_list_counts_on_from_the_first_seed():
    assert _common.seed_list(5, 3) == [5, 6, 7]
    assert _common.run_seeds(2, None, {"seeds": 3}) == [2, 3, 4]  # the size's own count
    assert _common.run_seeds(2, 1, {"seeds": 3}) == [2]  # --seeds wins
    with pytest.raises(ValueError, match="at least one seed"):
        _common.seed_list(0, 0)


def test_spread_mean_range_and_text():
    spread = _common.Spread([0.2, 0.5, 0.35])
    assert (spread.min, spread.max) == (0.2, 0.5)
    assert spread.mean == pytest.approx(0.35)
    assert spread.text(".2f") == "0.35 [0.20, 0.50]"
    assert spread.text(".1f", 100, "%") == "35.0% [20.0, 50.0]"
    assert _common.Spread([0.25]).text(".2f") == "0.25"  # one seed: no range to show
    broken = _common.Spread([0.3, float("nan")])  # a seed that diverged is not averaged away
    assert broken.broken and math.isnan(broken.mean) and math.isnan(broken.max)
    assert broken.as_dict()["per_seed"][0] == 0.3


@pytest.mark.parametrize("better, worse, margin, higher, expected", [
    ([0.60, 0.61, 0.62], [0.44, 0.47, 0.50], 0.0, True, True),
    ([0.60, 0.61, 0.62], [0.44, 0.47, 0.605], 0.0, True, False),  # one seed of the other arm is inside the range
    ([0.60, 0.61, 0.62], [0.44, 0.47, 0.595], 0.01, True, False),  # separated, but not by the margin
    ([2.30, 2.35], [2.40, 2.50], 0.0, False, True),  # losses: lower is better
    ([2.30, 2.45], [2.40, 2.50], 0.0, False, False),
    ([2.30, float("nan")], [2.40, 2.50], 0.0, False, False),  # a diverged seed is the worst result
    ([0.50], [float("nan")] * 3, 0.0, True, True),  # the other arm could not train at all
])
def test_separated_is_judged_on_the_worst_and_best_seeds(better, worse, margin, higher, expected):
    assert _common.separated(better, worse, margin=margin, higher_is_better=higher) is expected


def _small_batch_accuracies(ln4, bn4, base=0.6):
    """Accuracies of every (norm, batch size): ``base`` wherever not given."""
    from layernorm.experiments import small_batch

    acc = {(n, b): _common.Spread([base, base, base]) for n in _common.NORMS for b in small_batch.BATCH_SIZES}
    acc[("layernorm", 4)], acc[("batchnorm", 4)] = _common.Spread(ln4), _common.Spread(bn4)
    acc[("batchnorm", 1)] = _common.Spread([float("nan")] * 3)
    return acc


def test_small_batch_verdict_flips_when_the_seeds_overlap():
    from layernorm.experiments import small_batch

    holds, verdict = small_batch.judge(_small_batch_accuracies([0.60, 0.61, 0.62], [0.40, 0.44, 0.48]))
    assert holds and verdict.startswith("supported: at batch size 4 LayerNorm 61.0% [60.0, 62.0] vs BatchNorm "
                                        "44.0% [40.0, 48.0]")
    assert "BatchNorm cannot train (raises)" in verdict
    # the means are as far apart as before; one BatchNorm seed reaches LayerNorm's worst
    holds, verdict = small_batch.judge(_small_batch_accuracies([0.60, 0.61, 0.62], [0.40, 0.32, 0.60]))
    assert not holds and verdict.startswith("refuted")


def _running_stats_measures(bn_gap, ln_gap, bn_x4, ln_x4):
    from layernorm.experiments import running_stats

    def measures(gap):
        return {"test_acc": _common.Spread([0.6] * 3), "train_eval_tv": _common.Spread(gap),
                "train_eval_flips": _common.Spread([0.1] * 3), "companions8_tv": _common.Spread(gap)}

    curves = {(n, kind, v): _common.Spread([0.5] * 3) for n in _common.NORMS
              for kind, values in (("scale", running_stats.SCALES), ("shift", running_stats.SHIFTS)) for v in values}
    curves[("batchnorm", "scale", 4.0)], curves[("layernorm", "scale", 4.0)] = (_common.Spread(bn_x4),
                                                                                _common.Spread(ln_x4))
    return {"batchnorm": measures(bn_gap), "layernorm": measures(ln_gap), "none": measures([0.0] * 3)}, curves


def test_running_stats_verdict_flips_when_the_seeds_overlap():
    from layernorm.experiments import running_stats

    assert running_stats.judge(*_running_stats_measures([0.18, 0.2, 0.22], [0, 0, 0], [0.3, 0.35, 0.4],
                                                        [0.6, 0.6, 0.6]))[0]
    # one LayerNorm seed as inaccurate on scaled inputs as BatchNorm's best
    assert not running_stats.judge(*_running_stats_measures([0.18, 0.2, 0.22], [0, 0, 0], [0.3, 0.35, 0.4],
                                                            [0.6, 0.4, 0.6]))[0]
    # one LayerNorm seed with a gap: BatchNorm's smallest is no longer ten times LayerNorm's largest
    assert not running_stats.judge(*_running_stats_measures([0.18, 0.2, 0.22], [0, 0.02, 0], [0.3, 0.35, 0.4],
                                                            [0.6, 0.6, 0.6]))[0]


def test_rnn_verdict_flips_when_the_seeds_overlap():
    from layernorm.experiments import rnn

    seconds = {k: _common.Spread([60.0] * 3) for k in rnn.CELLS}
    reach = {"lstm": [600] * 3, "ln-lstm": [250, 300, 350], "bn-lstm": [300, 300, None]}
    final = {"lstm": _common.Spread([2.60, 2.62, 2.65]), "ln-lstm": _common.Spread([2.35, 2.40, 2.45]),
             "bn-lstm": _common.Spread([2.4] * 3)}
    holds, verdict = rnn.judge(final, reach, 600, seconds)
    assert holds and "at step 300 [250, 350] of 600" in verdict and "BN-LSTM: steps 300, 300, never" in verdict
    final["ln-lstm"] = _common.Spread([2.35, 2.40, 2.61])  # one LN-LSTM seed ends above the LSTM's best
    assert not rnn.judge(final, reach, 600, seconds)[0]
    final["ln-lstm"] = _common.Spread([2.35, 2.40, 2.45])
    reach["ln-lstm"] = [250, 300, None]  # one seed never reaches its LSTM's final
    assert not rnn.judge(final, reach, 600, seconds)[0]


def test_distributed_verdict_flips_when_the_seeds_overlap():
    from layernorm.experiments import distributed

    figures = ({n: 1.0 for n in distributed.NORMS},) * 3

    def judge(ln, bn):
        gap = {"layernorm": _common.Spread(ln), "batchnorm": _common.Spread(bn),
               "syncbatchnorm": _common.Spread([1e-3] * 3)}
        return distributed.judge(gap, gap, *figures, 4, 300)

    assert judge([2e-7, 3e-7, 2.4e-7], [0.3, 0.4, 0.5])[0]
    assert not judge([2e-7, 3e-7, 2e-3], [0.3, 0.4, 0.5])[0]  # one LayerNorm seed moved by more than 1e-3
    assert not judge([1e-4, 2e-4, 3e-4], [0.3, 0.4, 2e-3])[0]  # one BatchNorm seed within 10x of LayerNorm's


def _transformer_finals(pre_free, pre_warm, post_free, post_warm):
    return {("pre-ln", False): _common.Spread(pre_free), ("pre-ln", True): _common.Spread(pre_warm),
            ("post-ln", False): _common.Spread(post_free), ("post-ln", True): _common.Spread(post_warm)}


def test_transformer_verdict_states_both_effects_and_flips_on_overlap():
    """Each arm is judged by its worst seed: against the line 0.5 below the baseline (2.832 here), and
    post-LN's worst seed without warm-up against its worst with warm-up."""
    from layernorm.experiments import transformer

    baseline = 3.332
    good = _transformer_finals([2.70, 2.72, 2.75], [2.60, 2.62, 2.64], [2.58, 2.86, 3.34], [2.60, 2.65, 2.70])
    holds, verdict = transformer.judge(good, baseline, 3e-3, 100)
    assert holds and verdict.startswith("supported: at peak lr 0.003")
    assert "post-LN 2.927 [2.580, 3.340] without" in verdict
    assert "Pre-LN trains without warm-up (worst seed at least 0.5 below the baseline): supported" in verdict
    assert verdict.endswith("post-LN needs warm-up (its worst seed gets there with warm-up, and ends more than 0.1 "
                            "higher without): supported")
    # without warm-up post-LN's worst seed comes within 0.1 of the worst with warm-up: no need shown
    no_need = _transformer_finals([2.70, 2.72, 2.75], [2.60, 2.62, 2.64], [2.58, 2.66, 2.79], [2.60, 2.65, 2.70])
    holds, verdict = transformer.judge(no_need, baseline, 3e-3, 100)
    assert not holds and verdict.endswith("higher without): refuted") and "baseline): supported" in verdict
    assert transformer.judge(_transformer_finals([2.70] * 3, [2.6] * 3, [2.58, 2.66, 2.81], [2.60, 2.65, 2.70]),
                             baseline, 3e-3, 100)[0]  # ... and just past the margin it is shown
    # one post-LN seed with warm-up stays on the plateau: warm-up does not make it train either
    unreliable = _transformer_finals([2.70, 2.72, 2.75], [2.6] * 3, [2.58, 2.86, 3.34], [2.60, 3.33, 2.70])
    assert not transformer.judge(unreliable, baseline, 3e-3, 100)[0]
    # pre-LN's worst seed ends less than 0.5 below the baseline
    weak = _transformer_finals([2.70, 2.72, 2.90], [2.60, 2.62, 2.64], [2.58, 2.86, 3.34], [2.60, 2.65, 2.70])
    holds, verdict = transformer.judge(weak, baseline, 3e-3, 100)
    assert not holds and "baseline): refuted" in verdict
    diverged = _transformer_finals([2.70, float("nan"), 2.75], [2.6] * 3, [3.34] * 3, [2.6] * 3)
    assert not transformer.judge(diverged, baseline, 3e-3, 100)[0]


def test_transformer_warmup_schedule():
    from layernorm.experiments.transformer import learning_rate

    assert learning_rate(0, 1e-2, 300, 0) == pytest.approx(1e-2)  # no warm-up: the peak from the first step
    assert learning_rate(0, 1e-2, 300, 100) == pytest.approx(1e-4)
    assert learning_rate(49, 1e-2, 300, 100) == pytest.approx(5e-3)
    assert learning_rate(100, 1e-2, 300, 100) == pytest.approx(1e-2)
    assert learning_rate(300, 1e-2, 300, 100) == pytest.approx(1e-3)  # the cosine ends at a tenth


def test_transformer_runs_every_arm_with_every_seed(tmp_path):
    """The smoke run with two seeds: pre-LN and post-LN, with and without warm-up, each seed; the summary
    carries the spread (mean, min, max and every seed's value)."""
    assert main(["experiment", "transformer", "--smoke", "--seeds", "2", "--seed", "3", "--device", "cpu",
                 "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seeds"] == [3, 4]
    assert set(summary["final_val_loss"]) == {"pre-ln, no warm-up", "pre-ln, warm-up", "post-ln, no warm-up",
                                              "post-ln, warm-up"}
    for arm in summary["final_val_loss"].values():
        assert len(arm["per_seed"]) == 2
        assert arm["min"] <= arm["mean"] <= arm["max"]
        assert arm["min"] == min(arm["per_seed"]) and arm["max"] == max(arm["per_seed"])
    assert summary["verdict"].endswith("(smoke size: too small to be evidence, 2 seeds (3-4): mean [min, max])")
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    arms = {(r["variant"], r["warmup"], r["seed"]) for r in rows}
    assert arms == {(v, w, s) for v in ("pre-ln", "post-ln") for w in ("True", "False") for s in ("3", "4")}


@pytest.mark.parametrize("flags, seeds", [([], None), (["--seeds", "3"], 3), (["--seeds", "1"], 1)])
def test_cli_seeds_option(flags, seeds, tmp_path, monkeypatch):
    import layernorm.experiments as experiments

    seen = {}
    monkeypatch.setattr(experiments, "run_experiment", lambda name, out, **kw: seen.update(kw))
    assert main(["experiment", "small-batch", "--device", "cpu", "--out", str(tmp_path)] + flags) == 0
    assert seen["seeds"] == seeds


def test_cli_rejects_zero_seeds(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "rnn", "--seeds", "0"])
    assert exit_info.value.code == 2
    assert "at least one seed" in capsys.readouterr().err


def test_run_experiment_passes_the_seeds_to_the_experiment(tmp_path, monkeypatch):
    from layernorm.experiments import run_experiment, small_batch

    seen = {}
    monkeypatch.setattr(small_batch, "run", lambda **kw: seen.update(kw) or {"verdict": "stub"})
    run_experiment("small-batch", tmp_path, device="cpu", seed=7, seeds=2)
    assert (seen["seed"], seen["seeds"]) == (7, 2)


def test_tokens_per_second_times_torchs_norms_then_ours(monkeypatch):
    """The GPU throughput of the transformer experiment, run on the CPU with a tiny model (the CUDA
    synchronizations stubbed): torch.nn.LayerNorm first, then the same model patched."""
    import torch

    import layernorm
    from layernorm.experiments import transformer

    seen = []
    for name in ("patch", "unpatch"):
        original = getattr(layernorm, name)
        monkeypatch.setattr(layernorm, name, lambda model, _o=original, _n=name: (seen.append(_n), _o(model))[1])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    cfg = transformer.GPTConfig(vocab_size=13, block_size=16, n_layer=1, n_head=2, n_embd=16)
    got = transformer.tokens_per_second(13, "cpu", steps=2, cfg=cfg, batch=4)
    assert seen == ["unpatch", "patch"]
    assert set(got) == {"torch.nn.LayerNorm", "layernorm"}
    assert all(v > 0 and math.isfinite(v) for v in got.values())
