"""``layernorm bench``: the Triton kernels against their peers, in GB/s and % of the copy ceiling.

Method: a norm is memory-bound, so each pass
is scored by the bytes it must move over its median time
(``triton.testing.do_bench``, CUDA events), and compared with the device's
copy ceiling (``b.copy_(a)`` on 1 GiB, bytes read + written) measured in the
same process. Bytes per pass, for M rows of N elements of s bytes:

- LayerNorm / RMSNorm: forward 2·M·N·s, backward 3·M·N·s, both 5·M·N·s
- add + norm:          forward 4·M·N·s, backward 4·M·N·s, both 8·M·N·s

Peers: PyTorch's op, ``torch.compile`` of it, and Liger-Kernel when it imports
(for add + norm: ``x + r`` followed by each plain norm, ours included). Every
implementation's output and input gradient are checked against float32
PyTorch before it is timed; one that disagrees is reported, not timed.

Writes ``results.json`` (after every case, so a run cut short keeps what it
measured; ``"complete"`` says whether it finished) and one ``<op>.png`` per
operation (GB/s against N, one line per implementation) under ``--out``.
``--cuda-graph`` adds each implementation's GPU-only time (replayed from a
CUDA graph), which separates the kernels from the host's launch cost.
``--host-time`` adds the host microseconds per call at M = 8 rows, every
implementation, forward and forward + backward (:mod:`layernorm.cli.hosttime`),
to the printed tables and ``results.json`` (``"host_time"``).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from . import hosttime
from .files import write_atomic

OPS = ("layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm")
PASSES = ("forward", "backward", "both")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

# (x dtype, weight dtype, M, N): the standard shapes (the widest rows at fewer rows; small M for latency).
_WIDE = [(32768, n) for n in (768, 1024, 2048, 4096, 8192, 16384)] + [(4096, 65536)]
_LATENCY = [(8, 4096), (512, 4096)]
STANDARD_CASES = (
    [("bf16", "bf16", m, n) for m, n in _WIDE + _LATENCY]
    + [("fp32", "fp32", 32768, n) for n in (1024, 4096, 16384)]
    + [("bf16", "fp32", m, n) for m, n in _WIDE + _LATENCY]
)
OURS = "layernorm"
DEVICE = "cuda"  # the tests run the whole pipeline on the CPU interpreter with a stub timer


@dataclass
class Result:
    op: str
    dtype: str
    weight_dtype: str
    M: int
    N: int
    impl: str
    pass_: str
    ms: float = float("nan")
    gbps: float = float("nan")
    pct_ceiling: float = float("nan")
    ratio_to_best_peer: float = float("nan")
    note: str = ""
    graph_ms: float = float("nan")  # --cuda-graph: the same work replayed from a CUDA graph (no host)
    graph_gbps: float = float("nan")


@dataclass
class Case:
    op: str
    dtype: str
    weight_dtype: str
    M: int
    N: int
    results: List[Result] = field(default_factory=list)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--op", action="append", choices=OPS + ("all",),
                        help="operation (repeatable; default layer_norm; 'all' for every one)")
    parser.add_argument("--shape", action="append", metavar="MxN",
                        help="rows x features (repeatable); default: the standard shapes")
    parser.add_argument("--dtype", action="append", choices=tuple(DTYPES),
                        help="input dtype for --shape (repeatable; default bf16)")
    parser.add_argument("--weight-dtype", choices=tuple(DTYPES),
                        help="weight/bias dtype for --shape (default: the input's)")
    parser.add_argument("--pass", dest="passes", action="append", choices=PASSES,
                        help="pass to time (repeatable; default all three)")
    parser.add_argument("--impl", action="append",
                        help="only these implementations (repeatable): layernorm, torch, torch.compile, liger, "
                             "liger fused, add + layernorm")
    parser.add_argument("--rep", type=int, default=100, help="do_bench rep in ms (default 100)")
    parser.add_argument("--warmup", type=int, default=25, help="do_bench warmup in ms (default 25)")
    parser.add_argument("--out", default="runs/bench", help="folder for results.json and the plots")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG plots")
    parser.add_argument("--host-time", action="store_true",
                        help="also measure host microseconds per call (M = 8, N = 1024 and 4096, forward and "
                             "forward + backward, every implementation; see layernorm.cli.hosttime)")
    parser.add_argument("--host-time-only", action="store_true", help="only the host-time measurement")
    parser.add_argument("--host-calls", type=int, default=2000, help="calls per host-time figure (default 2000)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="also time each implementation replayed from a CUDA graph: its GPU time "
                             "without the host's launch cost (backward = both - forward)")


# ---------------------------------------------------------------------------
# Implementations: each maps (x, residual, weight, bias, eps) -> (y,) or (y, r').


def _is_rms(op: str) -> bool:
    return op.endswith("rms_norm")


def _is_add(op: str) -> bool:
    return op.startswith("add_")


def _torch_norm(op: str):
    rms = _is_rms(op)

    def norm(x, w, b, eps):
        if rms:
            return F.rms_norm(x, (x.shape[-1],), w, eps)
        return F.layer_norm(x, (x.shape[-1],), w, b, eps)

    return norm


def _with_add(op: str, norm):
    """Plain ops: the norm itself; add ops: ``r' = x + r`` then the norm (the unfused peer)."""
    if not _is_add(op):
        return lambda x, r, w, b, eps: (norm(x, w, b, eps),)

    def add_then_norm(x, r, w, b, eps):
        s = x + r
        return norm(s, w, b, eps), s

    return add_then_norm


