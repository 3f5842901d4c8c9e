"""Small batches: LayerNorm trains where BatchNorm cannot.

Claim (Ba et al., 2016, section 6.6 on permutation-invariant MNIST): batch
normalization estimates its statistics from the mini-batch, so with a few
examples per batch the estimates are noisy and, at batch size 1, undefined;
layer normalization computes them per example and does not care. The paper
shows LayerNorm keeping its test accuracy at batch size 4 where BatchNorm's
falls.

Here: an MLP classifier on MNIST-1D (40 inputs, 10 classes, generated
locally) with BatchNorm, LayerNorm or no normalization, trained at batch
sizes 1, 2, 4, 8, 32 and 128 on the *same number of examples* at every point.
Adam's learning rate follows the square-root rule, ``lr = base * sqrt(B / 32)``,
so that each batch size gets a comparable step. BatchNorm at batch size 1
raises in train mode ("Expected more than 1 value per channel"): that point
is recorded as "cannot train" (NaN), not a crash.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

from ._common import (LABELS, NORMS, Timer, accuracy, finish, mnist1d, mlp, progress, pyplot, resolve_size,
                      save_figure)

BATCH_SIZES = (1, 2, 4, 8, 32, 128)
BASE_LR = 2e-3  # Adam at batch size 32

# examples: seen by every model (its steps are examples // batch size, so the
# batch-size-1 models dominate the time); samples: MNIST-1D generated. Quick
# sees half the default's examples (5 epochs): accuracies are a few points
# lower, BatchNorm's fall at batch size 4 is as plain.
CONFIGS = {
    "smoke": {"examples": 2_000, "mnist1d_samples": 1_000},
    "quick": {"examples": 20_000, "mnist1d_samples": 5_000},
    "default": {"examples": 40_000, "mnist1d_samples": 5_000},
}


def config(size: str) -> dict:
    """The run's parameters at ``size`` ("smoke", "quick" or "default")."""
    return dict(CONFIGS[size])


def train(norm: str, batch_size: int, data, examples: int, seed: int, device: str) -> dict:
    """Train one model on ``examples`` examples; return test accuracy (NaN if it cannot train)."""
    torch.manual_seed(seed)
    model = mlp(norm).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=BASE_LR * math.sqrt(batch_size / 32))
    x, y = data["x"].to(device), data["y"].to(device)
    order = torch.Generator().manual_seed(seed)  # the same example order for every model
    steps = examples // batch_size
    perm = torch.cat([torch.randperm(len(x), generator=order) for _ in range(examples // len(x) + 1)])
    model.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        idx = perm[step * batch_size:(step + 1) * batch_size].to(device)
        try:
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        except ValueError as error:  # BatchNorm with one value per channel
            return {"test_acc": float("nan"), "train_loss": float("nan"), "steps": 0, "note": f"cannot train: {error}"}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {"test_acc": accuracy(model, data["x_test"].to(device), data["y_test"].to(device)),
            "train_loss": loss.item(), "steps": steps, "note": ""}


def plot(rows, out: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for norm in NORMS:
        pts = [(r["batch_size"], r["test_acc"]) for r in rows if r["norm"] == norm]
        ax.plot([b for b, _ in pts], [100 * a for _, a in pts], "o-", label=LABELS[norm])
    bn1 = [r for r in rows if r["norm"] == "batchnorm" and r["batch_size"] == 1]
    if bn1 and math.isnan(bn1[0]["test_acc"]):
        ax.annotate("BatchNorm: cannot train\nat batch size 1", (1, ax.get_ylim()[0]), xytext=(1.1, 0.5),
                    textcoords=("data", "axes fraction"), fontsize=8, color="C0")
    ax.set_xscale("log", base=2)
    ax.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
    ax.set_xlabel("batch size (same number of examples seen at every point)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("MNIST-1D MLP: test accuracy against batch size")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, out / "accuracy_vs_batch_size.png")


def run(out: Path, smoke: bool = False, device: str = "cpu", seed: int = 0, data: Optional[Path] = None,
        size: Optional[str] = None) -> dict:
    timer = Timer()
    size = resolve_size(size, smoke)
    cfg = config(size)
    examples = cfg["examples"]
    dataset = mnist1d(cfg["mnist1d_samples"])
    rows = []
    jobs = [(b, n) for b in BATCH_SIZES for n in NORMS]
    for batch_size, norm in progress(jobs, desc="small-batch"):
        result = train(norm, batch_size, dataset, examples, seed, device)
        rows.append({"norm": norm, "batch_size": batch_size, "examples": examples, **result})
    plot(rows, out)

    acc = {(r["norm"], r["batch_size"]): r["test_acc"] for r in rows}
    drop = lambda n: acc[(n, 32)] - acc[(n, 4)]  # noqa: E731 - accuracy lost going from 32 to 4
    bn1 = "cannot train (raises)" if math.isnan(acc[("batchnorm", 1)]) else f"{100 * acc[('batchnorm', 1)]:.1f}%"
    holds = acc[("layernorm", 4)] > acc[("batchnorm", 4)] + 0.01 and drop("layernorm") < drop("batchnorm")
    verdict = (
        f"{'supported' if holds else 'refuted'}: at batch size 4 LayerNorm {100 * acc[('layernorm', 4)]:.1f}% "
        f"vs BatchNorm {100 * acc[('batchnorm', 4)]:.1f}% test accuracy (at 32: {100 * acc[('layernorm', 32)]:.1f}% "
        f"vs {100 * acc[('batchnorm', 32)]:.1f}%; none {100 * acc[('none', 4)]:.1f}% / {100 * acc[('none', 32)]:.1f}%); "
        f"at batch size 1 LayerNorm {100 * acc[('layernorm', 1)]:.1f}%, BatchNorm {bn1}"
    )
    summary = {
        "claim": "LayerNorm holds its accuracy at small batch sizes where BatchNorm falls",
        "supported": holds,
        "test_accuracy": {n: {str(b): acc[(n, b)] for b in BATCH_SIZES} for n in NORMS},
        "examples_per_point": examples,
    }
    return finish("small-batch", out, rows, summary, verdict,
                  {"smoke": size == "smoke", "size": size, "device": device, "seed": seed, "base_lr": BASE_LR},
                  timer)
