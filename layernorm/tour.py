"""``layernorm tour``: the first command to run.

It runs, in order, each with visible progress:

1. ``check``: every implementation on every device against the float64 reference;
2. a benchmark on the best device present: the full ``bench`` on a CUDA GPU,
   or on a CPU PyTorch's op against the reference and the dispatch;
3. every experiment, by default at the quick size: about a minute each on
   2 CPU cores, large enough that each verdict agrees with the documented
   default run's (``--experiment-size smoke`` takes seconds but its verdicts
   are no evidence; ``default`` is the documented runs, about 13 minutes);

then writes ``report.md`` and ``report.html`` (tables, plots, verdicts) into
``--out`` (default ``runs/tour``) and prints where they are. A step that fails
is reported as failed, with its error, and the steps after it still run.
The whole tour took 3 min 10 s to 3 min 25 s on 2 CPU cores (measured: docs/experiments.md).
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import torch

EXPERIMENTS = ("small-batch", "running-stats", "rnn", "distributed", "transformer")


@dataclass
class Section:
    """What one step of the tour reports."""

    title: str
    status: str = "ok"  # "ok", "failed", "skipped"
    verdict: str = ""
    table: List[List[str]] = field(default_factory=list)  # first row is the header
    text: str = ""  # preformatted output
    images: List[Path] = field(default_factory=list)
    seconds: float = 0.0


class _Tee(io.TextIOBase):
    """Write to the console and keep a copy, so progress stays visible."""

    def __init__(self, console):
        self.console, self.copy = console, io.StringIO()

    def write(self, s):
        self.console.write(s)
        self.copy.write(s)
        return len(s)

    def flush(self):
        self.console.flush()


def _run_step(title: str, body: Callable[[Section], None]) -> Section:
    section = Section(title)
    start = time.perf_counter()
    tee = _Tee(sys.stdout)
    error = ""
    try:
        with contextlib.redirect_stdout(tee):
            body(section)
    except Exception:  # a failing step is reported, and the tour goes on
        error = traceback.format_exc()
        section.status = "failed"
        section.verdict = section.verdict or "step failed: " + error.strip().splitlines()[-1]
        print(error, file=sys.stderr)
    section.seconds = time.perf_counter() - start
    section.text = tee.copy.getvalue() + error
    return section


# ---- the steps -------------------------------------------------------------


def _check_step(section: Section) -> None:
    from . import check

    results = check.run_sweep(check.default_devices(), list(check.DTYPE_NAMES.values()))
    section.table = [["op", "implementation", "device", "dtype", "shape", "error vs reference", "error vs torch",
                      "verdict"]] + [
        [r.op, r.impl, r.device, r.dtype, r.shape, f"{r.error:.2e}", f"{r.torch_error:.2e}", r.verdict]
        for r in results
    ]
    failed = [r for r in results if not r.passed]
    section.verdict = f"{len(results) - len(failed)} of {len(results)} cases within tolerance of the float64 reference"
    if failed:
        section.status = "failed"
    print(section.verdict)


def _time_ms(fn: Callable[[], object], repeat: int) -> float:
    for _ in range(3):  # warm-up: first calls allocate and pick kernels
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * sorted(times)[len(times) // 2]


def _cpu_bench_step(section: Section, shapes=((4096, 768), (1024, 4096))) -> None:
    """On a CPU: PyTorch's op, the reference, and the dispatch (what users get)."""
    from .functional import layer_norm

    torch.manual_seed(0)
    section.table = [["M x N", "implementation", "forward ms", "forward+backward ms", "GB/s forward"]]
    for m, n in shapes:
        x = (0.5 * torch.randn(m, n) - 2.3).requires_grad_()
        w, b = torch.randn(n, requires_grad=True), torch.randn(n, requires_grad=True)
        dy = torch.randn(m, n)
        for name, impl in (("torch", "torch"), ("reference", "reference"), ("dispatch (default)", None)):
            fwd = _time_ms(lambda: layer_norm(x.detach(), n, w.detach(), b.detach(), impl=impl), 15)
            both = _time_ms(lambda: layer_norm(x, n, w, b, impl=impl).backward(dy), 7)
            gbps = 2 * m * n * 4 / (fwd * 1e-3) / 1e9
            section.table.append([f"{m} x {n}", name, f"{fwd:.2f}", f"{both:.2f}", f"{gbps:.1f}"])
            print(f"  {m} x {n}  {name:20s} fwd {fwd:8.2f} ms   fwd+bwd {both:8.2f} ms")
    torch_rows = [r for r in section.table[1:] if r[1] == "torch"]
    ref_rows = [r for r in section.table[1:] if r[1] == "reference"]
    ratio = max(float(r[2]) / float(t[2]) for r, t in zip(ref_rows, torch_rows))
    section.verdict = (
        f"CPU ({torch.get_num_threads()} threads): the reference is at most {ratio:.1f}x slower than "
        "PyTorch's op forward; the dispatch runs PyTorch's op on CPU"
    )