def _ours(op: str):
    import layernorm

    if op == "layer_norm":
        return lambda x, r, w, b, eps: (layernorm.layer_norm(x, (x.shape[-1],), w, b, eps, impl="triton"),)
    if op == "rms_norm":
        return lambda x, r, w, b, eps: (layernorm.rms_norm(x, (x.shape[-1],), w, eps, impl="triton"),)
    if op == "add_layer_norm":
        return lambda x, r, w, b, eps: layernorm.add_layer_norm(x, r, (x.shape[-1],), w, b, eps, impl="triton")
    return lambda x, r, w, b, eps: layernorm.add_rms_norm(x, r, (x.shape[-1],), w, eps, impl="triton")


def _liger_norm(op: str):
    """Liger-Kernel's norm as a function of (x, w, b, eps), or None when it does not import."""
    try:
        if _is_rms(op):
            from liger_kernel.ops.rms_norm import LigerRMSNormFunction

            # in_place=False: its default writes dx over dy, which the timing loop reuses
            return lambda x, w, b, eps: LigerRMSNormFunction.apply(x, w, eps, 0.0, "llama", False)
        from liger_kernel.ops.layer_norm import LigerLayerNormFunction

        return lambda x, w, b, eps: LigerLayerNormFunction.apply(x, w, b, eps)
    except Exception:  # not installed, or an API this version does not have
        return None


def implementations(op: str, wanted: Optional[List[str]]) -> Dict[str, Callable]:
    impls: Dict[str, Callable] = {OURS: _ours(op)}
    impls["torch"] = _with_add(op, _torch_norm(op))
    impls["torch.compile"] = torch.compile(_with_add(op, _torch_norm(op)), dynamic=False)
    liger = _liger_norm(op)
    if liger is not None:
        impls["liger"] = _with_add(op, liger)
    if op == "add_rms_norm":
        try:
            from liger_kernel.ops.fused_add_rms_norm import LigerFusedAddRMSNormFunction

            impls["liger fused"] = lambda x, r, w, b, eps: LigerFusedAddRMSNormFunction.apply(x, r, w, eps)
        except Exception:
            pass
    if _is_add(op):
        plain = _ours(op[len("add_"):])
        impls["add + layernorm"] = _with_add(op, lambda x, w, b, eps: plain(x, None, w, b, eps)[0])
    if wanted:
        impls = {k: v for k, v in impls.items() if k in wanted}
    return impls


# ---------------------------------------------------------------------------
# Measuring


def _do_bench(fn, args, grad_to_none=None) -> float:
    from triton.testing import do_bench

    return do_bench(fn, warmup=args.warmup, rep=args.rep, grad_to_none=grad_to_none, return_mode="median")


