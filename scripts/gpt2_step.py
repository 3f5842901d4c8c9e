"""What a user feels: one GPT-2 small training step with torch.nn.LayerNorm, then patched.

GPT-2 small (12 layers, 768 wide) from transformers, random weights (nothing is
downloaded), batch 8 x 1024 tokens, bf16 autocast, fused AdamW, on one CUDA
GPU. The step is timed with CUDA events (median of --steps after --warmup);
the same model object is timed before and after ``layernorm.patch``, so the
only difference is the normalization. Run from the repository root:

    PYTHONPATH=. python3 scripts/gpt2_step.py --out runs/gpt2_step.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import layernorm


def build(batch: int, seq: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_positions=seq)).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    tokens = torch.randint(0, model.config.vocab_size, (batch, seq), device="cuda")
    return model, optimizer, tokens


def step_ms(model, optimizer, tokens, warmup: int, steps: int) -> float:
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/gpt2_step.json"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpt2_step needs a CUDA GPU", file=sys.stderr)
        return 2
    model, optimizer, tokens = build(args.batch, args.seq)
    results = {}
    # Alternate the variants twice so clock drift shows up as spread, not as a difference.
    for round_ in range(2):
        for variant in ("torch.nn.LayerNorm", "layernorm.patch"):
            if variant == "layernorm.patch":
                layernorm.patch(model)
            else:
                layernorm.unpatch(model)
            ms = step_ms(model, optimizer, tokens, args.warmup, args.steps)
            results.setdefault(variant, []).append(ms)
            print(f"round {round_}: {variant:20s} {ms:8.2f} ms/step", flush=True)
    summary = {
        "model": "GPT-2 small (transformers, random init)",
        "batch": args.batch, "seq": args.seq, "autocast": "bfloat16", "optimizer": "AdamW(fused=True)",
        "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "ms_per_step": results,
        "speedup": min(results["torch.nn.LayerNorm"]) / min(results["layernorm.patch"]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
