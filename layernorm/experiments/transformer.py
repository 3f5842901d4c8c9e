"""Transformers: pre-LN trains at a high learning rate without warm-up; post-LN needs warm-up.

Claim (Xiong et al., 2020, "On Layer Normalization in the Transformer
Architecture"): where the LayerNorm sits decides whether a transformer needs
a learning-rate warm-up. The original transformer normalizes after each
residual add (post-LN, :math:`x \\leftarrow \\mathrm{LN}(x + f(x))`) and is
trained with a warm-up: started at the full learning rate it trains badly or
not at all. GPT-2 and later normalize the input of each sublayer (pre-LN,
:math:`x \\leftarrow x + f(\\mathrm{LN}(x))`), which keeps the residual
stream an identity path and its gradients well scaled at the start, so
pre-LN trains at the full learning rate from the first step.

Here: a small character-level GPT (nanoGPT-sized code: attention, MLP,
blocks) with pre-LN or post-LN, each trained with AdamW at one high learning
rate in two ways: with a linear warm-up over the first steps, and without
(both then decay along a cosine to a tenth of the peak). The LayerNorms are
:class:`layernorm.LayerNorm`. Losses are held-out nats per character,
judged against the unigram baseline (the loss of predicting every character
by its frequency alone, i.e. learning no context).

Every arm trains with each seed (3 at the default size; a seed sets the
initial weights and the text windows, the same for every arm). Verdict rule
(``judge``), two effects, both on the seeds' spread:

1. *pre-LN trains without warm-up*: every seed of pre-LN without warm-up,
   the worst included, ends at least ``TRAINS_BELOW_BASELINE`` nats/char
   below the unigram baseline;
2. *post-LN needs warm-up*: every seed of post-LN with warm-up gets there,
   and post-LN's worst seed without warm-up ends more than ``WARMUP_GAIN``
   nats/char above its worst seed with warm-up.

"Needs" is a claim about reliability (without warm-up a run *may* fail), so
the worst seed of each arm decides, not the mean. Supported when both hold;
the verdict line states each.

With ``--device cuda`` the default size is a larger model (``CUDA_DEFAULT``),
and the run also times a larger GPT's training step with PyTorch's
``torch.nn.LayerNorm`` against layernorm's kernels (the same model, switched
with :func:`layernorm.unpatch` / :func:`layernorm.patch`) and reports tokens
per second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import (CharData, Spread, Timer, finish, load_text, plot_spread, progress, pyplot, resolve_size,
                      run_seeds, save_figure, seeds_caption)

VARIANTS = ("pre-ln", "post-ln")
LABELS = {"pre-ln": "pre-LN", "post-ln": "post-LN", "none": "no normalization"}
ARMS = tuple((variant, warmup) for variant in VARIANTS for warmup in (False, True))  # (variant, with warm-up?)
TRAINS_BELOW_BASELINE = 0.5  # nats/char below the unigram baseline that count as "trains"
WARMUP_GAIN = 0.1  # nats/char by which warm-up must improve post-LN's worst seed

# text_chars: how much of the corpus to use (None: all of it). The claim needs
# depth (a 4-layer model trains in every form), so only smoke shrinks the
# model. lr: the peak learning rate, high for this width: started at it,
# post-LN may sit on the unigram plateau for good (pre-LN never does);
# warmup_steps: the linear warm-up of the arms that have one. Quick is the
# default run at one seed: in fewer steps post-LN with warm-up, which leaves
# the plateau later, has not yet got clear of the baseline.
CONFIGS = {
    "smoke": {"text_chars": 200_000, "model": {"block_size": 32, "n_layer": 2, "n_embd": 32},
              "batch_size": 16, "lr": 3e-3, "steps": 20, "warmup_steps": 5, "eval_every": 10, "val_batches": 2,
              "seeds": 1},
    "quick": {"text_chars": None, "model": {"block_size": 64, "n_layer": 8, "n_embd": 64},
              "batch_size": 16, "lr": 3e-3, "steps": 300, "warmup_steps": 100, "eval_every": 25, "val_batches": 8,
              "seeds": 1},
    "default": {"text_chars": None, "model": {"block_size": 64, "n_layer": 8, "n_embd": 64},
                "batch_size": 16, "lr": 3e-3, "steps": 300, "warmup_steps": 100, "eval_every": 25,
                "val_batches": 8, "seeds": 3},
}
# The default size with --device cuda: a wider, longer-context model trained
# longer, at a peak learning rate scaled down for its width. Not yet run on a GPU.
CUDA_DEFAULT = {"text_chars": None, "model": {"block_size": 128, "n_layer": 12, "n_head": 8, "n_embd": 256},
                "batch_size": 64, "lr": 1e-3, "steps": 2000, "warmup_steps": 500, "eval_every": 100,
                "val_batches": 16, "seeds": 3}


def config(size: str, device: str = "cpu") -> dict:
    """The run's parameters at ``size`` ("smoke", "quick" or "default") on ``device``."""
    chosen = CUDA_DEFAULT if size == "default" and device.startswith("cuda") else CONFIGS[size]
    cfg = dict(chosen)
    cfg["model"] = dict(cfg["model"])  # a copy: the caller may change it
    return cfg


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    norm: str = "pre-ln"  # "pre-ln", "post-ln" or "none"


