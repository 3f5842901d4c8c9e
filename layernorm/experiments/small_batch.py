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

Every arm trains with each seed (3 at the default size); the seed sets the
initial weights and the order of the examples, the same for every
normalization. Verdict rule (``judge``): supported when LayerNorm's worst
seed beats BatchNorm's best seed at batch size 4 by more than a point, and
LayerNorm's largest loss of accuracy from batch size 32 to 4 is smaller than
BatchNorm's smallest.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch

from ._common import (LABELS, NORMS, Spread, Timer, accuracy, finish, mnist1d, mlp, plot_spread, progress, pyplot,
                      resolve_size, run_seeds, save_figure, seeds_caption, separated)

BATCH_SIZES = (1, 2, 4, 8, 32, 128)
BASE_LR = 2e-3  # Adam at batch size 32

# examples: seen by every model (its steps are examples // batch size, so the
# batch-size-1 and -2 models take most of the time: each step costs the same
# few hundred microseconds of Python whatever the batch); samples: MNIST-1D
# generated; seeds: how many seeds each arm trains. Quick sees a quarter of
# the default's examples (2.5 epochs): accuracies are a few points lower,
# BatchNorm's fall at batch size 4 is as plain.
CONFIGS = {
    "smoke": {"examples": 2_000, "mnist1d_samples": 1_000, "seeds": 1},
    "quick": {"examples": 10_000, "mnist1d_samples": 5_000, "seeds": 1},
    "default": {"examples": 40_000, "mnist1d_samples": 5_000, "seeds": 3},
}

Accuracies = Dict[Tuple[str, int], Spread]  # (norm, batch size) -> test accuracy over the seeds


def config(size: str) -> dict:
    """The run's parameters at ``size`` ("smoke", "quick" or "default")."""
    return dict(CONFIGS[size])


def train(norm: str, batch_size: int, data, examples: int, seed: int, device: str) -> dict:
    """Train one model on ``examples`` examples; return test accuracy (NaN if it cannot train)."""
    torch.manual_seed(seed)
    model = mlp(norm).to(device)
    # fused: one kernel for the whole update instead of a Python loop over the
    # parameters - at batch size 1 the optimizer was half of each step's time
    opt = torch.optim.Adam(model.parameters(), lr=BASE_LR * math.sqrt(batch_size / 32), fused=True)
    x, y = data["x"].to(device), data["y"].to(device)
    order = torch.Generator().manual_seed(seed)  # the same example order for every model of this seed
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


def accuracies(rows: Sequence[dict], seeds: Sequence[int]) -> Accuracies:
    """Each (norm, batch size)'s test accuracy over the seeds, in seed order."""
    by_key = {(r["norm"], r["batch_size"], r["seed"]): r["test_acc"] for r in rows}
    return {(n, b): Spread(by_key[(n, b, s)] for s in seeds) for n in NORMS for b in BATCH_SIZES}


def accuracy_lost(acc: Accuracies, norm: str) -> Spread:
    """Accuracy lost going from batch size 32 to 4, seed by seed."""
    return Spread(a - b for a, b in zip(acc[(norm, 32)].values, acc[(norm, 4)].values))


def judge(acc: Accuracies) -> Tuple[bool, str]:
    """The verdict rule, on the seeds' spread: (supported?, the verdict line)."""
    lost = {n: accuracy_lost(acc, n) for n in ("layernorm", "batchnorm")}
    holds = (separated(acc[("layernorm", 4)].values, acc[("batchnorm", 4)].values, margin=0.01)
             and separated(lost["layernorm"].values, lost["batchnorm"].values, higher_is_better=False))
    pct = lambda key: acc[key].text(".1f", 100, "%")  # noqa: E731
    bn1 = acc[("batchnorm", 1)]
    bn1_text = "cannot train (raises)" if all(math.isnan(v) for v in bn1.values) else pct(("batchnorm", 1))
    verdict = (
        f"{'supported' if holds else 'refuted'}: at batch size 4 LayerNorm {pct(('layernorm', 4))} vs BatchNorm "
        f"{pct(('batchnorm', 4))} test accuracy; accuracy lost from batch size 32 to 4: LayerNorm "
        f"{lost['layernorm'].text('.1f', 100)} vs BatchNorm {lost['batchnorm'].text('.1f', 100)} points "
        f"(at 32: {pct(('layernorm', 32))} vs {pct(('batchnorm', 32))}; none {pct(('none', 4))} at 4, "
        f"{pct(('none', 32))} at 32); at batch size 1 LayerNorm {pct(('layernorm', 1))}, BatchNorm {bn1_text}"
    )
    return holds, verdict


def plot(acc: Accuracies, seeds: Sequence[int], out: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for norm in NORMS:
        plot_spread(ax, BATCH_SIZES, [acc[(norm, b)] for b in BATCH_SIZES], LABELS[norm], scale=100, marker="o")
    if all(math.isnan(v) for v in acc[("batchnorm", 1)].values):
        ax.annotate("BatchNorm: cannot train\nat batch size 1", (1, ax.get_ylim()[0]), xytext=(1.1, 0.5),
                    textcoords=("data", "axes fraction"), fontsize=8, color="C0")
    ax.set_xscale("log", base=2)
    ax.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
    ax.set_xlabel("batch size (same number of examples seen at every point)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"MNIST-1D MLP: test accuracy against batch size\n({seeds_caption(seeds)})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, out / "accuracy_vs_batch_size.png")


def run(out: Path, size: str = "default", device: str = "cpu", seed: int = 0, data: Optional[Path] = None,
        seeds: Optional[int] = None) -> dict:
    timer = Timer()
    size = resolve_size(size)
    cfg = config(size)
    seeds = run_seeds(seed, seeds, cfg)
    examples = cfg["examples"]
    dataset = mnist1d(cfg["mnist1d_samples"])
    rows = []
    jobs = [(s, b, n) for s in seeds for b in BATCH_SIZES for n in NORMS]
    for run_seed, batch_size, norm in progress(jobs, desc="small-batch"):
        result = train(norm, batch_size, dataset, examples, run_seed, device)
        rows.append({"seed": run_seed, "norm": norm, "batch_size": batch_size, "examples": examples, **result})
    acc = accuracies(rows, seeds)
    plot(acc, seeds, out)
    holds, verdict = judge(acc)
    summary = {
        "claim": "LayerNorm holds its accuracy at small batch sizes where BatchNorm falls",
        "supported": holds,
        "seeds": seeds,
        "test_accuracy": {n: {str(b): acc[(n, b)].as_dict() for b in BATCH_SIZES} for n in NORMS},
        "accuracy_lost_32_to_4": {n: accuracy_lost(acc, n).as_dict() for n in NORMS},
        "examples_per_point": examples,
    }
    return finish("small-batch", out, rows, summary, verdict,
                  {"smoke": size == "smoke", "size": size, "device": device, "seed": seed, "seeds": seeds,
                   "base_lr": BASE_LR}, timer)