def copy_ceiling_gbps(args) -> float:
    """GB/s of a 1 GiB device-to-device copy, bytes read plus written."""
    a = torch.empty(1 << 29, dtype=torch.bfloat16, device="cuda").normal_()
    b = torch.empty_like(a)
    ms = _do_bench(lambda: b.copy_(a), args)
    del a, b
    return 2 * (1 << 30) / (ms * 1e-3) / 1e9


def _bytes(op: str, pass_: str, m: int, n: int, element_bytes: int) -> int:
    per_pass = {"forward": 4, "backward": 4, "both": 8} if _is_add(op) else {"forward": 2, "backward": 3, "both": 5}
    return per_pass[pass_] * m * n * element_bytes


def _inputs(case: Case):
    dtype, wdtype = DTYPES[case.dtype], DTYPES[case.weight_dtype]
    g = torch.Generator(device=DEVICE).manual_seed(0)

    def rnd(*shape, dt, scale=1.0, offset=0.0):
        return (scale * torch.randn(*shape, generator=g, device=DEVICE, dtype=torch.float32) + offset).to(dt)

    x = rnd(case.M, case.N, dt=dtype, scale=0.5, offset=-2.3)
    r = rnd(case.M, case.N, dt=dtype) if _is_add(case.op) else None
    w = rnd(case.N, dt=wdtype, scale=0.5, offset=1.0)
    b = None if _is_rms(case.op) else rnd(case.N, dt=wdtype, scale=0.5)
    dys = [rnd(case.M, case.N, dt=dtype)] + ([rnd(case.M, case.N, dt=dtype)] if _is_add(case.op) else [])
    return x, r, w, b, dys


def _check(fn, x, r, w, b, eps, op, dys) -> Optional[str]:
    """None when fn's outputs and its gradient for x match float32 PyTorch, else a short reason."""
    tol = 1e-3 if x.dtype == torch.float32 else 6e-2

    def run(f, cast):
        leaf = cast(x).detach().requires_grad_()
        out = f(leaf, None if r is None else cast(r), None if w is None else cast(w),
                None if b is None else cast(b), eps)
        grad, = torch.autograd.grad(out, leaf, [d.to(o.dtype) for o, d in zip(out, dys)])
        return [o.detach() for o in out] + [grad]

    ref = run(_with_add(op, _torch_norm(op)), lambda t: t.float())
    got = run(fn, lambda t: t)
    names = ["output", "residual"][: len(ref) - 1] + ["gradient"]
    for name, o, e in zip(names, got, ref):
        err = (o.float() - e).abs().max().item()
        if not err <= tol * max(1.0, e.abs().max().item()):
            return f"wrong {name}: max error {err:.3g}"
    return None


def _graph_ms(fn, args, leaves) -> float:
    """Median ms of ``fn`` replayed from a CUDA graph (NaN when it cannot be captured).

    Per-call timing includes the host's launch cost whenever that exceeds the
    GPU work (small M, or Python on the backward path); a graph replay has
    none, so the two figures side by side separate kernels from launches.
    Gradients are set to None before capture, as do_bench's ``grad_to_none``
    does before each per-call run.
    """
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up off the capture, as PyTorch's docs ask
            for _ in range(3):
                for t in leaves:
                    t.grad = None
                fn()
        torch.cuda.current_stream().wait_stream(side)
        for t in leaves:
            t.grad = None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        ms = _do_bench(graph.replay, args)
        del graph
        return ms
    except Exception as exc:  # a peer that syncs with the host, or allocates outside the pool
        print(f"    (no CUDA graph: {type(exc).__name__}: {str(exc).splitlines()[0][:80]})", flush=True)
        torch.cuda.synchronize()
        return float("nan")


def _graph_times(fn, x, r, w, b, eps, dys, leaves, passes, args) -> Dict[str, float]:
    """GPU-only ms per pass: forward and both captured; backward is their difference."""
    def forward():
        with torch.no_grad():
            fn(x, r, w, b, eps)

    times = {"forward": _graph_ms(forward, args, leaves)}
    if "both" in passes or "backward" in passes:  # no capture of a pass nobody asked for
        times["both"] = _graph_ms(lambda: torch.autograd.backward(fn(x, r, w, b, eps), dys), args, leaves)
        times["backward"] = times["both"] - times["forward"]
    return {p: t for p, t in times.items() if p in passes}


