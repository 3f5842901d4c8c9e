"""Sweep the launch shapes of the norm kernels on the current GPU and write the launch table.

For each element size (bf16 for 2 bytes, fp32 for 4) and each row width
``block_n`` (a power of two), time every candidate (rows per program, warps,
and for the backward programs per SM) of the register path, and the chunked
path's candidates (chunk, rows, warps[, programs per SM]; the split backward;
the backward holding its partial sums in registers; the paired backward) at
wide rows; keep
the fastest. Rows are held in registers up to the widest ``block_n`` where the
register path still beats the chunked one.

Then the common widths that are not powers of two (``EXACT_WIDTHS``: 768,
1536, 3072, 5120, 6144), which a register row pads to the next power of two
(768 columns in 1024 lanes): chunked launches whose chunk tiles the row
exactly (768 as 3 x 256, several rows per program) against the table's padded
launch; an exact row is written only where it is faster by more than 3%.

Before the timing, every candidate's kernels are compiled in ``--workers``
parallel processes (layernorm.kernels.precompile) into Triton's on-disk
cache: compiled one at a time as each is first timed, they would take most
of the sweep's time (about a second each, over 500 kernels for bf16 and fp32).

Every candidate is checked before it is timed: the forward's y and the
backward's dx, dweight and dbias against PyTorch's in float32; a wrong one is
logged as an error and never chosen.

Timing: ``triton.testing.do_bench`` median over about 1/4 GiB of rows, LayerNorm
with weight and bias (the common case); the backward includes the dweight /
dbias reduction.

    python scripts/sweep_launch.py --out runs/sweep [--write] [--quick] [--widths N ...]

``--write`` rewrites the literals between the BEGIN/END TABLE marks of
layernorm/kernels/table.py (layernorm.kernels.table_writer); the table is
always written to OUT/table.py and every timing to OUT/sweep.json.

    python scripts/sweep_launch.py --registers

needs no GPU: it compiles every row of the current table for sm_90 (all
kernel variants), the exact-width candidates and the wide-row backward
candidates (held, paired), and prints registers per thread, stack frame
(spills) and programs per SM that the registers allow, read with the
cuobjdump that Triton ships.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from layernorm.kernels import precompile, table, table_writer  # noqa: E402
from layernorm.kernels.table import Launch  # noqa: E402

DTYPES = {2: torch.bfloat16, 4: torch.float32}
TARGET_BYTES = 1 << 28  # per input tensor: well past the 50 MB L2
# Widths swept (the transformer range and the chunked path); narrower rows keep the table's rows.
REGISTER_WIDTHS = [256, 512, 1024, 2048, 4096, 8192, 16384]
CHUNKED_WIDTHS = [8192, 16384, 65536]
# Hidden sizes of common models that are not powers of two (GPT-2 / BERT, Qwen2-1.5B, Phi-3 and
# Llama-3.2-3B, Llama-2-13B, GPT-NeoX-20B / Llama-style 6144).
EXACT_WIDTHS = [768, 1536, 3072, 5120, 6144]
ALL_WIDTHS = sorted(set(REGISTER_WIDTHS) | set(CHUNKED_WIDTHS) | set(EXACT_WIDTHS))  # what --widths may name


def bench(fn, quick):
    from triton.testing import do_bench

    return do_bench(fn, warmup=5 if quick else 10, rep=15 if quick else 40, return_mode="median")


def inputs(m, n, dtype):
    x = (0.5 * torch.randn(m, n, device="cuda") - 2.3).to(dtype)
    w = (1 + 0.5 * torch.randn(n, device="cuda")).to(dtype)
    b = (0.5 * torch.randn(n, device="cuda")).to(dtype)
    dy = torch.randn(m, n, device="cuda").to(dtype)
    return x, w, b, dy


def rows_for(n, element_bytes):
    return min(1 << 24, max(8, TARGET_BYTES // (n * element_bytes)))


def time_forward(cand, x, w, b, quick):
    with table.forced(launch=cand):
        y, _, mean, rstd = precompile.forward(x, w, b)
        ref = torch.nn.functional.layer_norm(x.float(), x.shape[-1:], w.float(), b.float())
        if not torch.allclose(y.float(), ref, atol=6e-2, rtol=0):
            raise RuntimeError(f"wrong forward for {cand}")
        return bench(lambda: precompile.forward(x, w, b), quick), (mean, rstd)


_expected_grads = []  # [(the inputs, their float32 gradients)] of the width being swept


def expected_grads(x, w, b, dy):
    """dx, dweight, dbias of LayerNorm in float32 through PyTorch's autograd, for the inputs of one
    width (computed once, kept until ``release_width``)."""
    inputs_now = (x, w, b, dy)
    if not (_expected_grads and all(held is now for held, now in zip(_expected_grads[0][0], inputs_now))):
        xf, wf, bf = (t.detach().float().requires_grad_() for t in (x, w, b))
        torch.nn.functional.layer_norm(xf, x.shape[-1:], wf, bf).backward(dy.float())
        _expected_grads[:] = [(inputs_now, (xf.grad, wf.grad, bf.grad))]
    return _expected_grads[0][1]


def release_width():
    """Free what one width's sweep held on the GPU (its inputs are dropped by the caller)."""
    _expected_grads.clear()
    torch.cuda.empty_cache()


