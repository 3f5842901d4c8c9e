"""``layernorm tour``: the first command to run.

It runs, in order, each with visible progress:

1. ``check``: every implementation on every device against the float64 reference;
2. a benchmark on the best device present: the full ``bench`` on a CUDA GPU,
   or on a CPU PyTorch's op against the reference and the dispatch;
3. every experiment, by default at the quick size: one seed, a minute or
   two each on 2 CPU cores, large enough that each verdict agrees with the
   documented default run's (``--experiment-size smoke`` takes seconds but
   its verdicts are no evidence; ``default`` is the documented runs, three
   seeds each, about an hour on 2 CPU cores);

then writes ``report.md`` and ``report.html`` into ``--out`` (default
``runs/tour``) and prints where they are. The report opens with a summary
(each step's verdict, ours against the best peer where a GPU ran, one key plot per
experiment); the details follow, long tables folded. A step that fails is
reported as failed, with its error, and the steps after it still run.
Before each step the tour prints an estimate of the time left: the sizes'
measured times (``ESTIMATED_SECONDS`` and each experiment's ``seconds``), scaled by how fast the finished steps
went on this machine. Its wall time on 2 CPU cores: docs/experiments.md.
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
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from .. import experiments
from .files import write_atomic

EXPERIMENTS = tuple(experiments.EXPERIMENTS)  # in the order the tour runs them

# Seconds "check" and "bench" took on 2 CPU cores: with each experiment's own
# (``experiments.EXPERIMENTS[name].seconds``), what the estimate of the time left starts from.
ESTIMATED_SECONDS = {"check": 2, "bench": 9}
PACE_PRIOR_SECONDS = 30.0  # see time_left
TABLE_ROWS_SHOWN = 12  # a longer table is folded away in the report (<details>)


@dataclass
class Section:
    """What one step of the tour reports."""

    title: str
    status: str = "ok"  # "ok", "failed", "skipped"
    verdict: str = ""
    table: List[List[str]] = field(default_factory=list)  # first row is the header
    text: str = ""  # preformatted output
    images: List[Path] = field(default_factory=list)
    key_image: Optional[Path] = None  # the plot the summary shows
    headline_table: bool = False  # the table goes into the summary too (the GPU benchmark's)
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
    from ..functional import layer_norm

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
    """On a GPU: the full ``layernorm bench``; the report shows ours against the best peer per op,
    dtype and pass, and the plots."""
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
    summary = saved.get("summary", [])
    section.headline_table = True  # ours against the best peer is the benchmark's verdict: the summary shows it
    section.table = [["op", "dtype", "pass", "fastest at", "worst ratio to best peer", "% of copy ceiling"]] + [
        [s["op"], s["dtype"] if s["weight_dtype"] == s["dtype"] else f"{s['dtype']}/{s['weight_dtype']}", s["pass"],
         f"{s['fastest']} of {s['compared']} shapes", f"{s['worst_ratio']:.3f} ({s['worst_shape']})",
         f"{s['pct_ceiling_min']:.0f}-{s['pct_ceiling_max']:.0f}%"] for s in summary]
    env = saved.get("environment", {})
    fastest, compared = sum(s["fastest"] for s in summary), sum(s["compared"] for s in summary)
    section.verdict = (
        f"layernorm fastest at {fastest} of {compared} (op, shape, pass) against the best peer on "
        f"{env.get('device', 'the GPU')} (copy ceiling {saved.get('copy_ceiling_gbps', float('nan')):.0f} GB/s); "
        f"every figure in {results}")


def _experiment_step(section: Section, name: str, out: Path, device: str, size: str) -> None:
    summary = experiments.run_experiment(name, out, size=size, device=device)
    section.verdict = str(summary.get("verdict", "")) if isinstance(summary, dict) else ""
    section.images = sorted(out.glob("*.png"))
    key = out / experiments.EXPERIMENTS[name].key_plot
    section.key_image = key if key.is_file() else (section.images[0] if section.images else None)


# ---- the time left ---------------------------------------------------------


def expected_seconds(step: str, size: str) -> float:
    """What a step took on 2 CPU cores: ``step`` is "check", "bench" or an experiment's name."""
    return float(ESTIMATED_SECONDS[step] if step in ESTIMATED_SECONDS else experiments.EXPERIMENTS[step].seconds[size])


