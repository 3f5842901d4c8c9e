"""Precompiling the sweep's kernels in worker processes (layernorm.kernels.precompile).

The checks are tests/precompile_check.py, a program: it needs Triton
compiling (no ``TRITON_INTERPRET``), which a pytest process that has imported
the kernels under the interpreter cannot switch to, so it runs in a
subprocess, with the installed Triton and a stand-in sm_90 driver.
"""

import importlib.util

import pytest

from helpers import run_compiling

if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)


def test_precompiled_kernels_are_the_ones_the_launches_ask_for():
    done = run_compiling("precompile_check.py", timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ask for the same" in done.stdout and "found all" in done.stdout, done.stdout


def test_compile_only_refuses_the_interpreter(interpreted_kernels):
    from layernorm.kernels import precompile

    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        with precompile.compile_only():
            pass


def test_precompile_with_no_workers_compiles_nothing():
    from layernorm.kernels import precompile, table

    import torch

    job = precompile.Job(False, torch.float32, 8, 64, table.Launch(1, 64, 4, True))
    report = precompile.precompile([job], workers=0)
    assert (report.jobs, report.workers, report.errors) == (1, 0, [])
    assert "1 launch in" in str(report)


def _die():
    raise SystemExit(3)  # a worker process that cannot start (no GPU, a broken driver)


def test_a_pool_that_fails_is_reported_and_does_not_stop_the_caller():
    from layernorm.kernels import precompile, table

    import torch

    jobs = [precompile.Job(False, torch.float32, 8, 64, table.Launch(1, 64, 4, True)),
            precompile.Job(True, torch.float32, 8, 64, table.Launch(1, 64, 4, True, 1))]
    report = precompile.precompile(jobs, workers=2, initializer=_die)
    assert report.errors and all("not precompiled" in e for e in report.errors)
    assert f"{len(report.errors)} errors" in str(report)