def check_backward(cand, got, expected):
    """A candidate whose gradients are wrong is refused (logged as an error), never timed."""
    for name, g, want in zip(("dx", "dweight", "dbias"), got, expected):
        err = (torch.linalg.vector_norm(g.float() - want) / torch.linalg.vector_norm(want)).item()
        if not err < 2e-2:  # bf16 rounding is 4e-3; a wrong kernel is off by order 1 (or NaN)
            raise RuntimeError(f"wrong {name} for {cand}: relative error {err:.3g}")


def time_backward(cand, x, w, b, dy, stats, quick):
    mean, rstd = stats
    with table.forced(launch=cand):
        check_backward(cand, precompile.backward(dy, x, w, b, mean, rstd), expected_grads(x, w, b, dy))
        return bench(lambda: precompile.backward(dy, x, w, b, mean, rstd), quick)


def forward_candidates(block_n, single, quick):
    out = []
    if single:
        for rows in (1, 2, 4, 8, 16, 32):
            elems = rows * block_n
            if elems > 16384 or elems < 2048 and rows < 32:
                continue  # too big for registers, or too few bytes in flight
            for warps in (4, 8, 16, 32):
                per_thread = elems / (warps * 32)
                if 8 <= per_thread <= 32:
                    out.append(Launch(rows, block_n, warps, True))
                    if block_n >= 4096:  # persistent, double-buffered
                        out.append(Launch(rows, block_n, warps, True, 1))
    else:
        for chunk in (2048, 4096, 8192):
            for warps in (4, 8, 16, 32):  # 32: one program per SM, fewer rows to keep in L2 for the re-read
                if 4 <= chunk / (warps * 32) <= 16:
                    out.append(Launch(1, chunk, warps, False))
                    # persistent: at most 1 or 2 rows per SM in flight, so the second pass reads L2
                    out += [Launch(1, chunk, warps, False, p) for p in (1, 2) if warps * p <= 32]
    return out[:: 2] if quick and len(out) > 6 else out


def backward_candidates(block_n, single, quick):
    out = []
    pps = (1, 2) if quick else (1, 2, 3)
    if single:
        for rows in (1, 2, 4, 8, 16):
            elems = rows * block_n
            if elems > 16384 or elems < 1024 and rows < 16:
                continue
            for warps in (4, 8, 16, 32):
                per_thread = elems / (warps * 32)
                if 4 <= per_thread <= 32 and elems <= 8192:
                    out += [Launch(rows, block_n, warps, True, p) for p in pps]
                if elems >= 4096 and 8 <= per_thread <= 16:
                    # lean: the widest register rows, a register per element lighter (16384 at
                    # 32 warps spills 176 bytes a thread this way, 472 double-buffered)
                    out += [Launch(rows, block_n, warps, True, p, True) for p in (1, 2) if warps * p <= 32]
    else:
        for rows in (1, 2, 4):  # more rows cut the partial-row traffic per row, for more L2 footprint
            for chunk in (1024, 2048, 4096):
                for warps in (4, 8, 16):
                    if 4 <= rows * chunk / (warps * 32) <= 16:
                        out += [Launch(rows, chunk, warps, False, p) for p in (0.25, 0.5, 1, 2)]
        # split: row sums, then (column tile x row band) programs; chunk is the tile's width
        for rows, tile, warps in ((4, 512, 4), (8, 512, 8), (4, 1024, 8), (8, 1024, 8), (16, 512, 8)):
            out += [Launch(rows, tile, warps, False, p, split=True) for p in (2, 4, 8)]
        if block_n <= table.HOLD_MAX_N:
            # the partial sums held in registers (2 x block_n floats over the program's threads: 16 warps
            # at least), one program per SM, at least two chunks a row; the pass over the chunks unrolled
            # or a loop (fewer registers, more instructions)
            for rows, chunk, warps, unroll in itertools.product((1, 2), (2048, 4096), (16, 32), (True, False)):
                if 4 <= rows * chunk / (warps * 32) <= 16 and chunk < block_n:
                    out.append(Launch(rows, chunk, warps, False, 1, hold_partials=True, unroll=unroll))
        if block_n >= 16384:
            # paired: row programs writing dx beside column-tile programs summing dweight / dbias, per band
            # of rows read by both at about the same time (the second read from L2)
            for chunk, warps, band_rows in itertools.product((2048, 4096), (8, 16), (16, 32, 64)):
                out.append(Launch(1, chunk, warps, False, 1, band_rows=band_rows))
    return out[:: 2] if quick and len(out) > 8 else out


