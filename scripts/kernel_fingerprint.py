"""Fingerprint the machine code of every kernel launch, compiled for sm_90 without a GPU.

A refactor of the kernels' source must leave what the GPU runs unchanged. With
no GPU to time a change, this compares the code itself: every launch that
``layernorm.kernels.launch`` makes (each launch-table row, each flag
combination, each dtype; the list is below) is recorded as Triton's own
launch path would compile it (its real argument binding and specialization:
dtypes, 16-byte alignment, integers equal to 1), without launching anything,
then compiled for ``GPUTarget("cuda", 90, 32)``. Per configuration it prints
registers per thread, stack frame (spills), and hashes of the PTX and of the
SASS with location/debug lines, comments and the kernel's name stripped, so
that a renamed kernel or a moved line does not count as a change.

    python scripts/kernel_fingerprint.py --out /tmp/before.json   # record
    python scripts/kernel_fingerprint.py --out /tmp/after.json
    python scripts/kernel_fingerprint.py --compare /tmp/before.json /tmp/after.json

Compiled as launches compile, with Triton's line information: its inlined-call
scopes put labels into the PTX that ptxas schedules around, so code moved
into a helper can change the SASS (and registers) of some launches while the
PTX instructions stay the same. Compare the SASS, not the PTX alone.
``--no-line-info`` records without line information (both files alike), where
code that only moved between helpers compiles to the same SASS: that tells a
refactor that changed nothing but ptxas' scheduling around the labels from
one that changed the code; the launches users run carry line information, so
a refactor is judged with it.

``--compare`` exits 1 when any configuration differs. Configurations are named
by the launch call that makes them (path, launch shape, dtypes, flags) and the
order of its kernel launches, not by kernel name, so kernels split or renamed
still compare. Which configurations, and why not all of them:

- every row of the launch table (forward, backward; 2-byte rows in float16 and
  bfloat16, 4-byte rows in float32) with a core set of flag variants that
  switches every flag at least once;
- every flag combination (IS_RMS, HAS_WEIGHT, HAS_BIAS, HAS_RESIDUAL,
  STORE_RESIDUAL with r' in x's dtype or float32, WEIGHT_OFFSET 0/1,
  ROUND_BEFORE_WEIGHT; NEED_DW, NEED_DB, HAS_DRES in either dtype) on one
  launch shape per path (forward: register, persistent, chunked, chunked persistent; backward:
  register, lean, chunked, split), per dtype;
- float32 weights on half inputs, and unaligned, odd-strided rows, with the
  core variants on each path.

The full product over every table row would be about ten thousand compiles;
the flags are compile-time branches inside each path, which the second group
covers, and the rows change only block shapes and warps, which the first does.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# Rows per launch: a multiple of 16, as batch x sequence usually is (Triton specializes integers on it).
M = 1024
# Persistent grids are programs_per_sm x SMs programs: an H100 SXM's count, as on the GPU.
SM_COUNT = 132


# ---------------------------------------------------------------------------
# What to launch


@dataclass(frozen=True)
class Forward:
    """The flags of one forward launch, as launch.norm_forward takes them."""

    is_rms: bool = False
    weight: bool = True
    bias: bool = True
    residual: Optional[str] = None  # the residual input's dtype: "same" as x or "fp32"
    store: Optional[str] = None  # r' written, in "same" as x or "fp32"
    offset: float = 0.0
    round_first: bool = False

    def name(self) -> str:
        parts = ["rms" if self.is_rms else "layer", "W" if self.weight else "-", "B" if self.bias else "-",
                 f"res:{self.residual or '-'}", f"store:{self.store or '-'}"]
        if self.weight:
            parts += [f"offset:{self.offset:g}", "round" if self.round_first else "once"]
        return " ".join(parts)


@dataclass(frozen=True)
class Backward:
    """The flags of one backward launch, as launch.norm_backward takes them."""

    is_rms: bool = False
    weight: bool = True
    need_dw: bool = True
    bias: bool = True
    dres: Optional[str] = None  # the gradient reaching r' directly: "same" as x or "fp32"
    offset: float = 0.0

    def name(self) -> str:
        parts = ["rms" if self.is_rms else "layer", "W" if self.weight else "-",
                 "dW" if self.need_dw and self.weight else "-", "dB" if self.bias else "-",
                 f"dres:{self.dres or '-'}"]
        if self.weight:
            parts.append(f"offset:{self.offset:g}")
        return " ".join(parts)


def forward_flags(half: bool) -> List[Forward]:
    """Every meaningful combination (offset and rounding only with a weight; r' and the residual in
    x's dtype or float32, which for float32 inputs is one choice)."""
    stores = [(None, None), (None, "same"), ("same", None), ("same", "same")]
    if half:
        stores += [(None, "fp32"), ("same", "fp32"), ("fp32", "fp32")]
    out = []
    for is_rms, bias, (residual, store), weight in itertools.product(
            (False, True), (True, False), stores, (True, False)):
        if is_rms and bias:
            continue
        gains = itertools.product((0.0, 1.0), (False, True)) if weight else [(0.0, False)]
        out += [Forward(is_rms, weight, bias, residual, store, o, r) for o, r in gains]
    return out


def backward_flags(half: bool) -> List[Backward]:
    dres_kinds = (None, "same", "fp32") if half else (None, "same")
    out = []
    for is_rms, weight, need_dw, bias, dres in itertools.product(
            (False, True), (True, False), (True, False), (True, False), dres_kinds):
        if (is_rms and bias) or (need_dw and not weight):
            continue
        out += [Backward(is_rms, weight, need_dw, bias, dres, o) for o in ((0.0, 1.0) if weight else (0.0,))]
    return out


CORE_FORWARD = [Forward(), Forward(is_rms=True, bias=False), Forward(weight=False, bias=False),
                Forward(residual="same", store="same", offset=1.0),
                Forward(is_rms=True, bias=False, residual="same", store="fp32", round_first=True),
                Forward(is_rms=True, bias=False, residual=None, store="same", offset=1.0, round_first=True)]
CORE_BACKWARD = [Backward(), Backward(is_rms=True, bias=False), Backward(weight=False, need_dw=False),
                 Backward(dres="same", offset=1.0), Backward(is_rms=True, bias=False, need_dw=False, dres="fp32")]


@dataclass(frozen=True)
class Case:
    """One call of launch.norm_forward / norm_backward."""

    pass_: str  # "forward" or "backward"
    path: str
    launch: Any  # table.Launch
    n: int
    dtype: str
    weight_dtype: str
    flags: Any  # Forward or Backward
    aligned: bool = True

    def name(self) -> str:
        lc = self.launch
        shape = (f"{lc.block_m}x{lc.block_n}/w{lc.num_warps}"
                 f"{'' if not lc.programs_per_sm else f'/pps{lc.programs_per_sm:g}'}")
        layout = "" if self.aligned else " unaligned"
        return (f"{self.pass_} {self.path} {shape} N={self.n} {self.dtype} w:{self.weight_dtype}{layout} | "
                f"{self.flags.name()}")


def table_rows(table) -> List[tuple]:
    """(pass, path, element bytes, row width, Launch) of every row of the launch table, read back
    through the table's own lookup (a chunked row is reached by allowing no register rows)."""
    rows = []
    for pass_, single, chunked, lookup in (("forward", table.FORWARD, table.FORWARD_CHUNKED, table.forward_launch),
                                           ("backward", table.BACKWARD, table.BACKWARD_CHUNKED,
                                            table.backward_launch)):
        for element_bytes in sorted(single):
            for width in sorted(single[element_bytes]):
                launch = lookup(width, element_bytes)
                rows.append((pass_, _path_of(pass_, launch), element_bytes, width, launch))
        for element_bytes in sorted(chunked):
            for width in sorted(chunked[element_bytes]):
                with table.forced(max_single_block_n=1):
                    launch = lookup(width, element_bytes)
                rows.append((pass_, _path_of(pass_, launch), element_bytes, width, launch))
    return rows


def _path_of(pass_: str, launch) -> str:
    if not launch.single_chunk:
        if pass_ == "forward":
            return "chunked persistent" if launch.programs_per_sm > 0 else "chunked"
        if launch.hold_partials:
            return "held" if launch.unroll else "held loop"
        if launch.band_rows:
            return "paired"
        return "split" if launch.split else "chunked"
    if pass_ == "backward":
        return "lean" if launch.lean else "register"
    return "persistent" if launch.programs_per_sm > 0 else "register"


def path_shapes(table) -> List[tuple]:
    """(pass, path, element bytes, row width, Launch): one launch shape per path and element size,
    the table's row where it has one of that path, else a shape the sweep tries."""
    Launch = table.Launch
    rows = table_rows(table)
    fallback = {
        ("forward", "register"): (1024, Launch(4, 1024, 8, True)),
        ("forward", "persistent"): (16384, Launch(1, 16384, 32, True, 1)),
        ("forward", "chunked"): (65536, Launch(1, 8192, 16, False)),
        ("forward", "chunked persistent"): (65536, Launch(1, 8192, 16, False, 1)),
        ("backward", "register"): (1024, Launch(2, 1024, 8, True, 2)),
        ("backward", "lean"): (8192, Launch(1, 8192, 16, True, 1, lean=True)),
        ("backward", "chunked"): (65536, Launch(2, 2048, 8, False, 2)),
        ("backward", "split"): (65536, Launch(8, 1024, 8, False, 4, split=True)),
        ("backward", "held"): (16384, Launch(1, 4096, 16, False, 1, hold_partials=True)),
        ("backward", "held loop"): (16384, Launch(1, 2048, 16, False, 1, hold_partials=True, unroll=False)),
        ("backward", "paired"): (65536, Launch(1, 2048, 16, False, 1, band_rows=32)),
    }
    out = []
    for (pass_, path), (width, launch) in fallback.items():
        for element_bytes in (2, 4):
            found = [r for r in rows if r[:3] == (pass_, path, element_bytes)]
            # the row at the fallback's width if the table has one, else its widest row of that path
            pick = next((r for r in found if r[3] == width), found[-1] if found else None)
            out.append(pick or (pass_, path, element_bytes, width, launch))
    return out


def cases(table) -> List[Case]:
    dtypes = {2: ("fp16", "bf16"), 4: ("fp32",)}
    out = []
    for pass_, path, element_bytes, width, launch in table_rows(table):
        core = CORE_FORWARD if pass_ == "forward" else CORE_BACKWARD
        for dtype in dtypes[element_bytes]:
            out += [Case(pass_, path, launch, width, dtype, dtype, flags) for flags in core]
    for pass_, path, element_bytes, width, launch in path_shapes(table):
        every = forward_flags if pass_ == "forward" else backward_flags
        core = CORE_FORWARD if pass_ == "forward" else CORE_BACKWARD
        for dtype in dtypes[element_bytes]:
            out += [Case(pass_, path, launch, width, dtype, dtype, flags) for flags in every(element_bytes == 2)]
            if element_bytes == 2:
                out += [Case(pass_, path, launch, width, dtype, "fp32", flags) for flags in core]
        odd = width - 3 if width > 16 else width
        dtype = dtypes[element_bytes][-1]
        out += [Case(pass_, path, launch, odd, dtype, dtype, flags, aligned=False) for flags in core]
    seen, unique = set(), []
    for case in out:  # a table row that is also a path's shape appears once
        if case.name() not in seen:
            seen.add(case.name())
            unique.append(case)
    return unique


# ---------------------------------------------------------------------------
# Recording the launches: Triton's own launch path, with a stand-in sm_90 driver and compiler


@dataclass
class Source:
    """What Triton would compile for one launch: its ASTSource and options."""

    src: Any
    options: Dict[str, Any]

    def describe(self) -> str:
        consts = {self.src.fn.arg_names[k[0]]: v for k, v in self.src.constants.items() if len(k) == 1}
        return f"{self.src.name} num_warps={self.options.get('num_warps')} {consts}"


class _StandInDriver:
    """Just what JITFunction.run asks of a driver, for an sm_90 device 0."""

    def __init__(self, torch, target):
        self._torch, self._target = torch, target

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self._target

    def get_device_interface(self):
        return self._torch.cuda

    def get_active_torch_device(self):
        return self._torch.device("cpu")


class _Recorded:
    """A compiled kernel that records its launches instead of running them."""

    def __init__(self, index: int, launched: List[int]):
        self.index, self._launched = index, launched
        self.function, self.packed_metadata = None, None

    def launch_metadata(self, *args):
        return None

    def run(self, *args):
        self._launched.append(self.index)


class Recorder:
    """Runs the launch functions with Triton's compile and driver stood in for: each launch is
    bound and specialized by Triton as usual, and its compile source recorded once."""

    def __init__(self):
        import torch
        import triton.compiler
        from triton.backends.compiler import GPUTarget
        from triton.runtime.driver import driver

        from layernorm.kernels import direct, launch

        self.sources: List[Source] = []
        self.launched: List[int] = []
        self._driver, self._saved_driver = driver, driver._active
        driver.set_active(_StandInDriver(torch, GPUTarget("cuda", 90, 32)))
        self._compiler, self._real_compile = triton.compiler, triton.compiler.compile
        triton.compiler.compile = self._record
        self._direct, self._launch = direct, launch
        self._saved = direct.ENABLED, launch._sm_count
        direct.ENABLED = False  # every launch through Triton's own path
        launch._sm_count = lambda x: SM_COUNT

    def _record(self, src, target=None, options=None, **_):
        self.sources.append(Source(src, dict(options or {})))
        return _Recorded(len(self.sources) - 1, self.launched)

    def launches_of(self, fn: Callable[[], Any]) -> List[int]:
        """Indices into ``sources`` of the kernels that ``fn`` launches, in launch order."""
        del self.launched[:]
        fn()
        return list(self.launched)

    def close(self):
        self._compiler.compile = self._real_compile
        self._driver._active = self._saved_driver
        self._direct.ENABLED, self._launch._sm_count = self._saved


_TENSORS: Dict[tuple, Any] = {}


def _rows(m, n, dtype, aligned):
    """An (m, n) tensor, never written or read (its pages are never touched); unaligned: one element
    into its storage, rows n + 1 apart."""
    import torch

    key = (m, n, dtype, aligned)
    if key not in _TENSORS:
        if aligned:
            _TENSORS[key] = torch.empty(m, n, dtype=dtype)
        else:
            _TENSORS[key] = torch.empty(m * (n + 1) + 1, dtype=dtype)[1:].as_strided((m, n), (n + 1, 1))
    return _TENSORS[key]


def _vector(n, dtype, aligned, salt=0):
    import torch

    key = ("vector", n, dtype, aligned, salt)
    if key not in _TENSORS:
        _TENSORS[key] = torch.empty(n + 1, dtype=dtype)[0 if aligned else 1:][:n]
    return _TENSORS[key]


def run_case(case: Case, table, launch) -> None:
    import torch

    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    dt, wdt = dtypes[case.dtype], dtypes[case.weight_dtype]
    other = lambda kind: None if kind is None else (dt if kind == "same" else torch.float32)  # noqa: E731
    n, f = case.n, case.flags
    x = _rows(M, n, dt, case.aligned)
    weight = _vector(n, wdt, case.aligned) if f.weight else None
    with table.forced(launch=case.launch):
        if case.pass_ == "forward":
            residual = None if f.residual is None else _rows(M, n, other(f.residual), case.aligned)
            bias = _vector(n, wdt, case.aligned, 1) if f.bias else None
            launch.norm_forward(x, residual, weight, bias, 1e-5, f.is_rms, other(f.store), f.offset, f.round_first)
        else:
            dy = _rows(M, n, dt, case.aligned)
            dres = None if f.dres is None else _rows(M, n, other(f.dres), case.aligned)
            mean = None if f.is_rms else _vector(M, torch.float32, True, 2)
            rstd = _vector(M, torch.float32, True, 3)
            launch.norm_backward(dy, x, dres, mean, rstd, weight, wdt if f.bias else None, f.is_rms, f.need_dw,
                                 f.offset)


# ---------------------------------------------------------------------------
# Compiling and fingerprinting


def _strip_ptx(ptx: str, name: str) -> str:
    """PTX without location and debug information, comments, or the kernel's name."""
    ptx = re.split(r"^\s*\.section\s+\.debug", ptx, maxsplit=1, flags=re.M)[0]  # debug sections come last
    kept = []
    for line in ptx.splitlines():
        line = line.split("//", 1)[0].rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith((".loc", ".file")):
            continue
        if re.fullmatch(r"\$L__(tmp|func_begin|func_end|info_string)\w*:", stripped):
            continue
        kept.append(line)
    return "\n".join(kept).replace(name, "KERNEL")  # also in its parameters' names


def _strip_sass(sass: str, name: str) -> str:
    """cuobjdump's SASS (instructions with their encodings, control bits included), name replaced."""
    return sass.replace(name, "KERNEL")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compile_source(source: Source) -> Dict[str, Any]:
    """Registers, stack frame, shared memory, PTX and SASS hashes of one source compiled for sm_90."""
    import triton
    from triton.backends.compiler import GPUTarget

    try:
        compiled = triton.compile(source.src, target=GPUTarget("cuda", 90, 32), options=source.options)
    except Exception as exc:  # a configuration the compiler refuses: compared as such
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
    name = source.src.name
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as f:
        f.write(compiled.asm["cubin"])
    try:
        usage = subprocess.run([os.path.join(tools, "cuobjdump"), "-res-usage", f.name],
                               capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([os.path.join(tools, "cuobjdump"), "-sass", f.name],
                              capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    found = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    return {"regs": int(found.get("REG", -1)), "stack": int(found.get("STACK", -1)),
            "shared": int(found.get("SHARED", -1)), "local": int(found.get("LOCAL", -1)),
            "ptx": _digest(_strip_ptx(compiled.asm["ptx"], name)), "sass": _digest(_strip_sass(sass, name))}


_SOURCES: List[Source] = []  # read by the forked workers


def _compile_index(index: int) -> Dict[str, Any]:
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")
    return compile_source(_SOURCES[index])


def fingerprint(jobs: int, only: Optional[str], limit: Optional[int]) -> Dict[str, Any]:
    import multiprocessing

    import triton

    from layernorm.kernels import launch, table

    recorder = Recorder()
    per_case: Dict[str, List[int]] = {}
    try:
        chosen = [c for c in cases(table) if only is None or re.search(only, c.name())]
        for case in chosen[:limit]:
            per_case[case.name()] = recorder.launches_of(lambda: run_case(case, table, launch))
    finally:
        recorder.close()
    _SOURCES[:] = recorder.sources
    print(f"{len(per_case)} configurations, {len(_SOURCES)} kernel specializations to compile "
          f"({jobs} at a time)", file=sys.stderr, flush=True)
    start = time.time()
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.map(_compile_index, range(len(_SOURCES)), chunksize=4)
    else:
        results = [_compile_index(i) for i in range(len(_SOURCES))]
    print(f"compiled in {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    out = {}
    for name, indices in per_case.items():
        out[name] = [{"kernel": _SOURCES[i].describe(), **results[i]} for i in indices]
    return {"triton": triton.__version__, "target": "cuda sm_90", "rows": M, "sm_count": SM_COUNT,
            "line_info": os.environ.get("TRITON_DISABLE_LINE_INFO", "0") in ("", "0"),
            "configurations": out}


def print_fingerprints(data: Dict[str, Any]) -> None:
    for name, launches in data["configurations"].items():
        for k, r in enumerate(launches):
            figures = (f"regs {r['regs']:>3} stack {r['stack']:>4} ptx {r['ptx']} sass {r['sass']}"
                       if "error" not in r else f"error {r['error']}")
            print(f"{name} #{k}: {figures}")


# ---------------------------------------------------------------------------
# Comparing two records

_COMPARED = ("regs", "stack", "shared", "local", "ptx", "sass", "error")


def compare(before: Dict[str, Any], after: Dict[str, Any]) -> int:
    if before.get("line_info", True) != after.get("line_info", True):
        print("one file was compiled with line information and the other without: record both alike")
        return 2
    a, b = before["configurations"], after["configurations"]
    missing, added = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    differ = []
    for name in sorted(set(a) & set(b)):
        if len(a[name]) != len(b[name]):
            differ.append((name, f"{len(a[name])} launches before, {len(b[name])} after"))
            continue
        for k, (x, y) in enumerate(zip(a[name], b[name])):
            changed = [f"{key} {x.get(key)} -> {y.get(key)}" for key in _COMPARED if x.get(key) != y.get(key)]
            if changed:
                differ.append((f"{name} #{k}", "; ".join(changed)))
    same = len(set(a) & set(b)) - len({d[0].split(" #")[0] for d in differ})
    print(f"{len(a)} configurations before, {len(b)} after: {same} identical, "
          f"{len({d[0].split(' #')[0] for d in differ})} differ, {len(missing)} missing, {len(added)} new")
    for name, what in differ[:50]:
        print(f"  differs: {name}: {what}")
    for name in missing[:20]:
        print(f"  missing: {name}")
    for name in added[:20]:
        print(f"  new: {name}")
    return 1 if differ or missing or added else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the fingerprints to this JSON file")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two recorded files")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiles at a time")
    parser.add_argument("--only", help="configurations whose name matches this regular expression")
    parser.add_argument("--limit", type=int, help="the first LIMIT configurations only (a quick look)")
    parser.add_argument("--list", action="store_true", help="print the configurations' names and stop")
    parser.add_argument("--quiet", action="store_true", help="no line per configuration")
    parser.add_argument("--no-line-info", action="store_true",
                        help="compile without line information (TRITON_DISABLE_LINE_INFO=1): code that only moved "
                             "between helpers compares equal")
    parser.add_argument("--cache-dir", help="Triton's cache (default: a fresh temporary one, removed after)")
    args = parser.parse_args()
    if args.compare:
        with open(args.compare[0]) as f, open(args.compare[1]) as g:
            return compare(json.load(f), json.load(g))
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("run without TRITON_INTERPRET: this compiles the kernels")
    sys.path.insert(0, ROOT)
    if args.list:
        from layernorm.kernels import table

        for case in cases(table):
            if args.only is None or re.search(args.only, case.name()):
                print(case.name())
        return 0
    if args.no_line_info:
        os.environ["TRITON_DISABLE_LINE_INFO"] = "1"  # read by Triton at each compile, in every worker
    cache = args.cache_dir or tempfile.mkdtemp(prefix="triton_fingerprint_")
    os.environ["TRITON_CACHE_DIR"] = cache
    warnings.filterwarnings("ignore", message=".*TRITON_DEFAULT_FP_FUSION.*")
    try:
        data = fingerprint(args.jobs, args.only, args.limit)
    finally:
        if not args.cache_dir:
            shutil.rmtree(cache, ignore_errors=True)
    if not args.quiet:
        print_fingerprints(data)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
