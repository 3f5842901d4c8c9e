"""The bar the kernels must clear, judged from what ``layernorm bench`` wrote.

``layernorm bench`` measures and reports; whether its figures are good enough
is the project's own judgement, kept here, out of the package:

    python scripts/bench_bar.py runs/bench/results.json [more results.json ...]

prints one line per row of the bar (``held`` / ``NOT HELD``, with the figure
measured) and exits 1 when a row is not held. Several files are read as one
set of results (a bandwidth run and a ``--host-time-only`` run, say). A row
is judged only where the results hold some of its shapes; where they hold
only some of them (or, for the ratio to the best peer, not every peer) and
those clear the line, the row is ``partial``, not ``held``.

The rows (bf16 unless said, M = 32768 rows unless said):

- LayerNorm and RMSNorm forward at >= 95% of the copy ceiling for N = 1024 to
  16384, >= 90% at N = 768 and at N = 65536 (M = 4096); backward >= 90% for
  N = 2048 to 16384, >= 2/3 at N = 768, 1024 and 65536 (M = 4096);
- LayerNorm at M = 8 and 512, N = 4096, forward and backward: no slower than
  PyTorch's op;
- every op, dtype and weight dtype: ratio to the best peer >= 1.0 at every
  shape and pass (the worst one is shown);
- add + norm forward: at least 5/4 as fast as the best peer that adds and
  normalises in two passes (x + r then a norm moves 5 units of M·N·s, the
  fused op 4);
- host time: ours at most PyTorch's + 40 µs per forward + backward at 8 × 4096.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional, Sequence, Tuple

OURS = "layernorm"
Row = Tuple[str, str, Optional[bool]]  # (row of the bar, figure measured, held; None: partial)
# The peers a ratio to the best peer must have been measured against to be judged whole.
PEERS = ("torch", "torch.compile", "liger")


def _verdict(clear: bool, whole: bool) -> Optional[bool]:
    """held (True), not held (False), or partial (None: what was measured clears, not all was)."""
    return False if not clear else (True if whole else None)

# Peers that add and normalise in two passes; torch.compile and Liger's fused kernel fuse them.
UNFUSED_ADD_PEERS = ("torch", "liger", "add + layernorm")
ADD_NORM_SAVING = 5 / 4
HOST_BUDGET_US = 40.0


def _key(r: dict) -> tuple:
    return (r["op"], r["dtype"], r["weight_dtype"], r["M"], r["N"], r["pass"])


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and v == v


def bandwidth_rows(results: Sequence[dict]) -> List[Row]:
    """The rows judged from the bandwidth results (``results`` of results.json)."""
    ours = {_key(r): r for r in results if r["impl"] == OURS}
    rows: List[Row] = []

    def pct_row(op, label, shapes, pass_, need):
        got = [(n, ours.get((op, "bf16", "bf16", m, n, pass_))) for m, n in shapes]
        got = [(n, r) for n, r in got if r is not None]
        if got:
            figures = ", ".join(f"N={n}: {r['pct_ceiling']:.1f}%" for n, r in got)
            if len(got) < len(shapes):
                figures += f" ({len(got)} of {len(shapes)} shapes measured)"
            rows.append((f"{op} {label}", figures,
                         _verdict(all(r["pct_ceiling"] >= need for _, r in got), len(got) == len(shapes))))

    for op in ("layer_norm", "rms_norm"):
        pct_row(op, "forward >= 95% of ceiling, bf16 N 1024..16384 (M=32768)",
                [(32768, n) for n in (1024, 2048, 4096, 8192, 16384)], "forward", 95)
        pct_row(op, "forward >= 90% at N=768 (M=32768) and N=65536 (M=4096)", [(32768, 768), (4096, 65536)], "forward", 90)
        pct_row(op, "backward >= 90% of ceiling, bf16 N 2048..16384",
                [(32768, n) for n in (2048, 4096, 8192, 16384)], "backward", 90)
        pct_row(op, "backward >= 2/3 of ceiling at N=768, 1024 (M=32768), 65536 (M=4096)",
                [(32768, 768), (32768, 1024), (4096, 65536)], "backward", 100 * 2 / 3)
    by_key: Dict[tuple, Dict[str, dict]] = {}
    for r in results:
        by_key.setdefault(_key(r), {})[r["impl"]] = r
    for m in (8, 512):
        for p in ("forward", "backward"):
            impls = by_key.get(("layer_norm", "bf16", "bf16", m, 4096, p), {})
            if OURS in impls and "torch" in impls:
                o, t = impls[OURS]["ms"] * 1e3, impls["torch"]["ms"] * 1e3
                rows.append((f"layer_norm {p} at M={m}, N=4096 no slower than torch", f"{o:.1f} us vs torch {t:.1f} us", o <= t))
    worst: Dict[str, Tuple[float, str]] = {}
    missing: Dict[str, set] = {}  # peers absent from some of a row's shapes
    for key, impls in by_key.items():
        if OURS not in impls:
            continue
        ratio = impls[OURS]["ratio_to_best_peer"]
        label = f"{key[0]} ratio to best peer >= 1.0 ({key[1]} x, {key[2]} weights)"
        if label not in worst or not (ratio >= worst[label][0]):  # a NaN ratio is the worst
            worst[label] = (ratio, f"{key[5]} M={key[3]} N={key[4]}")
        missing.setdefault(label, set()).update(p for p in PEERS if p not in impls)
    for label, (ratio, where) in sorted(worst.items()):
        figure = f"worst {ratio:.3f} ({where})"
        if missing[label]:
            figure += f"; not measured against {', '.join(sorted(missing[label]))}"
        rows.append((label, figure, _verdict(ratio >= 1.0, not missing[label])))
    rows.extend(_add_norm_rows(by_key))
    return rows


def _add_norm_rows(by_key: Dict[tuple, Dict[str, dict]]) -> List[Row]:
    """Forward time of the best unfused peer over ours, bf16, M = 32768."""
    rows = []
    for op in ("add_layer_norm", "add_rms_norm"):
        ratios = []
        for key, impls in sorted(by_key.items()):
            if key[0] != op or key[1:4] != ("bf16", "bf16", 32768) or key[5] != "forward" or OURS not in impls:
                continue
            unfused = [impls[k]["ms"] for k in UNFUSED_ADD_PEERS if k in impls and _is_number(impls[k]["ms"])]
            if unfused and _is_number(impls[OURS]["ms"]):
                ratios.append((key[4], min(unfused) / impls[OURS]["ms"]))
        if ratios:
            figures = ", ".join(f"N={n}: {r:.2f}x" for n, r in ratios)
            rows.append((f"{op} forward >= {ADD_NORM_SAVING:.2f}x the unfused x + r then best plain norm (bf16, M=32768)",
                         figures, all(r >= ADD_NORM_SAVING for _, r in ratios)))
    return rows


def host_rows(host_time: Sequence[dict], budget_us: float = HOST_BUDGET_US) -> List[Row]:
    """Ours costs the host at most torch's + ``budget_us`` per forward + backward at M = 8, N = 4096."""
    rows = []
    for op in dict.fromkeys(r["op"] for r in host_time):
        pick = {r["impl"]: r["us"] for r in host_time
                if r["op"] == op and (r["M"], r["N"]) == (8, 4096) and r["pass"] == "forward+backward"}
        if OURS in pick and "torch" in pick:
            rows.append((f"{op} host forward+backward at 8x4096 <= torch + {budget_us:.0f} us",
                         f"{pick[OURS]:.1f} vs torch {pick['torch']:.1f} us", pick[OURS] <= pick["torch"] + budget_us))
    return rows


def judge(payloads: Sequence[dict]) -> List[Row]:
    results = [r for p in payloads for r in p.get("results", [])]
    host_time = [r for p in payloads for r in p.get("host_time", [])]
    return bandwidth_rows(results) + host_rows(host_time)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.json written by layernorm bench")
    args = parser.parse_args(argv)
    payloads = []
    for path in args.results:
        with open(path) as f:
            payloads.append(json.load(f))
    for p, path in zip(payloads, args.results):
        env = p.get("environment", {})
        print(f"{path}: {' '.join(f'{k}={v}' for k, v in env.items())}"
              + ("" if p.get("complete", True) else " (run cut short: partial results)"))
    rows = judge(payloads)
    for row, figure, held in rows:
        print(f"{'partial' if held is None else 'held' if held else 'NOT HELD':<9} {row}: {figure}")
    if not rows:
        print("no row of the bar can be judged from these results")
    return 0 if all(held for _, _, held in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