def exact_candidates(n, backward, quick):
    """Chunked launches whose chunk tiles a row of n columns exactly, several rows per program."""
    chunk = table.exact_chunk(n)
    out = []
    for rows in (1, 2, 4, 8, 16):
        for warps in (4, 8, 16):
            per_thread = rows * chunk / (warps * 32)
            if not 4 <= per_thread <= 16:
                continue
            if backward:
                out += [Launch(rows, chunk, warps, False, p) for p in ((1, 2) if quick else (1, 2, 4))]
            else:
                out.append(Launch(rows, chunk, warps, False))
    return out[:: 2] if quick and len(out) > 6 else out


# --widths: the widths to sweep (power-of-two and exact ones alike); None sweeps them all. The
# table's rows at the other widths stay as they are.
ONLY_WIDTHS = None


def _chosen(widths):
    return [n for n in widths if ONLY_WIDTHS is None or n in ONLY_WIDTHS]


def width_order():
    """The widths swept, the standard shapes' first, so that a spent time budget cuts the narrow ones."""
    return _chosen(sorted(set(REGISTER_WIDTHS) | set(CHUNKED_WIDTHS), key=lambda n: (n < 1024, n)))


def exact_widths():
    """The exact (not power-of-two) widths swept."""
    return _chosen(EXACT_WIDTHS)


def paths_at(block_n, quick):
    """(single_chunk, forward candidates, backward candidates) of each path swept at ``block_n``:
    register rows up to 16384, chunked rows at CHUNKED_WIDTHS."""
    return [(single, forward_candidates(block_n, single, quick), backward_candidates(block_n, single, quick))
            for single in ((True, False) if block_n in CHUNKED_WIDTHS else (True,))
            if not (single and block_n > 16384)]


def jobs(element_bytes, quick):
    """Every launch the sweep of one element size times, for precompiling (the padded launches
    that exact rows are measured against come from the rows just swept: compiled when timed)."""
    dtype = DTYPES[element_bytes]
    out = []
    for n in width_order():
        m = rows_for(n, element_bytes)
        for _, fwd, bwd in paths_at(n, quick):
            out += [precompile.Job(False, dtype, m, n, c) for c in fwd]
            out += [precompile.Job(True, dtype, m, n, c) for c in bwd]
    for n in exact_widths():
        m = rows_for(n, element_bytes)
        for backward in (False, True):
            out += [precompile.Job(backward, dtype, m, n, c) for c in exact_candidates(n, backward, quick)]
    return out


def within_budget(widths, deadline, what):
    """The widths, in order, until the time budget is spent (the rest keep the table's rows)."""
    for n in widths:
        if time.time() > deadline:
            print(f"  time budget spent: {what} >= {n} keep the current table's rows", flush=True)
            return
        yield n


def use_rows(element_bytes, forward, forward_chunked, backward, backward_chunked):
    """Make this process's lookups answer from freshly swept rows of one element size."""
    key = table._element_key(element_bytes)
    table.FORWARD[key], table.FORWARD_CHUNKED[key] = forward, forward_chunked
    table.BACKWARD[key], table.BACKWARD_CHUNKED[key] = backward, backward_chunked
    table._cached.cache_clear()


def time_candidates(candidates, time_one, entry, log):
    """(ms, launch) of every candidate that runs; each timing, or the error of a shape the compiler
    refuses (registers, shared memory), goes into ``log`` beside ``entry``."""
    timed = []
    for cand in candidates:
        row = {**entry, "launch": vars(cand)}
        try:
            ms = time_one(cand)
        except Exception as exc:
            log.append({**row, "error": str(exc)[:200]})
            continue
        timed.append((ms, cand))
        log.append({**row, "ms": ms})
    return timed


