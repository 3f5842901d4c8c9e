"""Recurrent networks: layer normalization makes an LSTM converge faster.

Claim (Ba et al., 2016, section 6): batch normalization does not carry over
to recurrent networks easily - it needs separate statistics for every time
step - while layer normalization applies unchanged at each step, and an LSTM
with layer normalization trains faster than one without.

Three LSTMs, written the same way so that only the normalization differs,
model characters (bits per character on held-out text):

- ``lstm``: the plain cell,
  :math:`(i, f, o, g) = W_x x_t + W_h h_{t-1} + b`,
  :math:`c_t = \\sigma(f) \\odot c_{t-1} + \\sigma(i) \\odot \\tanh(g)`,
  :math:`h_t = \\sigma(o) \\odot \\tanh(c_t)`;
- ``ln-lstm``: the paper's cell (its eq. 20-22), the two pre-activations and
  the cell normalized separately with :class:`layernorm.LayerNorm`,
  :math:`(i, f, o, g) = \\mathrm{LN}(W_x x_t) + \\mathrm{LN}(W_h h_{t-1})`,
  :math:`h_t = \\sigma(o) \\odot \\tanh(\\mathrm{LN}(c_t))`;
- ``bn-lstm``: the same places with ``BatchNorm1d`` and one set of statistics
  per time step (Cooijmans et al., 2016); beyond the last trained step the
  last statistics are reused.

The text is, by default, the docstrings of Python's standard library (see
``_common.stdlib_docstrings``); ``--data`` takes your own file.

Every cell trains with each seed (3 at the default size); a seed sets the
initial weights and the text windows, the same for the three cells. Verdict
rule (``judge``): supported when, at every seed, LN-LSTM reaches that seed's
plain-LSTM final bits per character before the last step, and LN-LSTM's
worst final bits per character is below the plain LSTM's best.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import (CharData, Spread, Timer, finish, load_text, plot_spread, progress, pyplot, resolve_size,
                      run_seeds, save_figure, seeds_caption, separated)

CELLS = ("lstm", "ln-lstm", "bn-lstm")
LABELS = {"lstm": "LSTM", "ln-lstm": "LN-LSTM (LayerNorm)", "bn-lstm": "BN-LSTM (per-step BatchNorm)"}

# text_chars: how much of the corpus to use (None: all of it). The time goes
# into steps x seq_len LSTM cell calls, each costing about d_hidden squared
# (hidden 256 took four times as long as 128 and showed the same); BN-LSTM
# adds three BatchNorm calls per time step, whose backward is slow on a CPU.
# Quick is the default model for its first 200 of 600 steps (Adam, no
# schedule: the same curves, cut short), at one seed; LN-LSTM leads from the
# start.
CONFIGS = {
    "smoke": dict(text_chars=200_000, d_embed=32, d_hidden=64, seq_len=32, batch_size=32, lr=2e-3,
                  steps=30, eval_every=10, val_batches=2, seeds=1),
    "quick": dict(text_chars=None, d_embed=32, d_hidden=128, seq_len=64, batch_size=32, lr=2e-3,
                  steps=200, eval_every=25, val_batches=8, seeds=1),
    "default": dict(text_chars=None, d_embed=32, d_hidden=128, seq_len=64, batch_size=32, lr=2e-3,
                    steps=600, eval_every=50, val_batches=8, seeds=3),
}


def config(size: str) -> dict:
    """The run's parameters at ``size`` ("smoke", "quick" or "default")."""
    return dict(CONFIGS[size])


class LSTMCell(nn.Module):
    """The plain LSTM cell."""

    def __init__(self, d_in: int, d_hidden: int):
        super().__init__()
        self.wx = nn.Linear(d_in, 4 * d_hidden)
        self.wh = nn.Linear(d_hidden, 4 * d_hidden, bias=False)

    def gates(self, x, h, t):
        return self.wx(x) + self.wh(h)

    def cell_out(self, c, t):
        return c

    def forward(self, x, state, t: int):
        h, c = state
        i, f, o, g = self.gates(x, h, t).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(self.cell_out(c, t))
        return h, c