def time_left(done: Sequence[Tuple[float, float]], remaining: Sequence[float]) -> float:
    """Seconds the remaining steps should take.

    ``done`` holds (expected, actual) seconds of the finished steps,
    ``remaining`` the expected seconds of the rest. The expectations come from
    another machine, so they are scaled by this machine's pace so far: a tour
    whose first minutes took twice their estimate is expected to go on so.
    The pace starts from PACE_PRIOR_SECONDS of steps that went as expected, so
    that a step of a second (the check) cannot swing the estimate.
    """
    expected_done = PACE_PRIOR_SECONDS + sum(expected for expected, _ in done)
    actual_done = PACE_PRIOR_SECONDS + sum(actual for _, actual in done)
    return actual_done / expected_done * sum(remaining)


def duration_text(seconds: float) -> str:
    """"about 40 s", "about 3 min", "about 1 h 5 min"."""
    if seconds < 60:
        return f"about {max(5, 5 * round(seconds / 5)):.0f} s"
    minutes = round(seconds / 60)
    return f"about {minutes} min" if minutes < 60 else f"about {minutes // 60} h {minutes % 60} min"


# ---- the report ------------------------------------------------------------
# Summary first (every verdict, the GPU benchmark's summary, one key plot per
# experiment), the details after it, each long table folded away.