def _fastest(timed):
    return min(timed, key=lambda t: t[0]) if timed else None


def sweep_exact(element_bytes, quick, log, deadline):
    """Exact-width rows (FORWARD_EXACT, BACKWARD_EXACT) for EXACT_WIDTHS, each kept only where it
    beats the padded launch."""
    dtype = DTYPES[element_bytes]
    padded_fwd, padded_bwd, exact_fwd, exact_bwd = {}, {}, {}, {}
    for n in within_budget(exact_widths(), deadline, "exact widths"):
        m = rows_for(n, element_bytes)
        x, w, b, dy = inputs(m, n, dtype)
        padded = table.padded_launch(n, element_bytes), table.padded_launch(n, element_bytes, backward=True)
        ms, stats = time_forward(padded[0], x, w, b, quick)
        padded_fwd[n] = (ms, padded[0])
        padded_bwd[n] = (time_backward(padded[1], x, w, b, dy, stats, quick), padded[1])
        entry = {"element_bytes": element_bytes, "n": n, "m": m, "exact": True}
        fwd = time_candidates(exact_candidates(n, False, quick), lambda c: time_forward(c, x, w, b, quick)[0],
                              {"pass": "forward", **entry}, log)
        bwd = time_candidates(exact_candidates(n, True, quick), lambda c: time_backward(c, x, w, b, dy, stats, quick),
                              {"pass": "backward", **entry}, log)
        for name, timed, padded_times, exact in (("forward", fwd, padded_fwd, exact_fwd),
                                                 ("backward", bwd, padded_bwd, exact_bwd)):
            best = _fastest(timed)
            if best:
                exact[n] = best
                print(f"  {dtype} N={n} {name}: padded {padded_times[n][0] * 1e3:.1f} us, "
                      f"exact chunks {best[0] * 1e3:.1f} us", flush=True)
        x = w = b = dy = None  # freed before the next width's inputs
        release_width()
    key = table._element_key(element_bytes)
    return (table_writer.exact_rows(table.FORWARD_EXACT[key], padded_fwd, exact_fwd, table.ForwardChunkedRow),
            table_writer.exact_rows(table.BACKWARD_EXACT[key], padded_bwd, exact_bwd, table.BackwardChunkedRow))


def sweep(element_bytes, quick, log, deadline):
    dtype = DTYPES[element_bytes]
    best_fwd, best_bwd = {}, {}
    chunked_fwd_times, chunked_bwd_times = {}, {}
    for block_n in within_budget(width_order(), deadline, "widths"):
        m = rows_for(block_n, element_bytes)
        x, w, b, dy = inputs(m, block_n, dtype)
        for single, forward_cands, backward_cands in paths_at(block_n, quick):
            entry = {"element_bytes": element_bytes, "n": block_n, "m": m}
            saved = []  # mean and rstd of the last forward that ran, for the backward

            def forward_ms(cand):
                ms, stats = time_forward(cand, x, w, b, quick)
                saved[:] = [stats]
                return ms

            fwd = time_candidates(forward_cands, forward_ms, {"pass": "forward", **entry}, log)
            if not saved:
                continue
            stats = saved[0]
            bwd = time_candidates(backward_cands, lambda c: time_backward(c, x, w, b, dy, stats, quick),
                                  {"pass": "backward", **entry}, log)
            best_f, best_b = _fastest(fwd), _fastest(bwd)
            if best_f:
                (best_fwd if single else chunked_fwd_times)[block_n] = best_f
            if best_b:
                (best_bwd if single else chunked_bwd_times)[block_n] = best_b
            print(f"  {dtype} N={block_n} {'registers' if single else 'chunked'}: "
                  f"forward {best_f[0] * 1e3 if best_f else float('nan'):.1f} us, "
                  f"backward {best_b[0] * 1e3 if best_b else float('nan'):.1f} us", flush=True)
        x = w = b = dy = None  # freed before the next width's inputs
        release_width()

    key = table._element_key(element_bytes)
    return (table_writer.register_rows(table.FORWARD[key], best_fwd, chunked_fwd_times, table.ForwardRow),
            table_writer.chunked_rows(table.FORWARD_CHUNKED[key], chunked_fwd_times, table.ForwardChunkedRow),
            table_writer.register_rows(table.BACKWARD[key], best_bwd, chunked_bwd_times, table.BackwardRow),
            table_writer.chunked_rows(table.BACKWARD_CHUNKED[key], chunked_bwd_times, table.BackwardChunkedRow))


