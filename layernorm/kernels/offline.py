"""The kernels compiled for sm_90 on a machine without a GPU: registers per thread and spills.

Triton compiles for a target it is told (``GPUTarget("cuda", 90, 32)``) with
no device present, and the ``cuobjdump`` it ships reads registers and the
stack frame (spills) off the cubin. ``scripts/sweep_launch.py --registers``
and the compile test of ``tests/test_kernels.py`` use this; neither needs a
GPU. The process must have imported Triton for compiling (no
``TRITON_INTERPRET``).

A kernel's runtime arguments are typed by their names, as the launches in
:mod:`layernorm.kernels.launch` pass them: ``W`` and ``B`` in the weight's
dtype, the statistics and partial sums in float32, other pointers in the
input's dtype, integers as i32.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import tempfile
from typing import Any, Dict, Tuple

TARGET = ("cuda", 90, 32)

# Runtime arguments that are not pointers in the input's dtype.
_INTEGERS = ("M", "N", "num_programs", "num_partials", "rows_per_band", "band_rows")
_WEIGHTS = ("W", "B")
_FLOAT32_POINTERS = ("MEAN", "RSTD", "DW_PARTIAL", "DB_PARTIAL", "C1", "C2")


def argument_type(name: str, dtype: str, weight_dtype: str) -> str:
    """Triton's type of a runtime argument, by its name (dtypes as Triton spells them: "bf16")."""
    if name.startswith("stride") or name in _INTEGERS:
        return "i32"
    if name == "eps":
        return "fp32"
    if name in _WEIGHTS:
        return f"*{weight_dtype}"
    if name in _FLOAT32_POINTERS:
        return "*fp32"
    return f"*{dtype}"


def compile_for_sm90(kernel: Any, constexprs: Dict[str, Any], dtype: str, weight_dtype: str, num_warps: int) -> Any:
    """``kernel`` (a ``@triton.jit`` function) compiled for sm_90; constexprs not given take their
    defaults, and the runtime arguments are read off the kernel's parameters."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from .direct import COMPILE_OPTIONS

    defaults = kernel.signature.parameters
    constexprs = {**{p.name: defaults[p.name].default for p in kernel.params
                     if p.is_constexpr and defaults[p.name].default is not defaults[p.name].empty}, **constexprs}
    signature = {p.name: "constexpr" if p.is_constexpr else argument_type(p.name, dtype, weight_dtype)
                 for p in kernel.params}
    if "constexprs" in inspect.signature(ASTSource).parameters:
        source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    else:  # Triton 3.2 names them constants
        source = ASTSource(fn=kernel, signature=signature, constants=constexprs)
    return triton.compile(source, target=GPUTarget(*TARGET), options={"num_warps": num_warps, **COMPILE_OPTIONS})


def _cuobjdump() -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def has_nvidia_tools() -> bool:
    """Whether this Triton ships the cuobjdump that reads registers off a cubin."""
    return os.path.exists(_cuobjdump())


def resources(compiled: Any) -> Tuple[int, int]:
    """(registers per thread, stack frame bytes) of a compiled kernel; (-1, -1) if unreadable."""
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin", delete=False) as f:
        f.write(compiled.asm["cubin"])
    try:
        text = subprocess.run([_cuobjdump(), "-res-usage", f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    found = re.search(r"REG:(\d+) STACK:(\d+)", text)
    return (int(found.group(1)), int(found.group(2))) if found else (-1, -1)


def compiled_resources(kernel: Any, constexprs: Dict[str, Any], dtype: str, weight_dtype: str,
                       num_warps: int) -> Tuple[int, int]:
    """(registers per thread, stack frame bytes) of one variant of ``kernel`` compiled for sm_90."""
    return resources(compile_for_sm90(kernel, constexprs, dtype, weight_dtype, num_warps))


def programs_per_sm(registers: int, num_warps: int) -> int:
    """Programs of ``num_warps`` warps that an SM's 64K registers (allocated 8 per thread at a
    time) and 2048 threads allow."""
    threads = 32 * num_warps
    return min(65536 // (-(-registers // 8) * 8 * threads), 2048 // threads)