def _relative(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _md_cell(text: str) -> str:
    """A table cell: a "|" inside it (distributed's verdict has two) would end the cell."""
    return text.replace("|", "\\|")


def _md_table(table: List[List[str]]) -> List[str]:
    row = lambda cells: "| " + " | ".join(_md_cell(c) for c in cells) + " |"  # noqa: E731
    return [row(table[0]), "|" + "---|" * len(table[0])] + [row(r) for r in table[1:]] + [""]


def _markdown(sections: List[Section], out: Path, header: str) -> str:
    lines = ["# layernorm tour", "", header, "", "## Summary", ""]
    lines += _md_table([["step", "status", "time", "verdict"]]
                       + [[s.title, f"**{s.status}**", f"{s.seconds:.0f} s", s.verdict] for s in sections])
    for s in sections:
        if s.headline_table and s.table:
            lines += [f"### {s.title}", ""] + _md_table(s.table)
    for s in sections:
        if s.key_image is not None:
            lines += [f"![{s.title}]({_relative(s.key_image, out)})", ""]
    lines += ["## Details", ""]
    for s in sections:
        lines += [f"### {s.title}", "", f"**{s.status}** in {s.seconds:.1f} s. {s.verdict}", ""]
        if s.table:
            folded = len(s.table) - 1 > TABLE_ROWS_SHOWN
            if folded:  # GitHub renders a Markdown table inside <details> when blank lines surround it
                lines += [f"<details><summary>{len(s.table) - 1} rows</summary>", ""]
            lines += _md_table(s.table)
            if folded:
                lines += ["</details>", ""]
        for image in s.images:
            lines += [f"![{s.title}]({_relative(image, out)})", ""]
        if s.status != "ok" or not (s.table or s.images):
            lines += ["```", s.text.strip()[-4000:], "```", ""]
    return "\n".join(lines)


def _html_table(table: List[List[str]]) -> List[str]:
    e = html.escape
    return (["<table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in table[0]) + "</tr></thead><tbody>"]
            + ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in table[1:]]
            + ["</tbody></table>"])


def _html(sections: List[Section], out: Path, header: str) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>layernorm tour</title>',
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px;"
        "vertical-align:top}.ok{color:#176117}.failed{color:#b00020}.skipped{color:#777}img{max-width:100%}"
        ".plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:1em}"
        "summary{cursor:pointer}pre{background:#f5f5f5;padding:1em;overflow:auto}</style></head><body>",
        "<h1>layernorm tour</h1>", f"<p>{e(header)}</p>",
        '<h2 id="summary">Summary</h2>',
        "<table><thead><tr><th>step</th><th>status</th><th>time</th><th>verdict</th></tr></thead><tbody>",
    ]
    parts += [f'<tr><td><a href="#step{i}">{e(s.title)}</a></td><td class="{e(s.status)}"><b>{e(s.status)}</b></td>'
              f"<td>{s.seconds:.0f} s</td><td>{e(s.verdict)}</td></tr>" for i, s in enumerate(sections, 1)]
    parts.append("</tbody></table>")
    for s in sections:
        if s.headline_table and s.table:
            parts.append(f"<h3>{e(s.title)}</h3>")
            parts += _html_table(s.table)
    key_images = [s for s in sections if s.key_image is not None]
    if key_images:
        parts.append('<div class="plots">')
        parts += [f'<figure><img src="{e(_relative(s.key_image, out))}" alt="{e(s.title)}">'
                  f"<figcaption>{e(s.title)}</figcaption></figure>" for s in key_images]
        parts.append("</div>")
    parts.append('<h2 id="details">Details</h2>')
    for i, s in enumerate(sections, 1):
        parts.append(f'<h3 id="step{i}">{e(s.title)}</h3>')
        parts.append(f'<p><b class="{e(s.status)}">{e(s.status)}</b> in {s.seconds:.1f} s. {e(s.verdict)}</p>')
        if s.table:
            folded = len(s.table) - 1 > TABLE_ROWS_SHOWN
            if folded:
                parts.append(f"<details><summary>the table: {len(s.table) - 1} rows</summary>")
            parts += _html_table(s.table)
            if folded:
                parts.append("</details>")
        for image in s.images:
            parts.append(f'<p><img src="{e(_relative(image, out))}" alt="{e(s.title)}"></p>')
        if s.status != "ok" or not (s.table or s.images):
            parts.append(f"<pre>{e(s.text.strip()[-4000:])}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---- the command -----------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from ..experiments._common import SIZES  # the experiments' own list of sizes

    parser.add_argument("--out", type=Path, default=Path("runs/tour"), help="where the report goes (default: runs/tour)")
    parser.add_argument("--device", default=None, help="device for the benchmark and experiments (default: cuda if present, else cpu)")
    parser.add_argument("--experiment-size", choices=SIZES, default="quick",
                        help="size of each experiment run: smoke (seconds, no evidence), quick (one seed, a "
                             "minute or two each on 2 CPU cores, large enough to be evidence) or default (the "
                             "documented runs, three seeds each, about an hour in all) (default: quick)")
    parser.add_argument("--skip", action="append", default=[], choices=("check", "bench") + EXPERIMENTS,
                        help="leave a step out (repeatable)")


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    steps = []  # (what: "check", "bench" or an experiment, title, body)
    if "check" not in args.skip:
        steps.append(("check", "Check: every implementation against the float64 reference", _check_step))
    if "bench" not in args.skip:
        if device.startswith("cuda"):
            steps.append(("bench", "Benchmark on the GPU", lambda s: _gpu_bench_step(s, out / "bench")))
        else:
            steps.append(("bench", "Benchmark on the CPU", _cpu_bench_step))
    for name in EXPERIMENTS:
        if name not in args.skip:
            steps.append((name, f"Experiment: {name}",
                          lambda s, name=name: _experiment_step(s, name, out / name, device, args.experiment_size)))
    expected = [expected_seconds(what, args.experiment_size) for what, _, _ in steps]
    started = time.perf_counter()
    sections: List[Section] = []
    for i, (_, title, body) in enumerate(steps, 1):
        done = [(expected[j], sections[j].seconds) for j in range(len(sections))]
        left = duration_text(time_left(done, expected[i - 1:]))
        print(f"\n[{i}/{len(steps)}] {title}  ({time.perf_counter() - started:.0f} s so far, {left} left)",
              flush=True)
        sections.append(_run_step(title, body))
        print(f"[{i}/{len(steps)}] {sections[-1].status}: {sections[-1].verdict}", flush=True)
    header = (
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else "")
        + f", experiments at the {args.experiment_size} size"
        + f", {time.strftime('%Y-%m-%d %H:%M')}, {time.perf_counter() - started:.0f} s in all."
    )
    write_atomic(out / "report.md", _markdown(sections, out, header))
    write_atomic(out / "report.html", _html(sections, out, header))
    failed = [s.title for s in sections if s.status == "failed"]
    print(f"\nReport: {(out / 'report.html').resolve()} (and report.md)")
    if failed:
        print("Failed steps: " + "; ".join(failed))
    return 1 if failed else 0