class LayerNormLSTMCell(LSTMCell):
    """Ba et al.'s LN-LSTM: each pre-activation, and the cell, layer-normalized.

    The LayerNorms' biases take the place of the linear layers' bias."""

    def __init__(self, d_in: int, d_hidden: int):
        super().__init__(d_in, d_hidden)
        from layernorm import LayerNorm

        self.wx = nn.Linear(d_in, 4 * d_hidden, bias=False)
        self.ln_x, self.ln_h = LayerNorm(4 * d_hidden), LayerNorm(4 * d_hidden)
        self.ln_c = LayerNorm(d_hidden)

    def gates(self, x, h, t):
        return self.ln_x(self.wx(x)) + self.ln_h(self.wh(h))

    def cell_out(self, c, t):
        return self.ln_c(c)


class BatchNormLSTMCell(LSTMCell):
    """Cooijmans et al.'s BN-LSTM: BatchNorm at the same places, with one
    BatchNorm1d (its own statistics) per time step."""

    def __init__(self, d_in: int, d_hidden: int, max_steps: int):
        super().__init__(d_in, d_hidden)
        self.wx = nn.Linear(d_in, 4 * d_hidden, bias=False)
        self.bn_x = nn.ModuleList(nn.BatchNorm1d(4 * d_hidden) for _ in range(max_steps))
        self.bn_h = nn.ModuleList(nn.BatchNorm1d(4 * d_hidden) for _ in range(max_steps))
        self.bn_c = nn.ModuleList(nn.BatchNorm1d(d_hidden) for _ in range(max_steps))

    def gates(self, x, h, t):
        t = min(t, len(self.bn_x) - 1)
        return self.bn_x[t](self.wx(x)) + self.bn_h[t](self.wh(h))

    def cell_out(self, c, t):
        return self.bn_c[min(t, len(self.bn_c) - 1)](c)


class CharLSTM(nn.Module):
    def __init__(self, kind: str, vocab_size: int, d_embed: int, d_hidden: int, seq_len: int):
        super().__init__()
        self.d_hidden = d_hidden
        self.embed = nn.Embedding(vocab_size, d_embed)
        if kind == "lstm":
            self.cell = LSTMCell(d_embed, d_hidden)
        elif kind == "ln-lstm":
            self.cell = LayerNormLSTMCell(d_embed, d_hidden)
        else:
            self.cell = BatchNormLSTMCell(d_embed, d_hidden, seq_len)
        self.head = nn.Linear(d_hidden, vocab_size)

    def forward(self, idx):
        b, steps = idx.shape
        x = self.embed(idx)
        h = c = x.new_zeros(b, self.d_hidden)
        outputs = []
        for t in range(steps):
            h, c = self.cell(x[:, t], (h, c), t)
            outputs.append(h)
        return self.head(torch.stack(outputs, dim=1))


@torch.no_grad()
def bits_per_char(model, batches, device) -> float:
    model.eval()
    nats = [F.cross_entropy(model(x.to(device)).flatten(0, 1), y.to(device).flatten()).item() for x, y in batches]
    model.train()
    return sum(nats) / len(nats) / torch.log(torch.tensor(2.0)).item()


