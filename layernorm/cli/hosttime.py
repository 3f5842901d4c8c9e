"""Host time per call: what a small normalization costs the CPU that launches it.

At a few rows the GPU work of a norm is a few microseconds, so what a model
waits for is the host: Python, the autograd engine, the launches. Here each
implementation is called back to back many times at small shapes (M = 8 rows
of N = 1024 and 4096), and the figure is host wall time per call:

1. synchronize, so the queue is empty;
2. time ``calls`` calls with ``time.perf_counter``;
3. stop the clock *before* the closing synchronize.

At these sizes the GPU keeps up with the host, so the queue never fills and
the host is never held back by it: the time is the host's own. Two passes per
implementation: the forward without autograd, and forward + backward
(``torch.autograd.backward`` of the outputs, gradients of every input).

``layernorm bench --host-time`` runs it beside the bandwidth figures (or
``--host-time-only`` alone) and writes the rows into ``results.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Sequence, Tuple

import torch

SHAPES: Tuple[Tuple[int, int], ...] = ((8, 1024), (8, 4096))
HOST_PASSES = ("forward", "forward+backward")


@dataclass
class HostTime:
    op: str
    dtype: str
    M: int
    N: int
    impl: str
    pass_: str
    us: float = float("nan")
    note: str = ""


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def host_us(fn: Callable[[], object], calls: int, device: str) -> float:
    """Host microseconds per call of ``fn`` (see the module docstring)."""
    for _ in range(max(1, calls // 10)):  # warm-up: compiles, allocator pools, autotuners
        fn()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    _synchronize(device)
    return elapsed / calls * 1e6


def _inputs(op: str, m: int, n: int, dtype: torch.dtype, device: str):
    g = torch.Generator(device=device).manual_seed(0)

    def rnd(*shape, scale=1.0, offset=0.0):
        return (scale * torch.randn(*shape, generator=g, device=device) + offset).to(dtype).requires_grad_()

    x = rnd(m, n, scale=0.5, offset=-2.3)
    r = rnd(m, n) if op.startswith("add_") else None
    w = rnd(n, scale=0.5, offset=1.0)
    b = None if op.endswith("rms_norm") else rnd(n, scale=0.5)
    return x, r, w, b


def measure(op: str, impls: Dict[str, Callable], dtype_name: str, dtype: torch.dtype,
            shapes: Iterable[Tuple[int, int]] = SHAPES, calls: int = 2000, device: str = "cuda") -> List[HostTime]:
    """Host µs per call of each implementation (``bench.implementations``' signature) at ``shapes``."""
    rows: List[HostTime] = []
    for m, n in shapes:
        x, r, w, b = _inputs(op, m, n, dtype, device)
        eps = 1e-5
        for name, fn in impls.items():
            try:
                outs = fn(x, r, w, b, eps)
                dys = [torch.randn_like(o) for o in outs]

                def forward():
                    with torch.no_grad():
                        fn(x, r, w, b, eps)

                def forward_backward():
                    torch.autograd.backward(fn(x, r, w, b, eps), dys)

                for pass_, run in (("forward", forward), ("forward+backward", forward_backward)):
                    rows.append(HostTime(op, dtype_name, m, n, name, pass_, host_us(run, calls, device)))
            except Exception as exc:  # a peer that refuses the input
                reason = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                rows.extend(HostTime(op, dtype_name, m, n, name, p, note=reason) for p in HOST_PASSES)
            for t in (x, r, w, b):
                if t is not None:
                    t.grad = None
    return rows


def print_table(rows: Sequence[HostTime]) -> None:
    """One line per (op, shape, pass): every implementation's µs."""
    impls = list(dict.fromkeys(r.impl for r in rows))
    print(f"host us per call  {'':<40}" + "".join(f"{i:>16}" for i in impls))
    keys = list(dict.fromkeys((r.op, r.dtype, r.M, r.N, r.pass_) for r in rows))
    for op, dtype, m, n, pass_ in keys:
        by_impl = {r.impl: r for r in rows if (r.op, r.dtype, r.M, r.N, r.pass_) == (op, dtype, m, n, pass_)}
        cells = "".join(f"{by_impl[i].us:>16.1f}" if i in by_impl else f"{'':>16}" for i in impls)
        print(f"  {op} {dtype} {m}x{n} {pass_:<17}".ljust(58) + cells)
