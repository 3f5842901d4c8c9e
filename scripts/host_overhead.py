"""Where the host time of one small call goes: launch-bound rows, measured layer by layer.

At M = 8 rows the GPU work of a LayerNorm backward is a few microseconds, and
what a user waits for is the host: Python, the autograd engine, Triton's
launcher. This script times each layer on its own, so that the cost can be
attributed before anything is changed:

1. an empty Triton kernel launch (Triton's launcher alone), and the same through
   its compiled kernel object (what caching compiled kernels would save);
2. ``launch.norm_forward`` / ``launch.norm_backward`` (allocation, table lookup, launches),
   through Triton's own launch path and through the direct one (layernorm.kernels.direct);
3. ``layernorm.layer_norm`` with and without autograd, and the backward through
   the autograd engine, against torch's op doing the same (both launch paths again);
4. the pieces around a launch: one ``torch.empty``, the API's checks (``impl="torch"``
   against ``F.layer_norm``).

Each figure is host wall time per call: many calls back to back, then one
synchronize, divided by the count (the GPU keeps up at these sizes, so the
queue never fills and the time is the host's). Run on a GPU:

    PYTHONPATH=. python3 scripts/host_overhead.py [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import triton

import layernorm
import torch.nn.functional as F

from layernorm.kernels import direct, launch


@triton.jit
def _empty_kernel(x_ptr, n):
    pass


CALLS = {"calls": 2000, "warmup": 200}  # --quick shrinks them (a smoke run under TRITON_INTERPRET=1)


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def host_us(fn, share: float = 1.0) -> float:
    """Host microseconds per call of ``fn`` (see the module docstring)."""
    calls, warmup = max(1, int(CALLS["calls"] * share)), max(1, int(CALLS["warmup"] * share))
    for _ in range(warmup):
        fn()
    _synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    _synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def _direct_launch_us(x: torch.Tensor, n: int) -> float:
    """The same empty kernel through its CompiledKernel, skipping JITFunction.run's binding and
    specialization: what a launch path that caches compiled kernels would save. NaN where this
    Triton's API differs (or under the interpreter)."""
    try:
        runner = _empty_kernel[(1,)](x, n)[(1, 1, 1)]
        return host_us(lambda: runner(x, n))
    except Exception as exc:  # an API of Triton's internals, not a promise
        print(f"direct launch not measured: {type(exc).__name__}: {exc}")
        return float("nan")


def measure(m: int, n: int, dtype: torch.dtype, device: str) -> dict:
    x = (0.5 * torch.randn(m, n, device=device) - 2.3).to(dtype).requires_grad_()
    w = torch.randn(n, device=device, dtype=dtype, requires_grad=True)
    b = torch.randn(n, device=device, dtype=dtype, requires_grad=True)
    dy = torch.randn(m, n, device=device, dtype=dtype)
    xd, wd, bd = x.detach(), w.detach(), b.detach()
    _, _, mean, rstd = launch.norm_forward(xd, None, wd, bd, 1e-5, False, None)
    figures = {
        "empty triton launch": host_us(lambda: _empty_kernel[(1,)](xd, n)),
        "empty kernel, compiled, direct": _direct_launch_us(xd, n),
        "torch.empty (M, N)": host_us(lambda: torch.empty((m, n), dtype=dtype, device=device)),
    }
    with torch.no_grad():
        figures["F.layer_norm, no grad"] = host_us(lambda: F.layer_norm(x, (n,), w, b))
        figures["layernorm.layer_norm impl=torch, no grad"] = host_us(lambda: layernorm.layer_norm(x, n, w, b,
                                                                                                  impl="torch"))
    for path, enabled in (("triton's launch path", False), ("direct launch", True)):
        direct.ENABLED = enabled
        figures[f"launch.norm_forward [{path}]"] = host_us(
            lambda: launch.norm_forward(xd, None, wd, bd, 1e-5, False, None))
        figures[f"launch.norm_backward [{path}]"] = host_us(
            lambda: launch.norm_backward(dy, xd, None, mean, rstd, wd, bd.dtype, False))
    for impl, enabled in (("triton", False), ("triton", True), ("torch", True)):
        direct.ENABLED = enabled
        label = impl if impl == "torch" else f"{impl} [{'direct launch' if enabled else 'triton launch path'}]"
        with torch.no_grad():
            figures[f"{label}: forward, no grad"] = host_us(lambda: layernorm.layer_norm(x, n, w, b, impl=impl))
        figures[f"{label}: forward with autograd"] = host_us(lambda: layernorm.layer_norm(x, n, w, b, impl=impl))
        y = layernorm.layer_norm(x, n, w, b, impl=impl)
        figures[f"{label}: backward (autograd engine)"] = host_us(
            lambda: torch.autograd.backward(y, dy, retain_graph=True), share=0.25)
        figures[f"{label}: forward + backward"] = host_us(
            lambda: layernorm.layer_norm(x, n, w, b, impl=impl).backward(dy), share=0.25)
    direct.ENABLED = True
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--quick", action="store_true", help="a few calls each (checks the script, measures nothing)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: only under TRITON_INTERPRET=1
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU, Triton interpreter"
    if args.quick:
        CALLS.update(calls=4, warmup=1)
    results = {}
    for m, n in ((8, 4096), (512, 4096)):
        figures = measure(m, n, torch.bfloat16, device)
        results[f"{m}x{n} bf16"] = figures
        print(f"\n=== host time per call, M={m} N={n} bf16 ({where}, "
              f"torch {torch.__version__}, triton {triton.__version__})")
        for name, us in figures.items():
            print(f"  {name:<58} {us:8.1f} us")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