# ---------------------------------------------------------------------------
# Offline: registers and spills of the table's rows, compiled for sm_90 without a GPU.


def _report_row(pass_, n, cand, variant, dt):
    """Compile one launch of the forward or backward kernel for sm_90, print its line of the
    report (registers, stack, programs per SM) and return its stack frame."""
    from layernorm.kernels import offline
    from layernorm.kernels.norm import (norm_bwd_kernel, norm_bwd_paired_kernel, norm_bwd_tiles_kernel,
                                        norm_fwd_kernel)

    consts = {"BLOCK_M": cand.block_m, "BLOCK_N": cand.block_n, "IS_RMS": variant == "rms", "HAS_WEIGHT": True}
    wide = not cand.single_chunk  # the backward's chunked-row variants, each its own kernel or flags
    if pass_ == "forward":
        kernel = norm_fwd_kernel
        consts.update(SINGLE_CHUNK=cand.single_chunk, HAS_BIAS=variant != "rms",
                      HAS_RESIDUAL=variant.startswith("add"), STORE_RESIDUAL=variant.startswith("add"),
                      PERSISTENT=cand.programs_per_sm > 0)
    else:
        consts.update(HAS_DRES=variant.startswith("add"), NEED_DW=True, NEED_DB=variant != "rms")
        if wide and cand.split:  # the column tiles (its row-sum kernel is one streaming loop)
            kernel = norm_bwd_tiles_kernel
        elif wide and cand.band_rows:
            kernel = norm_bwd_paired_kernel
            consts["TILE_M"] = table.paired_tile_m(cand.block_n)
        else:
            kernel = norm_bwd_kernel
            consts.update(SINGLE_CHUNK=cand.single_chunk, LEAN=cand.lean and cand.single_chunk)
            if wide and cand.hold_partials and n <= table.HOLD_MAX_N:
                consts.update(HOLD_PARTIALS=True, NUM_CHUNKS=table.next_power_of_2(-(-n // cand.block_n)),
                              UNROLL=cand.unroll)
    regs, stack = offline.compiled_resources(kernel, consts, dt, "fp32", cand.num_warps)
    tags = [tag for tag, shown in (("chunked", wide), ("lean", cand.lean), ("split", wide and cand.split),
                                   ("held" if cand.unroll else "held loop", wide and cand.hold_partials),
                                   (f"paired/{cand.band_rows}", wide and cand.band_rows)) if shown]
    shape = " ".join([f"{cand.block_m}x{cand.block_n} w{cand.num_warps}", *tags])
    print(f"{pass_:<9} {dt:<9} {n:>6} {shape:<22} {variant:<16} {regs:>4} {stack:>5} "
          f"{offline.programs_per_sm(regs, cand.num_warps):>8}", flush=True)
    return stack


def register_report():
    print(f"{'pass':<9} {'dtype':<9} {'N':>6} {'launch':<22} {'variant':<16} {'regs':>4} {'stack':>5} {'progs/SM':>8}")
    worst = 0
    for element_bytes, dt in ((2, "bf16"), (4, "fp32")):
        for n in [1, 64, 256, 768, 1024, 2048, 4096, 8192, 16384, 65536]:
            for pass_, lookup in (("forward", table.forward_launch), ("backward", table.backward_launch)):
                cand = lookup(n, element_bytes)
                for variant in ("layer", "rms", "add_layer/dres"):
                    worst = max(worst, _report_row(pass_, n, cand, variant, dt))
    print(f"largest stack frame (spills): {worst} bytes")
    print("\nexact-width candidates (bf16, LayerNorm with weight and bias):")
    worst_exact = 0
    for n in EXACT_WIDTHS:
        for pass_ in ("forward", "backward"):
            for cand in exact_candidates(n, pass_ == "backward", quick=False):
                if pass_ == "backward" and cand.programs_per_sm != 1:
                    continue  # the grid's size does not change the code
                worst_exact = max(worst_exact, _report_row(pass_, n, cand, "layer", "bf16"))
    print(f"largest stack frame of the exact-width candidates: {worst_exact} bytes")
    print("\nwide-row backward candidates holding their sums in registers or paired (LayerNorm with weight "
          "and bias; unaligned inputs, so no vectorized loads: more registers than the launches use):")
    for element_bytes, dt in ((2, "bf16"), (4, "fp32")):
        for n in (16384, 65536):
            for cand in backward_candidates(n, single=False, quick=False):
                if (cand.hold_partials or cand.band_rows) and cand.band_rows in (0, 32):
                    _report_row("backward", n, cand, "layer", dt)  # the band's size does not change the code
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/sweep")
    parser.add_argument("--write", action="store_true", help="rewrite layernorm/kernels/table.py")
    parser.add_argument("--quick", action="store_true", help="half the candidates, shorter timing")
    parser.add_argument("--element-bytes", type=int, action="append", choices=(2, 4),
                        help="2 (bf16, the default) and/or 4 (fp32)")
    parser.add_argument("--widths", type=int, nargs="+", metavar="N",
                        help=f"sweep only these row widths (of {', '.join(map(str, ALL_WIDTHS))}); the table "
                             "keeps its rows at the others")
    parser.add_argument("--budget-s", type=float, default=360,
                        help="stop starting new widths after this many seconds (default 360)")
    parser.add_argument("--workers", type=int, default=max(0, min(14, (os.cpu_count() or 1) - 2)),
                        help="processes that compile every candidate before the timing starts (0: each is "
                             "compiled when first timed, one at a time; default: the CPUs less 2, at most 14)")
    parser.add_argument("--registers", action="store_true",
                        help="no GPU needed: registers and spills of the current table, of the exact-width "
                             "candidates and of the wide-row backward candidates (held, paired), compiled for "
                             "sm_90")
    args = parser.parse_args()
    global ONLY_WIDTHS
    if args.widths:
        unknown = sorted(set(args.widths) - set(ALL_WIDTHS))
        if unknown:
            parser.error(f"--widths: no candidates at {unknown}; the widths swept are {ALL_WIDTHS}")
        ONLY_WIDTHS = set(args.widths)
    if args.registers:
        return register_report()
    if not torch.cuda.is_available():
        print("sweep_launch: needs a CUDA GPU", file=sys.stderr)
        return 2
    import triton

    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    log = []
    fwd, fwd_chunked, bwd, bwd_chunked, fwd_exact, bwd_exact = {}, {}, {}, {}, {}, {}
    deadline = start + args.budget_s
    precompiled = []
    for element_bytes in args.element_bytes or (2,):
        report = precompile.precompile(jobs(element_bytes, args.quick), args.workers)
        print(report, *(f"  {e}" for e in report.errors[:5]), sep="\n", flush=True)
        precompiled.append(vars(report))
        f, fc, b, bc = sweep(element_bytes, args.quick, log, deadline)
        fwd[element_bytes], fwd_chunked[element_bytes], bwd[element_bytes], bwd_chunked[element_bytes] = f, fc, b, bc
        use_rows(element_bytes, f, fc, b, bc)  # exact rows must beat the rows just swept
        fwd_exact[element_bytes], bwd_exact[element_bytes] = sweep_exact(element_bytes, args.quick, log, deadline)
    for name, got, current in (("FORWARD", fwd, table.FORWARD), ("BACKWARD", bwd, table.BACKWARD),
                               ("FORWARD_CHUNKED", fwd_chunked, table.FORWARD_CHUNKED),
                               ("BACKWARD_CHUNKED", bwd_chunked, table.BACKWARD_CHUNKED),
                               ("FORWARD_EXACT", fwd_exact, table.FORWARD_EXACT),
                               ("BACKWARD_EXACT", bwd_exact, table.BACKWARD_EXACT)):
        for key, value in current.items():  # an element size not swept keeps its rows
            got.setdefault(key, value)
    source = (f"swept on {torch.cuda.get_device_name()} with torch {torch.__version__}, triton {triton.__version__}, "
              f"{time.strftime('%Y-%m-%d', time.gmtime())}{' (quick)' if args.quick else ''} by scripts/sweep_launch.py")
    text = table_writer.table_text(source, fwd, fwd_chunked, bwd, bwd_chunked, fwd_exact, bwd_exact)
    with open(os.path.join(args.out, "table.py"), "w") as f:
        f.write(text)  # what goes between the marks of table.py
    with open(os.path.join(args.out, "sweep.json"), "w") as f:
        json.dump({"source": source, "precompiled": precompiled, "timings": log}, f, indent=1)
    if args.write:
        table_writer.rewrite_table(text)
    print(text)
    print(f"sweep took {time.time() - start:.0f} s; wrote {args.out}/table.py and sweep.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
