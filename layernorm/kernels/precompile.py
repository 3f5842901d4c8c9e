"""Compile the kernels of many launches ahead of time, in parallel worker processes.

Triton compiles a kernel when a launch first needs it, in the launching
process, one kernel at a time: about a second each for ours. A sweep that
times hundreds of launch shapes (``scripts/sweep_launch.py``) would spend
most of its time compiling, one CPU core busy and the GPU idle.

Here the same launches first run in a pool of processes with launching
switched off (:func:`compile_only`). Each launch still goes through Triton's
own ``JITFunction.run``, with ``warmup=True``: it binds and specializes the
arguments exactly as the launch would, compiles, and stores the compiled
kernel in Triton's on-disk cache (``TRITON_CACHE_DIR``, by default
``~/.triton/cache``). When the timing process later makes those launches, it
finds every kernel there: a read of a few milliseconds instead of a compile.

A :class:`Job` is what the sweep times: one pass of LayerNorm with weight
and bias over an ``m x n`` input under one launch shape.
``tests/precompile_check.py`` checks that a job compiled here is the kernel
its launch asks for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import launch, table
from .direct import COMPILE_OPTIONS, DirectKernel


@dataclasses.dataclass(frozen=True)
class Job:
    """One pass of LayerNorm (weight and bias) over ``m x n`` rows of ``dtype``, launched as ``shape``."""

    backward: bool
    dtype: torch.dtype
    m: int
    n: int
    shape: table.Launch


# The passes a job stands for. The sweep times exactly these calls, so that what is compiled here
# is what it launches.


def forward(x: Tensor, weight: Tensor, bias: Tensor) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor], Tensor]:
    """y, r' (None), mean, rstd of LayerNorm over the rows of x."""
    return launch.norm_forward(x, None, weight, bias, 1e-5, False, None)


def backward(dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, rstd: Tensor) -> Any:
    """dx, dweight, dbias of LayerNorm over the rows of x."""
    return launch.norm_backward(dy, x, None, mean, rstd, weight, bias.dtype, False)


class _CompileOnlyKernel:
    """Stands in for a DirectKernel: a launch compiles (Triton's ``warmup``) and runs nothing."""

    def __init__(self, kernel: Any):
        self.kernel = kernel

    def launch(self, grid: Tuple[int, ...], *args: Any, **constexprs: Any) -> None:
        self.kernel.warmup(*args, grid=grid, **COMPILE_OPTIONS, **constexprs)


@contextlib.contextmanager
def compile_only() -> Iterator[None]:
    """Inside the block, the launches of :mod:`layernorm.kernels.launch` compile their kernels
    (into Triton's caches) and launch nothing: their outputs are left unwritten."""
    kernels = {name: value for name, value in vars(launch).items() if isinstance(value, DirectKernel)}
    if not all(k.direct for k in kernels.values()):
        raise RuntimeError("compile_only needs Triton compiling; it cannot run under TRITON_INTERPRET=1")
    try:
        for name, kernel in kernels.items():
            setattr(launch, name, _CompileOnlyKernel(kernel.kernel))
        yield
    finally:
        for name, kernel in kernels.items():
            setattr(launch, name, kernel)


# A worker keeps the inputs of the last shape it saw: jobs arrive grouped by shape.
_inputs: Dict[Tuple[Any, ...], Tuple[Tensor, ...]] = {}


def _inputs_for(job: Job, device: str) -> Tuple[Tensor, ...]:
    key = (job.dtype, job.m, job.n, device)
    if key not in _inputs:
        _inputs.clear()  # one shape's inputs at a time

        def empty(*shape, dtype=job.dtype):
            # a fresh allocation, as the sweep's are: the same 16-byte alignment, which Triton specializes on
            return torch.empty(shape, dtype=dtype, device=device)

        _inputs[key] = (empty(job.m, job.n), empty(job.n), empty(job.n), empty(job.m, job.n),
                        empty(job.m, dtype=torch.float32), empty(job.m, dtype=torch.float32))
    return _inputs[key]


def compile_jobs(jobs: Sequence[Job], device: str = "cuda") -> List[str]:
    """Compile the kernels of ``jobs`` in this process; returns the errors (a shape the compiler
    refuses: too many registers, too much shared memory), one line each."""
    errors = []
    with compile_only():
        for job in jobs:
            x, weight, bias, dy, mean, rstd = _inputs_for(job, device)
            try:
                with table.forced(launch=job.shape):
                    if job.backward:
                        backward(dy, x, weight, bias, mean, rstd)
                    else:
                        forward(x, weight, bias)
            except Exception as exc:  # the timing process meets it again, and logs it there
                errors.append(f"{job}: {type(exc).__name__}: {str(exc)[:200]}")
    return errors


def _same_kernels(job: Job) -> Tuple[Any, ...]:
    """Jobs that differ only in their grid's size (programs per SM) mostly share compiled kernels:
    one worker takes them all, so that no two compile the same kernel at once."""
    return (job.backward, job.dtype, job.m, job.n,
            dataclasses.replace(job.shape, programs_per_sm=job.shape.programs_per_sm > 0))


@dataclasses.dataclass
class Report:
    jobs: int
    workers: int
    seconds: float
    errors: List[str]

    def __str__(self) -> str:
        refused = f"; {len(self.errors)} errors (shapes the compiler refused, or a worker lost)" if self.errors else ""
        launches = f"{self.jobs} launch{'' if self.jobs == 1 else 'es'}"
        return f"precompiled the kernels of {launches} in {self.seconds:.0f} s with {self.workers} processes{refused}"


def precompile(jobs: Sequence[Job], workers: int, device: str = "cuda",
               initializer: Optional[Callable[[], None]] = None) -> Report:
    """Compile the kernels of ``jobs`` in ``workers`` fresh processes (spawned: no CUDA state is
    inherited), so that the launches of this process find them in Triton's on-disk cache.
    ``initializer`` runs first in each worker (tests install a stand-in driver with it)."""
    errors: List[str] = []
    if workers <= 0 or not jobs:
        return Report(len(jobs), 0, 0.0, errors)
    start = time.time()
    groups: Dict[Tuple[Any, ...], List[Job]] = {}
    for job in jobs:
        groups.setdefault(_same_kernels(job), []).append(job)
    # Largest groups first, so that the pool does not end waiting on one long group.
    ordered = sorted(groups.values(), key=len, reverse=True)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(ordered)), mp_context=context,
                             initializer=initializer) as pool:
        futures = [pool.submit(compile_jobs, group, device) for group in ordered]
        for group, future in zip(ordered, futures):
            try:
                errors += future.result()
            except Exception as exc:  # a worker that died: its launches compile when first timed
                errors.append(f"{len(group)} launches not precompiled: {type(exc).__name__}: {str(exc)[:200]}")
    return Report(len(jobs), min(workers, len(ordered)), time.time() - start, errors)