def norm_layer(cfg: GPTConfig) -> nn.Module:
    from layernorm import LayerNorm

    return nn.Identity() if cfg.norm == "none" else LayerNorm(cfg.n_embd)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.pre = cfg.norm != "post-ln"
        self.ln_1, self.attn = norm_layer(cfg), CausalSelfAttention(cfg)
        self.ln_2, self.mlp = norm_layer(cfg), MLP(cfg)

    def forward(self, x):
        if self.pre:  # pre-LN (or none: the norms are identities)
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x))  # post-LN, as in the original transformer
        return self.ln_2(x + self.mlp(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        # pre-LN needs a final norm; post-LN's stream is normalized already
        self.ln_f = norm_layer(cfg) if cfg.norm == "pre-ln" else nn.Identity()
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale the residual projections by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def loss_fn(model, x, y):
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


@torch.no_grad()
def val_loss(model, batches, device) -> float:
    model.eval()
    losses = [loss_fn(model, x.to(device), y.to(device)).item() for x, y in batches]
    model.train()
    return sum(losses) / len(losses)


def learning_rate(step: int, peak: float, steps: int, warmup_steps: int) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps`` (none if 0), then a
    cosine decay to a tenth of the peak at the last step."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress_ = (step - warmup_steps) / max(1, steps - warmup_steps)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_)))


def arm_name(variant: str, warmup: bool) -> str:
    return f"{variant}, {'warm-up' if warmup else 'no warm-up'}"


def train(variant: str, warmup: bool, data: CharData, run_cfg: dict, seed: int, device: str) -> List[dict]:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=data.vocab_size, norm=variant, **run_cfg["model"])
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=run_cfg["lr"], weight_decay=0.1, betas=(0.9, 0.95))
    batches = torch.Generator().manual_seed(seed)  # the same text windows for every arm of this seed
    val = data.val_batches(run_cfg["val_batches"], run_cfg["batch_size"], cfg.block_size)
    warmup_steps = run_cfg["warmup_steps"] if warmup else 0
    curve = []
    bar = progress(range(run_cfg["steps"] + 1), desc=f"{arm_name(variant, warmup)}, seed {seed}")
    for step in bar:
        if step % run_cfg["eval_every"] == 0 or step == run_cfg["steps"]:
            curve.append({"seed": seed, "variant": variant, "warmup": warmup, "step": step,
                          "val_loss": val_loss(model, val, device)})
            bar.set_postfix(val_loss=f"{curve[-1]['val_loss']:.3f}")
            if not math.isfinite(curve[-1]["val_loss"]):
                break  # diverged
        if step == run_cfg["steps"]:
            break
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, run_cfg["lr"], run_cfg["steps"], warmup_steps)
        x, y = data.batch("train", run_cfg["batch_size"], cfg.block_size, batches)
        loss = loss_fn(model, x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return curve


def tokens_per_second(vocab_size: int, device: str, steps: int = 20, cfg: Optional[GPTConfig] = None,
                      batch: int = 64) -> dict:
    """GPU only: a GPT's training step with torch.nn.LayerNorm vs layernorm's kernels (by default
    6 layers, 384 wide, 64 x 256 tokens a step)."""
    import time

    import layernorm

    cfg = cfg or GPTConfig(vocab_size=vocab_size, block_size=256, n_layer=6, n_head=6, n_embd=384)
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(vocab_size, (batch, cfg.block_size), device=device)
    results = {}
    # Speed, not reproducibility: let the GPU pick its fastest (non-deterministic) kernels.
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    for name, switch in (("torch.nn.LayerNorm", layernorm.unpatch), ("layernorm", layernorm.patch)):
        switch(model)
        for i in range(steps + 5):  # the first 5 steps warm up
            if i == 5:
                torch.cuda.synchronize()
                start = time.perf_counter()
            loss = loss_fn(model, x, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        torch.cuda.synchronize()
        results[name] = steps * x.numel() / (time.perf_counter() - start)
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    return results


def unigram_loss(data: CharData) -> float:
    """Held-out loss of predicting each character by its training frequency."""
    counts = torch.bincount(data.train, minlength=data.vocab_size).double() + 1  # +1: unseen characters
    log_p = (counts / counts.sum()).log()
    return -log_p[data.val].mean().item()


Finals = Dict[Tuple[str, bool], Spread]  # (variant, with warm-up?) -> final held-out loss over the seeds


def final_losses(rows: Sequence[dict], seeds: Sequence[int]) -> Finals:
    """Each arm's last held-out loss, seed by seed; NaN where the run diverged."""
    last = {}
    for r in rows:  # rows come in step order: the last one of an arm and seed wins
        last[(r["variant"], r["warmup"], r["seed"])] = r["val_loss"]
    return {(v, w): Spread(last[(v, w, s)] for s in seeds) for v, w in ARMS}


def trains(spread: Spread, baseline: float) -> bool:
    """Every seed, the worst included, ends at least TRAINS_BELOW_BASELINE below the baseline."""
    return not spread.broken and spread.max <= baseline - TRAINS_BELOW_BASELINE


def judge(final: Finals, baseline: float, lr: float, warmup_steps: int) -> Tuple[bool, str]:
    """The verdict rule, on the seeds' worst cases: (supported?, the verdict line).

    "Needs warm-up" is a claim about reliability - without it a run may fail
    - so each arm is judged by its worst seed: pre-LN trains without warm-up
    when its worst seed does; post-LN needs warm-up when its worst seed
    trains with warm-up and its worst seed without warm-up is clearly worse."""
    pre_free_trains = trains(final[("pre-ln", False)], baseline)
    post_free, post_warm = final[("post-ln", False)], final[("post-ln", True)]
    post_needs_warmup = trains(post_warm, baseline) and (
        post_free.broken or max(post_free.values) > max(post_warm.values) + WARMUP_GAIN)
    holds = pre_free_trains and post_needs_warmup
    word = lambda ok: "supported" if ok else "refuted"  # noqa: E731
    shown = lambda v, w: final[(v, w)].text()  # noqa: E731 - a diverged seed shows as nan
    verdict = (
        f"{word(holds)}: at peak lr {lr:g}, final held-out loss (nats/char; unigram baseline {baseline:.3f}): "
        f"pre-LN {shown('pre-ln', False)} without warm-up, {shown('pre-ln', True)} with {warmup_steps} warm-up "
        f"steps; post-LN {shown('post-ln', False)} without, {shown('post-ln', True)} with. Pre-LN trains without "
        f"warm-up (worst seed at least {TRAINS_BELOW_BASELINE} below the baseline): {word(pre_free_trains)}; "
        f"post-LN needs warm-up (its worst seed gets there with warm-up, and ends more than {WARMUP_GAIN} higher "
        f"without): {word(post_needs_warmup)}"
    )
    return holds, verdict


def plot(rows: Sequence[dict], seeds: Sequence[int], out: Path, source: str, baseline: float,
         run_cfg: dict) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    finite = [r["val_loss"] for r in rows if math.isfinite(r["val_loss"])]
    for ax, warmup in zip(axes, (False, True)):
        for variant in VARIANTS:
            by_key = {(r["step"], r["seed"]): r["val_loss"] for r in rows
                      if r["variant"] == variant and r["warmup"] == warmup}
            steps = sorted({step for step, _ in by_key})
            spreads = [Spread(by_key.get((step, s), math.nan) for s in seeds) for step in steps]
            plot_spread(ax, steps, spreads, LABELS[variant], marker="o", ms=3)
        ax.axhline(baseline, color="gray", ls="--", lw=1, label="unigram baseline")
        ax.axhline(baseline - TRAINS_BELOW_BASELINE, color="gray", ls=":", lw=1,
                   label=f"{TRAINS_BELOW_BASELINE} below it: trains")
        if warmup:
            ax.axvspan(0, run_cfg["warmup_steps"], color="gray", alpha=0.1, label="warm-up")
        ax.set_title(f"peak lr {run_cfg['lr']:g}, " + (f"{run_cfg['warmup_steps']} warm-up steps" if warmup
                                                        else "no warm-up"))
        ax.set_xlabel("training step")
        ax.set_ylim(min(finite) - 0.1, min(max(finite), 5.0) + 0.1)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("held-out loss (nats per character)")
    fig.suptitle(f"Character-level GPT, pre-LN and post-LN, with and without warm-up ({seeds_caption(seeds)}; "
                 f"{source})", fontsize=9)
    save_figure(fig, out / "loss_curves.png")


def run(out: Path, size: str = "default", device: str = "cpu", seed: int = 0, data: Optional[Path] = None,
        seeds: Optional[int] = None) -> dict:
    timer = Timer()
    size = resolve_size(size)
    run_cfg = config(size, device)
    seeds = run_seeds(seed, seeds, run_cfg)
    text, source = load_text(data)
    text = text[:run_cfg.pop("text_chars")]  # [:None] keeps it all
    chars = CharData(text)
    rows = []
    for run_seed in seeds:
        for variant, warmup in ARMS:
            rows += train(variant, warmup, chars, run_cfg, run_seed, device)
    baseline = unigram_loss(chars)
    plot(rows, seeds, out, source, baseline, run_cfg)
    final = final_losses(rows, seeds)
    holds, verdict = judge(final, baseline, run_cfg["lr"], run_cfg["warmup_steps"])
    throughput = None
    if device.startswith("cuda"):
        throughput = tokens_per_second(chars.vocab_size, device)
        verdict += (f"; GPU tokens/s torch.nn.LayerNorm {throughput['torch.nn.LayerNorm']:.0f} vs layernorm "
                    f"{throughput['layernorm']:.0f}")
    summary = {
        "claim": "pre-LN trains at a high learning rate without warm-up; post-LN needs warm-up",
        "supported": holds,
        "seeds": seeds,
        "corpus": source,
        "final_val_loss": {arm_name(v, w): final[(v, w)].as_dict() for v, w in ARMS},
        "unigram_baseline": baseline,
        "below_baseline": {arm_name(v, w): Spread(baseline - x for x in final[(v, w)].values).as_dict()
                           for v, w in ARMS},
        "tokens_per_second": throughput or "not measured (needs --device cuda)",
        "config": run_cfg,
    }
    return finish("transformer", out, rows, summary, verdict,
                  {"smoke": size == "smoke", "size": size, "device": device, "seed": seed, "seeds": seeds,
                   "data": str(data) if data else None}, timer)
