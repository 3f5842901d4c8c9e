"""What a user feels: one transformer training step with the model's own norms, then patched.

``--model gpt2`` (default): GPT-2 small (12 layers, 768 wide) from
transformers, random weights (nothing is downloaded). ``--model encoder``:
PyTorch's own pre-norm ``TransformerEncoder`` of the same size (12 layers, 768
wide, 12 heads, feed-forward 3072), which ``patch(model, fuse_add=True)`` can
also fuse (residual add + norm, :mod:`layernorm.blocks`). ``--model llama``: a
Llama-style decoder from transformers (12 layers, 1024 wide, 16 heads, 4 key-value
heads, random weights), whose ``LlamaRMSNorm`` modules ``patch`` adopts. Batch 8 x 1024
tokens, bf16 autocast, fused AdamW, on one CUDA GPU. The step is timed with
CUDA events (median of --steps after --warmup); the same model object is timed
before and after ``layernorm.patch``, so the only difference is the
normalization. Run from the repository root:

    PYTHONPATH=. python3 scripts/gpt2_step.py --out runs/gpt2_step.json
    PYTHONPATH=. python3 scripts/gpt2_step.py --model encoder --out runs/encoder_step.json

``--profile DIR`` then records one step of each variant under
``torch.profiler`` (CPU and CUDA activities, Python stacks), writes each
trace there (``trace_<variant>.json.gz``, for Perfetto or chrome://tracing) and
lists every host synchronization in the step (stream, device or event
synchronize, a blocking copy, ``aten::item`` / ``_local_scalar_dense``),
marking the ones whose stack passes through ``layernorm``: the patched step
should add none.

``--device cpu --tiny`` runs the same on 2-layer models of width 64 anywhere:
a check of this script (``tests/test_model_step.py``), not a measurement.
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


# --tiny (a check of this script on any machine, e.g. the CPU: it measures nothing) shrinks every
# model to 2 layers of 64.


def build_gpt2(batch: int, seq: int, device: str, tiny: bool):
    """(model, loss of one step)"""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    size = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=512) if tiny else {}
    model = GPT2LMHeadModel(GPT2Config(n_positions=seq, **size)).to(device)
    tokens = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)
    return model, lambda: model(tokens, labels=tokens).loss


def build_encoder(batch: int, seq: int, device: str, tiny: bool):
    """(model, loss of one step): a pre-norm encoder on random embeddings, mean-square loss."""
    torch.manual_seed(0)
    width, heads, ff, layers = (64, 4, 128, 2) if tiny else (768, 12, 3072, 12)
    layer = torch.nn.TransformerEncoderLayer(width, heads, ff, dropout=0.1, activation="gelu", batch_first=True,
                                             norm_first=True)
    model = torch.nn.TransformerEncoder(layer, layers, norm=torch.nn.LayerNorm(width),
                                        enable_nested_tensor=False).to(device)
    x = torch.randn(batch, seq, width, device=device)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(seq, device=device)
    return model, lambda: model(x, mask=mask, is_causal=True).float().pow(2).mean()


def build_llama(batch: int, seq: int, device: str, tiny: bool):
    """(model, loss of one step): a Llama-style decoder, random weights, its RMS norms HF's own."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    size = (dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512) if tiny else
            dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=12, num_attention_heads=16,
                 num_key_value_heads=4, vocab_size=32000))
    config = LlamaConfig(max_position_embeddings=seq, **size)
    model = LlamaForCausalLM(config).to(device)
    tokens = torch.randint(0, config.vocab_size, (batch, seq), device=device)
    return model, lambda: model(tokens, labels=tokens).loss


MODELS = {
    "gpt2": ("GPT-2 small (transformers, random init)", build_gpt2, ("torch.nn.LayerNorm", "layernorm.patch")),
    "llama": ("Llama-style decoder, 12 x 1024 (transformers, random init)", build_llama,
              ("LlamaRMSNorm (HF)", "layernorm.patch")),
    "encoder": ("torch.nn.TransformerEncoder, pre-norm, 12 x 768", build_encoder,
                ("torch.nn.LayerNorm", "layernorm.patch", "layernorm.patch(fuse_add=True)")),
}


def training_step(optimizer, loss_fn, device: str):
    """One step: forward under bf16 autocast, backward, optimizer step, gradients dropped."""
    def step():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def step_ms(model, optimizer, loss_fn, warmup: int, steps: int, device: str) -> float:
    step = training_step(optimizer, loss_fn, device)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if not device.startswith("cuda"):  # --tiny on the CPU: wall time
            start = time.perf_counter()
            step()
            times.append((time.perf_counter() - start) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


# Host-side calls that wait for the GPU.
_SYNC_NAMES = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
               "aten::item", "aten::_local_scalar_dense", "aten::nonzero")
_PACKAGE_DIR = Path(layernorm.__file__).resolve().parent