def measure_case(case: Case, impls: Dict[str, Callable], passes, ceiling: float, args) -> None:
    x0, r0, w0, b0, dys = _inputs(case)
    eps = 1e-5
    element_bytes = x0.element_size()
    for name, fn in impls.items():
        try:
            reason = _check(fn, x0, r0, w0, b0, eps, case.op, dys)
        except Exception as exc:  # a peer that refuses the shape (row too wide, dtype mix)
            reason = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
        if reason is not None:
            for p in passes:
                case.results.append(Result(case.op, case.dtype, case.weight_dtype, case.M, case.N, name, p, note=reason))
            continue
        leaves = [t.detach().clone().requires_grad_() for t in (x0, r0, w0, b0) if t is not None]
        it = iter(leaves)
        x, r, w, b = (None if t is None else next(it) for t in (x0, r0, w0, b0))
        graph = (_graph_times(fn, x, r, w, b, eps, dys, leaves, passes, args)
                 if getattr(args, "cuda_graph", False) else {})
        for p in passes:
            if p == "forward":
                with torch.no_grad():
                    ms = _do_bench(lambda: fn(x, r, w, b, eps), args)
            elif p == "backward":
                outs = fn(x, r, w, b, eps)
                ms = _do_bench(lambda: torch.autograd.backward(outs, dys, retain_graph=True), args, grad_to_none=leaves)
                del outs
            else:
                ms = _do_bench(lambda: torch.autograd.backward(fn(x, r, w, b, eps), dys), args, grad_to_none=leaves)
            bytes_ = _bytes(case.op, p, case.M, case.N, element_bytes)
            gbps = bytes_ / (ms * 1e-3) / 1e9
            graph_ms = graph.get(p, float("nan"))
            case.results.append(Result(case.op, case.dtype, case.weight_dtype, case.M, case.N, name, p,
                                       ms=ms, gbps=gbps, pct_ceiling=100 * gbps / ceiling, graph_ms=graph_ms,
                                       graph_gbps=bytes_ / (graph_ms * 1e-3) / 1e9 if graph_ms > 0 else float("nan")))
        del leaves, x, r, w, b
    for p in passes:
        rows = [res for res in case.results if res.pass_ == p]
        peers = [res.gbps for res in rows if res.impl not in (OURS,) and not math.isnan(res.gbps)]
        best = max(peers) if peers else float("nan")
        for res in rows:
            res.ratio_to_best_peer = res.gbps / best if best == best and best > 0 else float("nan")
    del x0, r0, w0, b0, dys
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------
# Summary: how ours compares with its peers, per op, dtypes and pass


@dataclass
class Summary:
    op: str
    dtype: str
    weight_dtype: str
    pass_: str
    shapes: int  # shapes measured
    fastest: int  # of those compared with a peer, where ours is at least as fast as the best
    compared: int
    worst_ratio: float  # ours / best peer, GB/s, at the worst shape
    worst_shape: str
    pct_ceiling_min: float
    pct_ceiling_max: float


def summarize(results: List[Result]) -> List[Summary]:
    groups: Dict[tuple, List[Result]] = {}
    for r in results:
        if r.impl == OURS:
            groups.setdefault((r.op, r.dtype, r.weight_dtype, r.pass_), []).append(r)
    rows = []
    for (op, dtype, weight_dtype, pass_), rs in groups.items():
        compared = [r for r in rs if not math.isnan(r.ratio_to_best_peer)]
        worst = min(compared, key=lambda r: r.ratio_to_best_peer, default=None)
        pct = [r.pct_ceiling for r in rs if not math.isnan(r.pct_ceiling)]
        rows.append(Summary(op, dtype, weight_dtype, pass_, len(rs), sum(r.ratio_to_best_peer >= 1.0 for r in compared),
                            len(compared), worst.ratio_to_best_peer if worst else float("nan"),
                            f"{worst.M}x{worst.N}" if worst else "", min(pct, default=float("nan")),
                            max(pct, default=float("nan"))))
    return rows


