"""Transformers: where the LayerNorm sits decides whether a GPT trains at a high learning rate.

Claim: layer normalization is what makes deep transformers trainable, and
its place matters. The original transformer normalizes after each residual
add (post-LN, :math:`x \\leftarrow \\mathrm{LN}(x + f(x))`); GPT-2 and later
normalize the input of each sublayer (pre-LN, :math:`x \\leftarrow x +
f(\\mathrm{LN}(x))`), which keeps the residual stream an identity path and
its gradients well scaled, so pre-LN trains at learning rates, and without
warm-up, where post-LN struggles (Xiong et al., 2020) and a transformer with
no normalization at all diverges.

Here: a small character-level GPT (nanoGPT-sized code: attention, MLP,
blocks) with pre-LN, post-LN or no normalization, each trained with AdamW and
no warm-up at a moderate and at a high learning rate; held-out loss curves.
The LayerNorms are :class:`layernorm.LayerNorm`. A run *struggles* when it
diverges or ends less than 0.1 nats/char below the unigram baseline (the loss
of predicting every character by its frequency alone, i.e. learning no
context).

With ``--device cuda`` it also times a larger GPT's training step with
PyTorch's ``torch.nn.LayerNorm`` against layernorm's kernels (the same model,
switched with :func:`layernorm.unpatch` / :func:`layernorm.patch`) and
reports tokens per second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import CharData, Timer, finish, load_text, progress, pyplot, resolve_size, save_figure

VARIANTS = ("pre-ln", "post-ln", "none")
LABELS = {"pre-ln": "pre-LN", "post-ln": "post-LN", "none": "no normalization"}
LEARNING_RATES = (1e-3, 3e-2)  # moderate, high

# text_chars: how much of the corpus to use (None: all of it). The claim needs
# depth (a 4-layer model trains in every form), so only smoke shrinks the model;
# quick runs the default model for its first 150 of 300 steps (no schedule:
# the same curves, cut short), by which pre-LN is clear of the baseline.
CONFIGS = {
    "smoke": {"text_chars": 200_000, "model": {"block_size": 32, "n_layer": 2, "n_embd": 32},
              "batch_size": 16, "steps": 20, "eval_every": 10, "val_batches": 2},
    "quick": {"text_chars": None, "model": {"block_size": 64, "n_layer": 8, "n_embd": 64},
              "batch_size": 16, "steps": 150, "eval_every": 25, "val_batches": 8},
    "default": {"text_chars": None, "model": {"block_size": 64, "n_layer": 8, "n_embd": 64},
                "batch_size": 16, "steps": 300, "eval_every": 25, "val_batches": 8},
}


def config(size: str) -> dict:
    """The run's parameters at ``size`` ("smoke", "quick" or "default")."""
    cfg = dict(CONFIGS[size])
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


