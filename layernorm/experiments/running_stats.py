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
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ._common import (LABELS, NORMS, Timer, accuracy, finish, mnist1d, mlp, progress, pyplot, resolve_size,
                      save_figure)

SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)
SHIFTS = (-1.0, -0.5, 0.0, 0.5, 1.0)
COMPANION_BATCHES = (8, 32)

# train_steps: at batch size 32; companion_examples: test examples each put
# into random batches. The default run takes about 12 s on 2 cores, less than
# any quick run: quick is the default run itself.
CONFIGS = {
    "smoke": {"train_steps": 100, "mnist1d_samples": 1_000, "companion_examples": 16},
    "quick": {"train_steps": 3_000, "mnist1d_samples": 5_000, "companion_examples": 64},
    "default": {"train_steps": 3_000, "mnist1d_samples": 5_000, "companion_examples": 64},
}


def config(size: str) -> dict:
    """The run's parameters at ``size`` ("smoke", "quick" or "default")."""
    return dict(CONFIGS[size])


def train(norm: str, data, steps: int, seed: int, device: str) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = mlp(norm).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
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


def plot(results, rows, out: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    names = [LABELS[n] for n in NORMS]
    keys = [("train_eval_tv", "train vs eval mode"), ("companions8_tv", "companions, batch 8"),
            ("companions32_tv", "companions, batch 32")]
    width = 0.25
    for j, (key, label) in enumerate(keys):
        bars = axes[0].bar([i + (j - 1) * width for i in range(len(NORMS))], [results[n][key] for n in NORMS],
                           width, label=label)
        axes[0].bar_label(bars, fmt="%.2g", fontsize=7)
    axes[0].set_xticks(range(len(NORMS)), names)
    axes[0].set_ylabel("mean total-variation distance of predictions")
    axes[0].set_title("How much one example's prediction moves")
    axes[0].legend(fontsize=8)
    for ax, kind, title, xlabel in ((axes[1], "scale", "scaled", "input scale a (x -> a x)"),
                                    (axes[2], "shift", "shifted", "input shift b (x -> x + b)")):
        for n in NORMS:
            pts = [r for r in rows if r["norm"] == n and r["kind"] == kind]
            ax.plot([r["value"] for r in pts], [100 * r["test_acc"] for r in pts], "o-", label=LABELS[n])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%), eval mode")
        ax.set_title(f"Test inputs {title}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_xscale("log", base=2)
    fig.suptitle("Running statistics: BatchNorm vs LayerNorm on MNIST-1D")
    save_figure(fig, out / "running_stats.png")


def run(out: Path, smoke: bool = False, device: str = "cpu", seed: int = 0, data: Optional[Path] = None,
        size: Optional[str] = None) -> dict:
    timer = Timer()
    size = resolve_size(size, smoke)
    cfg = config(size)
    dataset = mnist1d(cfg["mnist1d_samples"])
    steps = cfg["train_steps"]
    x_test, y_test = dataset["x_test"].to(device), dataset["y_test"].to(device)
    results, curves = {}, []
    for norm in NORMS:
        model = train(norm, dataset, steps, seed, device)
        r = {"test_acc": accuracy(model, x_test, y_test), **train_eval_gap(model, x_test)}
        for b in COMPANION_BATCHES:
            r.update(companion_spread(model, x_test, b, seed, examples=cfg["companion_examples"]))
        results[norm] = r
        for kind, values in (("scale", SCALES), ("shift", SHIFTS)):
            for v in values:
                xs = x_test * v if kind == "scale" else x_test + v
                curves.append({"norm": norm, "kind": kind, "value": v, "test_acc": accuracy(model, xs, y_test)})
    plot(results, curves, out)
    # one long table: (norm, measure, input transform value, result)
    rows = [{"norm": n, "measure": k, "input_value": "", "result": v} for n in NORMS for k, v in results[n].items()]
    measure = {"scale": "test_acc_scaled", "shift": "test_acc_shifted"}
    rows += [{"norm": c["norm"], "measure": measure[c["kind"]], "input_value": c["value"], "result": c["test_acc"]}
             for c in curves]

    acc = {(c["norm"], c["kind"], c["value"]): c["test_acc"] for c in curves}
    bn, ln = results["batchnorm"], results["layernorm"]
    holds = (bn["train_eval_tv"] > 10 * ln["train_eval_tv"] + 1e-4
             and bn["companions8_tv"] > 10 * ln["companions8_tv"] + 1e-4
             and acc[("layernorm", "scale", 4.0)] > acc[("batchnorm", "scale", 4.0)])
    verdict = (
        f"{'supported' if holds else 'refuted'}: train/eval prediction gap (total variation) BatchNorm "
        f"{bn['train_eval_tv']:.3f} ({100 * bn['train_eval_flips']:.1f}% of classes flip) vs LayerNorm "
        f"{ln['train_eval_tv']:.1e}; spread over batch companions (batch 8) {bn['companions8_tv']:.3f} vs "
        f"{ln['companions8_tv']:.1e}; test accuracy with inputs x4: BatchNorm {100 * acc[('batchnorm', 'scale', 4.0)]:.1f}% "
        f"vs LayerNorm {100 * acc[('layernorm', 'scale', 4.0)]:.1f}% (unscaled {100 * bn['test_acc']:.1f}% vs "
        f"{100 * ln['test_acc']:.1f}%), shifted +1: {100 * acc[('batchnorm', 'shift', 1.0)]:.1f}% vs "
        f"{100 * acc[('layernorm', 'shift', 1.0)]:.1f}%"
    )
    summary = {
        "claim": "BatchNorm's output depends on train/eval mode and on the batch; LayerNorm's does not",
        "supported": holds,
        "measures": results,
        "accuracy_scaled": {n: {str(v): acc[(n, "scale", v)] for v in SCALES} for n in NORMS},
        "accuracy_shifted": {n: {str(v): acc[(n, "shift", v)] for v in SHIFTS} for n in NORMS},
    }
    return finish("running-stats", out, rows, summary, verdict,
                  {"smoke": size == "smoke", "size": size, "device": device, "seed": seed,
                   "train_steps": steps}, timer)