def print_summary(rows: List[Summary]) -> None:
    print(f"{OURS} against the best peer, by op, dtype and pass:")
    for s in rows:
        dt = s.dtype if s.weight_dtype == s.dtype else f"{s.dtype}/{s.weight_dtype}"
        print(f"  {s.op:<15} {dt:<9} {s.pass_:<9} fastest at {s.fastest} of {s.compared} shapes; worst ratio "
              f"{s.worst_ratio:.3f} ({s.worst_shape}); {s.pct_ceiling_min:.0f}-{s.pct_ceiling_max:.0f}% of the copy ceiling")


# ---------------------------------------------------------------------------
# Output


def print_table(cases: List[Case], ceiling: float) -> None:
    print(f"copy ceiling: {ceiling:.0f} GB/s")
    graphs = any(r.graph_ms == r.graph_ms for c in cases for r in c.results)
    header = (f"{'op':<15} {'dtype':<9} {'M':>6} {'N':>6} {'pass':<9} {'impl':<16} {'GB/s':>7} {'% ceil':>7} {'us':>9} "
              f"{'vs best peer':>12}" + (f" {'graph us':>9} {'graph GB/s':>10}" if graphs else ""))
    print(header)
    print("-" * len(header))
    for case in cases:
        for res in case.results:
            dt = res.dtype if res.weight_dtype == res.dtype else f"{res.dtype}/{res.weight_dtype}"
            if res.note:
                print(f"{res.op:<15} {dt:<9} {res.M:>6} {res.N:>6} {res.pass_:<9} {res.impl:<16} {res.note}")
                continue
            print(f"{res.op:<15} {dt:<9} {res.M:>6} {res.N:>6} {res.pass_:<9} {res.impl:<16} "
                  f"{res.gbps:>7.0f} {res.pct_ceiling:>6.1f}% {res.ms * 1e3:>9.1f} {res.ratio_to_best_peer:>12.3f}"
                  + (f" {res.graph_ms * 1e3:>9.1f} {res.graph_gbps:>10.0f}" if graphs else ""))


def plot(cases: List[Case], out_dir: str) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for op in sorted({c.op for c in cases}):
        results = [r for c in cases if c.op == op for r in c.results if r.M >= 4096 and not r.note]
        groups = sorted({(r.dtype, r.weight_dtype) for r in results})
        passes = [p for p in PASSES if any(r.pass_ == p for r in results)]
        if not results or not groups:
            continue
        fig, axes = plt.subplots(len(passes), len(groups), figsize=(5 * len(groups), 3.5 * len(passes)), squeeze=False)
        for i, p in enumerate(passes):
            for j, (dt, wdt) in enumerate(groups):
                ax = axes[i][j]
                for impl in sorted({r.impl for r in results}):
                    pts = sorted((r.N, r.gbps) for r in results if r.impl == impl and r.pass_ == p and r.dtype == dt and r.weight_dtype == wdt)
                    if pts:
                        ax.plot([q[0] for q in pts], [q[1] for q in pts], marker="o", label=impl)
                ax.set_xscale("log", base=2)
                ax.set_title(f"{op} {p}, x {dt}, weights {wdt}")
                ax.set_xlabel("N")
                ax.set_ylabel("GB/s")
                ax.grid(True, alpha=0.3)
                ax.legend(fontsize=7)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{op}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _ops(args) -> List[str]:
    ops = args.op or ["layer_norm"]
    return list(OPS) if "all" in ops else ops


def measure_host_time(impls_by_op: Dict[str, Dict[str, Callable]], args) -> list:
    """Host µs per call of every implementation at M = 8 (see :mod:`layernorm.cli.hosttime`), bf16."""
    rows = []
    for op, impls in impls_by_op.items():
        rows += hosttime.measure(op, impls, "bf16", torch.bfloat16, calls=args.host_calls, device=DEVICE)
        print(f"  host time {op}: " + ", ".join(
            f"{r.impl} {r.pass_} {r.M}x{r.N} {r.us:.1f} us" for r in rows if r.op == op and not r.note), flush=True)
    return rows


def _cases(args) -> List[Case]:
    ops = _ops(args)
    if args.shape:
        shapes = []
        for text in args.shape:
            try:
                m, n = (int(v) for v in text.lower().split("x"))
            except ValueError:
                raise SystemExit(f"--shape takes MxN, e.g. 32768x4096; got {text!r}")
            shapes.append((m, n))
        dtypes = args.dtype or ["bf16"]
        spec = [(d, args.weight_dtype or d, m, n) for d in dtypes for m, n in shapes]
    else:
        spec = list(STANDARD_CASES)
        if args.dtype:
            spec = [s for s in spec if s[0] in args.dtype]
    return [Case(op, d, wd, m, n) for op in ops for d, wd, m, n in spec]