def train(kind: str, data: CharData, cfg: dict, seed: int, device: str):
    torch.manual_seed(seed)
    model = CharLSTM(kind, data.vocab_size, cfg["d_embed"], cfg["d_hidden"], cfg["seq_len"]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], fused=True)  # fused: one kernel for the update
    batches = torch.Generator().manual_seed(seed)  # the same text windows for every cell
    val = data.val_batches(cfg["val_batches"], cfg["batch_size"], cfg["seq_len"])
    curve, timer = [], Timer()
    bar = progress(range(cfg["steps"] + 1), desc=kind)
    for step in bar:
        if step % cfg["eval_every"] == 0:
            curve.append({"cell": kind, "step": step, "val_bpc": bits_per_char(model, val, device),
                          "seconds": timer.seconds})
            bar.set_postfix(val_bpc=f"{curve[-1]['val_bpc']:.3f}")
        if step == cfg["steps"]:
            break
        x, y = data.batch("train", cfg["batch_size"], cfg["seq_len"], batches)
        loss = F.cross_entropy(model(x.to(device)).flatten(0, 1), y.to(device).flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return curve


def curve_spreads(rows: Sequence[dict], kind: str, seeds: Sequence[int]) -> Tuple[List[int], List[Spread]]:
    """One cell's evaluation steps and its held-out bits per character at each, over the seeds."""
    by_key = {(r["step"], r["seed"]): r["val_bpc"] for r in rows if r["cell"] == kind}
    steps = sorted({step for step, _ in by_key})
    return steps, [Spread(by_key[(step, s)] for s in seeds) for step in steps]


def plot(rows, seeds: Sequence[int], out: Path, source: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for kind in CELLS:
        steps, spreads = curve_spreads(rows, kind, seeds)
        plot_spread(ax, steps, spreads, LABELS[kind], marker="o", ms=3)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out bits per character")
    ax.set_title(f"Character-level LSTMs: learning curves ({seeds_caption(seeds)})", fontsize=10)
    ax.text(0.99, 0.97, source, transform=ax.transAxes, ha="right", va="top", fontsize=7, color="gray", wrap=True)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, out / "learning_curves.png")


def first_step_below(rows, kind: str, target: float, seed: int):
    return next((r["step"] for r in rows if r["cell"] == kind and r["seed"] == seed and r["val_bpc"] <= target),
                None)


def reach_text(steps: Sequence[Optional[int]]) -> str:
    """"step 250" for one seed; "step 250 [200, 300]" for several; "never" where a seed never got there."""
    if any(s is None for s in steps):
        return "steps " + ", ".join("never" if s is None else str(s) for s in steps)
    return "step " + Spread(steps).text(".0f")


def judge(final: Dict[str, Spread], reach: Dict[str, List[Optional[int]]], steps: int,
          seconds: Dict[str, Spread]) -> Tuple[bool, str]:
    """The verdict rule, on the seeds' spread: (supported?, the verdict line).

    ``reach[cell]`` is, seed by seed, the first evaluated step at which the
    cell is at or below that seed's plain-LSTM final bits per character."""
    holds = (all(s is not None and s < steps for s in reach["ln-lstm"])
             and separated(final["ln-lstm"].values, final["lstm"].values, higher_is_better=False))
    verdict = (
        f"{'supported' if holds else 'refuted'}: LN-LSTM reaches the plain LSTM's final "
        f"{final['lstm'].text()} bits/char at {reach_text(reach['ln-lstm'])} of {steps} (BN-LSTM: "
        f"{reach_text(reach['bn-lstm'])}); final held-out bits/char LSTM {final['lstm'].text()}, LN-LSTM "
        f"{final['ln-lstm'].text()}, BN-LSTM {final['bn-lstm'].text()}; training time "
        f"{seconds['lstm'].mean:.0f} s / {seconds['ln-lstm'].mean:.0f} s / {seconds['bn-lstm'].mean:.0f} s a seed"
    )
    return holds, verdict


def run(out: Path, size: str = "default", device: str = "cpu", seed: int = 0, data: Optional[Path] = None,
        seeds: Optional[int] = None) -> dict:
    timer = Timer()
    size = resolve_size(size)
    cfg = config(size)
    seeds = run_seeds(seed, seeds, cfg)
    text, source = load_text(data)
    text = text[:cfg.pop("text_chars")]  # [:None] keeps it all
    chars = CharData(text)
    rows = []
    for run_seed in seeds:
        for kind in CELLS:
            rows += [{"seed": run_seed, **r} for r in train(kind, chars, cfg, run_seed, device)]
    plot(rows, seeds, out, source)

    def last(kind: str, key: str) -> Spread:
        return Spread([r for r in rows if r["cell"] == kind and r["seed"] == s][-1][key] for s in seeds)

    final = {k: last(k, "val_bpc") for k in CELLS}
    seconds = {k: last(k, "seconds") for k in CELLS}
    reach = {k: [first_step_below(rows, k, target, s) for s, target in zip(seeds, final["lstm"].values)]
             for k in CELLS}
    holds, verdict = judge(final, reach, cfg["steps"], seconds)
    summary = {
        "claim": "an LSTM with layer normalization converges faster than one without",
        "supported": holds,
        "seeds": seeds,
        "corpus": source,
        "corpus_chars": len(text),
        "vocab_size": chars.vocab_size,
        "final_val_bpc": {k: v.as_dict() for k, v in final.items()},
        "step_reaching_lstm_final_bpc": reach,
        "train_seconds": {k: v.as_dict() for k, v in seconds.items()},
        "config": cfg,
    }
    return finish("rnn", out, rows, summary, verdict,
                  {"smoke": size == "smoke", "size": size, "device": device, "seed": seed, "seeds": seeds,
                   "data": str(data) if data else None}, timer)