def train(variant: str, lr: float, data: CharData, run_cfg: dict, seed: int, device: str):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=data.vocab_size, norm=variant, **run_cfg["model"])
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    batches = torch.Generator().manual_seed(seed)  # the same text windows for every model
    val = data.val_batches(run_cfg["val_batches"], run_cfg["batch_size"], cfg.block_size)
    curve = []
    bar = progress(range(run_cfg["steps"] + 1), desc=f"{variant} lr={lr:g}")
    for step in bar:
        if step % run_cfg["eval_every"] == 0:
            curve.append({"variant": variant, "lr": lr, "step": step, "val_loss": val_loss(model, val, device)})
            bar.set_postfix(val_loss=f"{curve[-1]['val_loss']:.3f}")
            if not math.isfinite(curve[-1]["val_loss"]):
                break  # diverged
        if step == run_cfg["steps"]:
            break
        x, y = data.batch("train", run_cfg["batch_size"], cfg.block_size, batches)
        loss = loss_fn(model, x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return curve


def tokens_per_second(vocab_size: int, device: str, steps: int = 20) -> dict:
    """GPU only: a GPT's training step with torch.nn.LayerNorm vs layernorm's kernels."""
    import time

    import layernorm

    cfg = GPTConfig(vocab_size=vocab_size, block_size=256, n_layer=6, n_head=6, n_embd=384)
    torch.manual_seed(0)
    model = GPT(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(vocab_size, (64, cfg.block_size), device=device)
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


def plot(rows, lrs, out: Path, source: str, baseline: float) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(lrs), figsize=(6 * len(lrs), 4), sharey=True)
    finite = [r["val_loss"] for r in rows if math.isfinite(r["val_loss"])]
    for ax, lr in zip(axes, lrs):
        for variant in VARIANTS:
            pts = [r for r in rows if r["variant"] == variant and r["lr"] == lr]
            label = LABELS[variant]
            if pts and not math.isfinite(pts[-1]["val_loss"]):
                label += f" (diverged by step {pts[-1]['step']})"
            ax.plot([r["step"] for r in pts], [r["val_loss"] for r in pts], "o-", ms=3, label=label)
        ax.axhline(baseline, color="gray", ls="--", lw=1, label="unigram baseline")
        ax.set_title(f"learning rate {lr:g} (AdamW, no warm-up)")
        ax.set_xlabel("training step")
        ax.set_ylim(min(finite) - 0.1, min(max(finite), 5.0) + 0.1)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("held-out loss (nats per character)")
    fig.suptitle(f"Character-level GPT: pre-LN, post-LN and no normalization ({source})", fontsize=9)
    save_figure(fig, out / "loss_curves.png")


def run(out: Path, smoke: bool = False, device: str = "cpu", seed: int = 0, data: Optional[Path] = None,
        size: Optional[str] = None) -> dict:
    timer = Timer()
    size = resolve_size(size, smoke)
    run_cfg = config(size)
    text, source = load_text(data)
    text = text[:run_cfg.pop("text_chars")]  # [:None] keeps it all
    chars = CharData(text)
    lrs = LEARNING_RATES
    rows = []
    for lr in lrs:
        for variant in VARIANTS:
            rows += train(variant, lr, chars, run_cfg, seed, device)
    baseline = unigram_loss(chars)
    plot(rows, lrs, out, source, baseline)

    final = {(v, lr): [r for r in rows if r["variant"] == v and r["lr"] == lr][-1]["val_loss"]
             for v in VARIANTS for lr in lrs}
    high = lrs[-1]
    # "struggles": diverged, or learned (almost) nothing beyond the characters' frequencies
    struggles = {k: not math.isfinite(v) or v > baseline - 0.1 for k, v in final.items()}
    holds = not struggles[("pre-ln", high)] and (struggles[("post-ln", high)] or struggles[("none", high)])
    throughput = None
    if device.startswith("cuda"):
        throughput = tokens_per_second(chars.vocab_size, device)
    verdict = (
        f"{'supported' if holds else 'refuted'}: final held-out loss (nats/char) at lr {high:g}: pre-LN "
        f"{final[('pre-ln', high)]:.3f}, post-LN {final[('post-ln', high)]:.3f}, none {final[('none', high)]:.3f}; "
        f"at lr {lrs[0]:g}: {final[('pre-ln', lrs[0])]:.3f} / {final[('post-ln', lrs[0])]:.3f} / "
        f"{final[('none', lrs[0])]:.3f}"
        + (f"; unigram baseline {baseline:.3f}; struggling (diverged or within 0.1 of the baseline): "
           + (", ".join(f"{LABELS[v]} at {lr:g}" for (v, lr), s in struggles.items() if s) or "none"))
        + (f"; GPU tokens/s torch.nn.LayerNorm {throughput['torch.nn.LayerNorm']:.0f} vs layernorm "
           f"{throughput['layernorm']:.0f}" if throughput else "")
    )
    summary = {
        "claim": "pre-LN trains at a learning rate where post-LN or no normalization struggles",
        "supported": holds,
        "corpus": source,
        "final_val_loss": {v: {str(lr): final[(v, lr)] for lr in lrs} for v in VARIANTS},
        "struggles": {v: {str(lr): struggles[(v, lr)] for lr in lrs} for v in VARIANTS},
        "unigram_baseline": baseline,
        "tokens_per_second": throughput or "not measured (needs --device cuda)",
        "config": run_cfg,
    }
    return finish("transformer", out, rows, summary, verdict,
                  {"smoke": size == "smoke", "size": size, "device": device, "seed": seed,
                   "data": str(data) if data else None}, timer)
