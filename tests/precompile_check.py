"""Is a kernel precompiled by layernorm.kernels.precompile the one its launch then asks for?

Run as a program, with Triton compiling (``TRITON_INTERPRET`` unset), on a
machine with or without a GPU: the stand-in sm_90 driver of
``direct_launch_check.py`` replaces CUDA. Two checks:

1. ``keys``: every launch of the launch sweep (``scripts/sweep_launch.py``:
   all its jobs, both element sizes), made once under ``compile_only`` and
   once as an ordinary launch, each in a fresh process with Triton's
   ``compile`` recording what it is asked to compile. Both must ask for
   the same set of kernels (source, specialization, options), and
   ``compile_only`` must launch nothing.
2. ``cache``: a few jobs compiled for real (sm_90, no GPU needed) by a pool
   of two worker processes, into an empty ``TRITON_CACHE_DIR``; the same
   launches compiled again in this process must all be found in that cache
   (no new cache entry).

    python3 tests/precompile_check.py          # exit 0: both hold
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("run without TRITON_INTERPRET: this checks compiled kernels")

import torch  # noqa: E402
import triton  # noqa: E402
import triton.compiler  # noqa: E402
from triton.runtime.driver import driver  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from direct_launch_check import FakeDriver, RecordingKernel  # noqa: E402

from layernorm.kernels import precompile, table  # noqa: E402

ASKED = []  # (kernel, source hash, options) of each compile asked for
LAUNCHED = [0]


def recording_compile(src, target=None, options=None, **_):
    ASKED.append((src.fn.__name__, src.hash(), json.dumps(options, sort_keys=True, default=str)))
    kernel = RecordingKernel(src)
    kernel._launch = lambda *args: LAUNCHED.__setitem__(0, LAUNCHED[0] + 1)
    return kernel


def use_fake_driver() -> None:
    """Also the pool's initializer: each worker process stands in the sm_90 driver."""
    driver.set_active(FakeDriver())


def sweep_jobs():
    spec = importlib.util.spec_from_file_location("sweep_launch", os.path.join(HERE, "..", "scripts",
                                                                               "sweep_launch.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["sweep_launch"] = module
    spec.loader.exec_module(module)
    return module.jobs(2, quick=False) + module.jobs(4, quick=False)


def keys(mode: str) -> int:
    """Print what compiling the sweep's jobs asks of Triton's compile, one way or the other."""
    use_fake_driver()
    triton.compiler.compile = recording_compile
    jobs = sweep_jobs()
    if mode == "compile-only":
        errors = precompile.compile_jobs(jobs, device="cpu")
    else:
        errors, stats = [], {}
        for job in jobs:  # as the sweep does: its own inputs; a backward takes the last forward's statistics
            x, dy = (torch.empty(job.m, job.n, dtype=job.dtype) for _ in range(2))
            w, b = (torch.empty(job.n, dtype=job.dtype) for _ in range(2))
            shape = (job.dtype, job.m, job.n)
            with table.forced(launch=job.shape):
                if job.backward:
                    precompile.backward(dy, x, w, b, *stats[shape])
                else:
                    stats[shape] = precompile.forward(x, w, b)[2:]
    print(json.dumps({"jobs": len(jobs), "asked": sorted(set(ASKED)), "launched": LAUNCHED[0], "errors": errors}))
    return 0


def check_keys() -> str:
    found = {}
    for mode in ("compile-only", "launch"):
        done = subprocess.run([sys.executable, __file__, "keys", mode], capture_output=True, text=True)
        if done.returncode != 0:
            raise AssertionError(f"keys {mode} failed:\n{done.stdout}\n{done.stderr}")
        found[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    ahead, launched = found["compile-only"], found["launch"]
    if ahead["errors"] or launched["errors"]:
        raise AssertionError(f"errors: {ahead['errors'][:3]} {launched['errors'][:3]}")
    if ahead["launched"]:
        raise AssertionError(f"compile_only launched {ahead['launched']} kernels")
    if launched["launched"] < launched["jobs"]:
        raise AssertionError("the ordinary launches did not all launch")
    missing = {tuple(k) for k in launched["asked"]} - {tuple(k) for k in ahead["asked"]}
    extra = {tuple(k) for k in ahead["asked"]} - {tuple(k) for k in launched["asked"]}
    if missing or extra:
        raise AssertionError(f"{len(missing)} kernels launched but not precompiled (e.g. {sorted(missing)[:1]}), "
                             f"{len(extra)} precompiled but not launched")
    return f"{ahead['jobs']} sweep launches ask for the same {len(ahead['asked'])} kernels either way"


def cache_entries(folder: str) -> set:
    return {name for name in os.listdir(folder)}


def check_cache() -> str:
    jobs = [precompile.Job(False, torch.bfloat16, 64, 256, table.Launch(4, 256, 4, True)),
            precompile.Job(True, torch.bfloat16, 64, 256, table.Launch(4, 256, 4, True, 1)),
            precompile.Job(True, torch.float32, 48, 4096, table.Launch(1, 1024, 4, False, 1))]
    with tempfile.TemporaryDirectory() as folder:
        os.environ["TRITON_CACHE_DIR"] = folder  # the workers inherit it
        report = precompile.precompile(jobs, workers=2, device="cpu", initializer=use_fake_driver)
        if report.errors:
            raise AssertionError(f"precompile failed: {report.errors}")
        before = cache_entries(folder)
        if not before:
            raise AssertionError("the workers wrote nothing to Triton's cache")
        use_fake_driver()
        errors = precompile.compile_jobs(jobs, device="cpu")
        new = cache_entries(folder) - before
        if errors or new:
            raise AssertionError(f"{len(new)} kernels compiled again in this process: not found in the cache "
                                 f"({errors})")
        # the control: a launch not precompiled does write a new entry here, so the check can fail
        precompile.compile_jobs([precompile.Job(False, torch.float16, 64, 256, table.Launch(4, 256, 4, True))],
                                device="cpu")
        if not cache_entries(folder) - before:
            raise AssertionError("a new kernel left no entry in TRITON_CACHE_DIR: this check sees nothing")
    return f"{report}; this process found all {len(before)} cache entries"


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "keys":
        return keys(sys.argv[2])
    try:
        print("ok:", check_keys())
        print("ok:", check_cache())
    except AssertionError as exc:
        print(f"FAILED on Triton {triton.__version__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