def profile_step(model, optimizer, loss_fn, variant: str, out_dir: Path, device: str) -> dict:
    """One step under torch.profiler: the trace file, and the host synchronizations in it."""
    import gzip
    import shutil

    from torch.profiler import ProfilerActivity, profile

    step = training_step(optimizer, loss_fn, device)
    step()  # nothing compiles or allocates for the first time inside the trace
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, with_stack=True) as prof:
        step()  # no synchronize of ours inside: the profiler waits for the GPU when it stops
    out_dir.mkdir(parents=True, exist_ok=True)
    trace = out_dir / f"trace_{''.join(c if c.isalnum() else '_' for c in variant)}.json"
    prof.export_chrome_trace(str(trace))
    # The exported trace, not prof.events(): some PyTorch releases (2.11) leave the Python frames
    # out of the event tree while the trace keeps them.
    syncs = host_syncs(json.loads(trace.read_text()))
    with open(trace, "rb") as raw, gzip.open(f"{trace}.gz", "wb") as packed:  # traces of a step are large
        shutil.copyfileobj(raw, packed)
    trace.unlink()
    ours = None if syncs is None else sum(s["ours"] for s in syncs)
    return {"trace": f"{trace}.gz", "host_syncs": None if syncs is None else len(syncs),
            "host_syncs_in_layernorm": ours, "syncs": syncs}


def host_syncs(trace: dict) -> list | None:
    """The host synchronizations in a Chrome trace written by torch.profiler (``with_stack=True``),
    each with the Python frames it ran under, innermost first, and whether one of them is in the
    layernorm package. None when the trace holds no Python frames: then which ones are ours is
    unknown (never reported as none).

    A frame encloses a synchronization when it runs on the same thread and its time span holds the
    synchronization's; one sweep per thread in start order, with a stack of the open frames, finds
    them all (a step's trace holds about a million frames)."""
    threads: dict = {}
    for event in trace.get("traceEvents", ()):
        kind = event.get("cat")
        if event.get("ph") != "X" or "dur" not in event:
            continue
        if kind == "python_function" or (kind in ("cpu_op", "cuda_runtime") and event.get("name") in _SYNC_NAMES):
            threads.setdefault((event.get("pid"), event.get("tid")), []).append(event)
    if not any(e["cat"] == "python_function" for events in threads.values() for e in events):
        return None
    syncs = []
    for events in threads.values():
        # outer before inner at equal starts; a frame before the synchronization it holds
        events.sort(key=lambda e: (e["ts"], -e["dur"], e["cat"] != "python_function"))
        open_frames: list = []
        for event in events:
            while open_frames and open_frames[-1]["ts"] + open_frames[-1]["dur"] < event["ts"]:
                open_frames.pop()
            if event["cat"] == "python_function":
                open_frames.append(event)
                continue
            end = event["ts"] + event["dur"]
            frames = [f["name"] for f in reversed(open_frames) if f["ts"] + f["dur"] >= end]
            syncs.append({"name": event["name"], "ours": any(map(_in_package, frames)), "stack": frames[:8]})
    return syncs


def _in_package(frame: str) -> bool:
    """Whether a profiler frame name ("path/to/file.py(line): function") is in the layernorm package:
    the profiler writes a file below an import root relative to it ("layernorm/ops.py"), others in full."""
    path = frame.split("(", 1)[0]
    return path.startswith("layernorm/") or path.startswith(f"{_PACKAGE_DIR}/")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(MODELS), default="gpt2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/gpt2_step.json"))
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="also trace one step of each variant with torch.profiler into DIR")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a --tiny check")
    parser.add_argument("--tiny", action="store_true",
                        help="2 layers of 64: checks this script (on any device), measures nothing")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpt2_step needs a CUDA GPU (or --device cpu --tiny to check the script)", file=sys.stderr)
        return 2
    description, build, variants = MODELS[args.model]
    model, loss_fn = build(args.batch, args.seq, args.device, args.tiny)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=args.device.startswith("cuda"))
    results = {}
    # Alternate the variants twice so clock drift shows up as spread, not as a difference.
    for round_ in range(2):
        for variant in variants:
            layernorm.unpatch(model)
            if variant != variants[0]:  # the first variant is the model as built
                layernorm.patch(model, fuse_add="fuse_add" in variant)
            ms = step_ms(model, optimizer, loss_fn, args.warmup, args.steps, args.device)
            results.setdefault(variant, []).append(ms)
            print(f"round {round_}: {variant:32s} {ms:8.2f} ms/step", flush=True)
    profiles = {}
    if args.profile is not None:
        for variant in variants:
            layernorm.unpatch(model)
            if variant != variants[0]:
                layernorm.patch(model, fuse_add="fuse_add" in variant)
            profiles[variant] = profile_step(model, optimizer, loss_fn, variant, args.profile, args.device)
            found = profiles[variant]
            if found["syncs"] is None:
                print(f"profile {variant}: the trace holds no Python frames, so which host synchronizations "
                      f"pass through layernorm is unknown ({found['trace']})", flush=True)
            else:
                print(f"profile {variant}: {found['host_syncs']} host synchronizations in the step, "
                      f"{found['host_syncs_in_layernorm']} through layernorm ({found['trace']})", flush=True)
    baseline = min(results[variants[0]])
    summary = {
        "model": description + (" (--tiny: 2 layers of 64, a check of the script)" if args.tiny else ""),
        "batch": args.batch, "seq": args.seq, "autocast": "bfloat16", "optimizer": "AdamW(fused=True)",
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "ms_per_step": results,
        "speedup": {v: baseline / min(results[v]) for v in variants[1:]},
        "profile": profiles,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
