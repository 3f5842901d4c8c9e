"""Running statistics: BatchNorm's output for an input depends on the mode and
on the batch; LayerNorm's does not.

Claim (Ba et al., 2016, sections 1 and 3): batch normalization normalizes with
statistics of the mini-batch while training and with running averages of them
at test time, so one example's output depends on the other examples in its
batch and changes between the two modes. Layer normalization computes its
statistics from the example alone and performs "exactly the same computation
at training and test times".

Here: MLPs with BatchNorm, LayerNorm and no normalization are trained on
MNIST-1D (batch size 32), then measured on the test set:

1. train/eval gap - the total-variation distance between the predicted class
   distributions in train mode (batch statistics, test batches of 32) and in
   eval mode, and the fraction of predicted classes that change;
2. batch companions - one example put into 16 different random batches (of
   8 and of 32, train mode): the spread of its predictions;
3. shifted and scaled inputs - accuracy when every test input becomes
   ``a * x + b``. With bias-free linear layers in front of the norm, LayerNorm
   is exactly invariant to the scale ``a`` (not to the shift ``b``); BatchNorm
   in eval mode normalizes with the training set's statistics, which no longer
   fit.

Every model trains with each seed (3 at the default size). Verdict rule
(``judge``): supported when, seed against seed, BatchNorm's smallest
train/eval gap and companion spread are more than ten times LayerNorm's
largest, and LayerNorm's worst seed is more accurate on inputs scaled by 4
than BatchNorm's best.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ._common import (LABELS, NORMS, Spread, Timer, accuracy, finish, mnist1d, mlp, plot_spread, progress, pyplot,
                      resolve_size, run_seeds, save_figure, seeds_caption, separated)

SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
SHIFTS = (-1.0, -0.5, 0.0, 0.5, 1.0)
COMPANION_BATCHES = (8, 32)

# train_steps: at batch size 32; companion_examples: test examples each put
# into random batches. The default run takes about 12 s on 2 cores, less than
# any quick run: quick is the default run itself, at one seed.
CONFIGS = {
    "smoke": {"train_steps": 100, "mnist1d_samples": 1_000, "companion_examples": 16, "seeds": 1},
    "quick": {"train_steps": 3_000, "mnist1d_samples": 5_000, "companion_examples": 64, "seeds": 1},
    "default": {"train_steps": 3_000, "mnist1d_samples": 5_000, "companion_examples": 64, "seeds": 3},
}

Measures = Dict[str, Dict[str, Spread]]  # norm -> measure -> its values over the seeds
Curves = Dict[Tuple[str, str, float], Spread]  # (norm, "scale"/"shift", value) -> accuracy over the seeds


def config(size: str) -> dict:
    """The run's parameters at ``size`` ("smoke", "quick" or "default")."""
    return dict(CONFIGS[size])