def _gpu_bench_step(section: Section, out: Path) -> None:
    """On a GPU: the full ``layernorm bench``; the report shows its bar, row by row, and its plots."""
    import json

    from . import bench

    parser = argparse.ArgumentParser()
    bench.configure_parser(parser)
    status = bench.run(parser.parse_args(["--out", str(out)]))
    section.images = sorted(out.glob("*.png"))
    section.status = "ok" if status == 0 else "failed"
    results = out / "results.json"
    if not results.is_file():
        section.status = "failed"
        section.verdict = f"the benchmark wrote no {results}"
        return
    saved = json.loads(results.read_text())
    bar = saved.get("bar", [])
    section.table = [["row of the bar", "measured", "held"]] + [
        [row["row"], row["measured"], "yes" if row["held"] else "no"] for row in bar]
    env = saved.get("environment", {})
    section.verdict = (
        f"{sum(row['held'] for row in bar)} of {len(bar)} rows of the bar held on {env.get('device', 'the GPU')} "
        f"(copy ceiling {saved.get('copy_ceiling_gbps', float('nan')):.0f} GB/s); every figure in {results}")


def _experiment_step(section: Section, name: str, out: Path, device: str, size: str) -> None:
    from . import experiments

    summary = experiments.run_experiment(name, out, size=size, device=device)
    section.verdict = str(summary.get("verdict", "")) if isinstance(summary, dict) else ""
    section.images = sorted(out.glob("*.png"))


# ---- the report ------------------------------------------------------------


def _markdown(sections: List[Section], out: Path, header: str) -> str:
    lines = ["# layernorm tour", "", header, ""]
    for s in sections:
        lines += [f"## {s.title}", "", f"**{s.status}** in {s.seconds:.1f} s. {s.verdict}", ""]
        if s.table:
            lines.append("| " + " | ".join(s.table[0]) + " |")
            lines.append("|" + "---|" * len(s.table[0]))
            lines += ["| " + " | ".join(row) + " |" for row in s.table[1:]]
            lines.append("")
        for image in s.images:
            lines += [f"![{s.title}]({image.relative_to(out).as_posix()})", ""]
        if s.status != "ok" or not (s.table or s.images):
            lines += ["```", s.text.strip()[-4000:], "```", ""]
    return "\n".join(lines)


def _html(sections: List[Section], out: Path, header: str) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>layernorm tour</title>',
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px}"
        ".ok{color:#176117}.failed{color:#b00020}.skipped{color:#777}img{max-width:100%}"
        "pre{background:#f5f5f5;padding:1em;overflow:auto}</style></head><body>",
        "<h1>layernorm tour</h1>", f"<p>{e(header)}</p>",
    ]
    for s in sections:
        parts.append(f"<h2>{e(s.title)}</h2>")
        parts.append(f'<p><b class="{e(s.status)}">{e(s.status)}</b> in {s.seconds:.1f} s. {e(s.verdict)}</p>')
        if s.table:
            parts.append("<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in s.table[0]) + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in s.table[1:]]
            parts.append("</tbody></table>")
        for image in s.images:
            parts.append(f'<p><img src="{e(image.relative_to(out).as_posix())}" alt="{e(s.title)}"></p>')
        if s.status != "ok" or not (s.table or s.images):
            parts.append(f"<pre>{e(s.text.strip()[-4000:])}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# ---- the command -----------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from .experiments._common import SIZES  # the experiments' own list of sizes

    parser.add_argument("--out", type=Path, default=Path("runs/tour"), help="where the report goes (default: runs/tour)")
    parser.add_argument("--device", default=None, help="device for the benchmark and experiments (default: cuda if present, else cpu)")
    parser.add_argument("--experiment-size", choices=SIZES, default="quick",
                        help="size of each experiment run: smoke (seconds, no evidence), quick (about a minute "
                             "each on 2 CPU cores, large enough to be evidence) or default (the documented "
                             "runs, about 13 minutes in all) (default: quick)")
    parser.add_argument("--skip", action="append", default=[], choices=("check", "bench") + EXPERIMENTS,
                        help="leave a step out (repeatable)")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    steps = []
    if "check" not in args.skip:
        steps.append(("Check: every implementation against the float64 reference", _check_step))
    if "bench" not in args.skip:
        if device.startswith("cuda"):
            steps.append(("Benchmark on the GPU", lambda s: _gpu_bench_step(s, out / "bench")))
        else:
            steps.append(("Benchmark on the CPU", _cpu_bench_step))
    for name in EXPERIMENTS:
        if name not in args.skip:
            steps.append((
                f"Experiment: {name}",
                lambda s, name=name: _experiment_step(s, name, out / name, device, args.experiment_size),
            ))
    started = time.perf_counter()
    sections = []
    for i, (title, body) in enumerate(steps, 1):
        print(f"\n[{i}/{len(steps)}] {title}  ({time.perf_counter() - started:.0f} s so far)", flush=True)
        sections.append(_run_step(title, body))
        print(f"[{i}/{len(steps)}] {sections[-1].status}: {sections[-1].verdict}", flush=True)
    header = (
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else "")
        + f", experiments at the {args.experiment_size} size"
        + f", {time.strftime('%Y-%m-%d %H:%M')}, {time.perf_counter() - started:.0f} s in all."
    )
    _write_atomic(out / "report.md", _markdown(sections, out, header))
    _write_atomic(out / "report.html", _html(sections, out, header))
    failed = [s.title for s in sections if s.status == "failed"]
    print(f"\nReport: {(out / 'report.html').resolve()} (and report.md)")
    if failed:
        print("Failed steps: " + "; ".join(failed))
    return 1 if failed else 0