def print_progress(case: Case) -> None:
    """One line per implementation: its µs per pass (and GPU-only µs with --cuda-graph)."""
    print(f"  {case.op} {case.dtype}/{case.weight_dtype} {case.M}x{case.N}:", flush=True)
    for impl in dict.fromkeys(r.impl for r in case.results):
        rows = [r for r in case.results if r.impl == impl]
        if rows[0].note:
            print(f"    {impl:<16} {rows[0].note}", flush=True)
            continue
        figures = ", ".join(
            f"{r.pass_} {r.ms * 1e3:.1f} us {r.gbps:.0f} GB/s ({r.ratio_to_best_peer:.2f}x)"
            + (f" [graph {r.graph_ms * 1e3:.1f} us {r.graph_gbps:.0f} GB/s]" if r.graph_ms == r.graph_ms else "")
            for r in rows)
        print(f"    {impl:<16} {figures}", flush=True)


def write_results(out_dir: str, env: dict, ceiling: float, launch_table: str, cases: List[Case],
                  complete: bool = False, host_time: Optional[list] = None) -> str:
    """results.json, written whole or not at all; ``complete`` once every case is measured."""
    path = os.path.join(out_dir, "results.json")
    results = [r for c in cases for r in c.results]
    payload = {"environment": env, "copy_ceiling_gbps": ceiling, "launch_table": launch_table,
               "complete": complete,
               "results": [_record(r) for r in results],
               "host_time": [_record(r) for r in host_time or []],
               "summary": [_record(s) for s in summarize(results)]}
    write_atomic(path, json.dumps(payload, indent=1))
    return path


def _record(r) -> dict:
    record = asdict(r)
    record["pass"] = record.pop("pass_")
    return record


def environment() -> Dict[str, str]:
    import triton

    return {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available():
        print("layernorm bench: no CUDA device here; the benchmark times GPU kernels and needs one.", file=sys.stderr)
        return 2
    try:
        import triton  # noqa: F401
    except ImportError:
        print("layernorm bench: Triton is not installed (pip install triton).", file=sys.stderr)
        return 2
    from ..kernels import table

    for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, knob):  # one compiled graph per shape
            setattr(torch._dynamo.config, knob, 1024)
    passes = args.passes or list(PASSES)
    cases = [] if getattr(args, "host_time_only", False) else _cases(args)
    env = environment()
    print(" ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    ceiling = copy_ceiling_gbps(args) if cases else float("nan")
    print(f"copy ceiling {ceiling:.0f} GB/s", flush=True)
    ops = sorted(_ops(args))  # the cases' ops and the host-time ops alike
    impls_by_op = {op: implementations(op, args.impl) for op in ops}
    os.makedirs(args.out, exist_ok=True)
    host = []
    if getattr(args, "host_time", False) or getattr(args, "host_time_only", False):
        host = measure_host_time(impls_by_op, args)
        write_results(args.out, env, ceiling, table.SOURCE, [], host_time=host)
    for done, case in enumerate(cases, 1):
        measure_case(case, impls_by_op[case.op], passes, ceiling, args)
        print_progress(case)
        # after every case: a run cut short (a device call's time limit) still leaves its figures
        write_results(args.out, env, ceiling, table.SOURCE, cases[:done], host_time=host)
    write_results(args.out, env, ceiling, table.SOURCE, cases, complete=True, host_time=host)
    plots = []
    if not args.no_plot and cases:
        if importlib.util.find_spec("matplotlib") is None:
            print("no plots: matplotlib is not installed (pip install 'layernorm[experiments]')")
        else:
            plots = plot(cases, args.out)
    print()
    if cases:
        print_table(cases, ceiling)
    if host:
        hosttime.print_table(host)
    if cases:
        print()
        print_summary(summarize([r for c in cases for r in c.results]))
    print(f"\nwrote {os.path.join(args.out, 'results.json')}" + "".join(f", {p}" for p in plots))
    return 0