def train(norm: str, data, steps: int, seed: int, device: str) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = mlp(norm).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, fused=True)  # fused: one kernel, less Python per step
    x, y = data["x"].to(device), data["y"].to(device)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in progress(range(steps), desc=f"train {norm}"):
        idx = torch.randint(len(x), (32,), generator=order).to(device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Per-row distance between two class distributions, in [0, 1]."""
    return 0.5 * (p - q).abs().sum(-1)


@torch.no_grad()
def train_eval_gap(model, x) -> dict:
    """Predictions with batch statistics (train mode, batches of 32) vs eval mode."""
    scratch = copy.deepcopy(model).train()  # a copy: train mode would move the running statistics
    p_train = torch.cat([scratch(x[i:i + 32]).softmax(-1) for i in range(0, len(x) - 31, 32)])
    p_eval = model.eval()(x[:len(p_train)]).softmax(-1)
    return {"train_eval_tv": total_variation(p_train, p_eval).mean().item(),
            "train_eval_flips": (p_train.argmax(-1) != p_eval.argmax(-1)).float().mean().item(),
            "train_eval_max_abs": (p_train - p_eval).abs().max().item()}


@torch.no_grad()
def companion_spread(model, x, batch_size: int, seed: int, examples: int = 64, draws: int = 16) -> dict:
    """One example in ``draws`` random batches: how much its prediction moves (train mode)."""
    scratch = copy.deepcopy(model).train()
    g = torch.Generator().manual_seed(seed)
    tv, flips, max_abs = [], [], 0.0
    for i in range(examples):
        probs = []
        for _ in range(draws):
            others = torch.randint(len(x), (batch_size - 1,), generator=g).to(x.device)
            batch = torch.cat([x[i:i + 1], x[others]])
            probs.append(scratch(batch)[0].softmax(-1))
        probs = torch.stack(probs)
        mean = probs.mean(0, keepdim=True)
        tv.append(total_variation(probs, mean).mean().item())
        flips.append(float(len(set(probs.argmax(-1).tolist())) > 1))
        max_abs = max(max_abs, (probs - mean).abs().max().item())
    return {f"companions{batch_size}_tv": sum(tv) / len(tv),
            f"companions{batch_size}_flips": sum(flips) / len(flips),
            f"companions{batch_size}_max_abs": max_abs}


def judge(measures: Measures, curves: Curves) -> Tuple[bool, str]:
    """The verdict rule, on the seeds' spread: (supported?, the verdict line)."""
    bn, ln = measures["batchnorm"], measures["layernorm"]

    def far_above(key: str) -> bool:  # every BatchNorm seed > 10 x every LayerNorm seed (+ 1e-4)
        return separated(bn[key].values, [10 * v for v in ln[key].values], margin=1e-4)

    x4 = {n: curves[(n, "scale", 4.0)] for n in NORMS}
    holds = (far_above("train_eval_tv") and far_above("companions8_tv")
             and separated(x4["layernorm"].values, x4["batchnorm"].values))
    pct = lambda spread: spread.text(".1f", 100, "%")  # noqa: E731
    verdict = (
        f"{'supported' if holds else 'refuted'}: train/eval prediction gap (total variation) BatchNorm "
        f"{bn['train_eval_tv'].text()} ({pct(bn['train_eval_flips'])} of classes flip) vs LayerNorm "
        f"{ln['train_eval_tv'].text('.1e')}; spread over batch companions (batch 8) {bn['companions8_tv'].text()} vs "
        f"{ln['companions8_tv'].text('.1e')}; test accuracy with inputs x4: BatchNorm {pct(x4['batchnorm'])} "
        f"vs LayerNorm {pct(x4['layernorm'])} (unscaled {pct(bn['test_acc'])} vs {pct(ln['test_acc'])}), "
        f"shifted +1: {pct(curves[('batchnorm', 'shift', 1.0)])} vs {pct(curves[('layernorm', 'shift', 1.0)])}"
    )
    return holds, verdict


def plot(measures: Measures, curves: Curves, seeds: Sequence[int], out: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    names = [LABELS[n] for n in NORMS]
    keys = [("train_eval_tv", "train vs eval mode"), ("companions8_tv", "companions, batch 8"),
            ("companions32_tv", "companions, batch 32")]
    width = 0.25
    for j, (key, label) in enumerate(keys):
        spreads = [measures[n][key] for n in NORMS]
        bars = axes[0].bar([i + (j - 1) * width for i in range(len(NORMS))], [m.mean for m in spreads], width,
                           label=label,
                           yerr=[[m.mean - m.min for m in spreads], [m.max - m.mean for m in spreads]], capsize=2)
        axes[0].bar_label(bars, fmt="%.2g", fontsize=7)
    axes[0].set_xticks(range(len(NORMS)), names)
    axes[0].set_ylabel("mean total-variation distance of predictions")
    axes[0].set_title("How much one example's prediction moves")
    axes[0].legend(fontsize=8)
    for ax, kind, title, xlabel, values in ((axes[1], "scale", "scaled", "input scale a (x -> a x)", SCALES),
                                            (axes[2], "shift", "shifted", "input shift b (x -> x + b)", SHIFTS)):
        for n in NORMS:
            plot_spread(ax, values, [curves[(n, kind, v)] for v in values], LABELS[n], scale=100, marker="o")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%), eval mode")
        ax.set_title(f"Test inputs {title}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_xscale("log", base=2)
    bars = ", error bars: min to max" if len(seeds) > 1 else ""
    fig.suptitle(f"Running statistics: BatchNorm vs LayerNorm on MNIST-1D ({seeds_caption(seeds)}{bars})")
    save_figure(fig, out / "running_stats.png")


def measure_one_seed(norm: str, dataset, cfg: dict, seed: int, device: str) -> Tuple[dict, list]:
    """Train one model with one seed; its measures and its accuracy on shifted and scaled inputs."""
    x_test, y_test = dataset["x_test"].to(device), dataset["y_test"].to(device)
    model = train(norm, dataset, cfg["train_steps"], seed, device)
    measures = {"test_acc": accuracy(model, x_test, y_test), **train_eval_gap(model, x_test)}
    for b in COMPANION_BATCHES:
        measures.update(companion_spread(model, x_test, b, seed, examples=cfg["companion_examples"]))
    curves = []
    for kind, values in (("scale", SCALES), ("shift", SHIFTS)):
        for v in values:
            xs = x_test * v if kind == "scale" else x_test + v
            curves.append({"norm": norm, "seed": seed, "kind": kind, "value": v,
                           "test_acc": accuracy(model, xs, y_test)})
    return measures, curves


def run(out: Path, size: str = "default", device: str = "cpu", seed: int = 0, data: Optional[Path] = None,
        seeds: Optional[int] = None) -> dict:
    timer = Timer()
    size = resolve_size(size)
    cfg = config(size)
    seeds = run_seeds(seed, seeds, cfg)
    dataset = mnist1d(cfg["mnist1d_samples"])
    per_seed, curve_rows = {}, []
    for run_seed in seeds:
        for norm in NORMS:
            per_seed[(norm, run_seed)], curves = measure_one_seed(norm, dataset, cfg, run_seed, device)
            curve_rows += curves
    keys = list(per_seed[(NORMS[0], seeds[0])])
    measures = {n: {k: Spread(per_seed[(n, s)][k] for s in seeds) for k in keys} for n in NORMS}
    by_key = {(c["norm"], c["kind"], c["value"], c["seed"]): c["test_acc"] for c in curve_rows}
    curves = {(n, kind, v): Spread(by_key[(n, kind, v, s)] for s in seeds)
              for n in NORMS for kind, values in (("scale", SCALES), ("shift", SHIFTS)) for v in values}
    plot(measures, curves, seeds, out)
    # one long table: (seed, norm, measure, input transform value, result)
    rows = [{"seed": s, "norm": n, "measure": k, "input_value": "", "result": per_seed[(n, s)][k]}
            for s in seeds for n in NORMS for k in keys]
    measure = {"scale": "test_acc_scaled", "shift": "test_acc_shifted"}
    rows += [{"seed": c["seed"], "norm": c["norm"], "measure": measure[c["kind"]], "input_value": c["value"],
              "result": c["test_acc"]} for c in curve_rows]

    holds, verdict = judge(measures, curves)
    summary = {
        "claim": "BatchNorm's output depends on train/eval mode and on the batch; LayerNorm's does not",
        "supported": holds,
        "seeds": seeds,
        "measures": {n: {k: v.as_dict() for k, v in measures[n].items()} for n in NORMS},
        "accuracy_scaled": {n: {str(v): curves[(n, "scale", v)].as_dict() for v in SCALES} for n in NORMS},
        "accuracy_shifted": {n: {str(v): curves[(n, "shift", v)].as_dict() for v in SHIFTS} for n in NORMS},
    }
    return finish("running-stats", out, rows, summary, verdict,
                  {"smoke": size == "smoke", "size": size, "device": device, "seed": seed, "seeds": seeds,
                   "train_steps": cfg["train_steps"]}, timer)
