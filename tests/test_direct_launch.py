"""The direct launch path (layernorm.kernels.direct) against Triton's own launch path.

The comparison itself is tests/direct_launch_check.py, a program: it needs
Triton compiling (no ``TRITON_INTERPRET``), which a pytest process that has
imported the kernels under the interpreter cannot switch to, so it runs in a
subprocess here, with the installed Triton. scripts/check_triton_versions.sh
runs it on each Triton minor version from 3.2 up.
"""

import importlib.util

import pytest
import torch

from helpers import run_compiling

# find_spec, not import: which mode Triton runs in is the harness's choice (conftest.py).
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)


def test_direct_launch_passes_what_tritons_path_passes():
    done = run_compiling("direct_launch_check.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "launches matched" in done.stdout
    # every launch asks for fused multiply-adds, so Triton 3.9 has no default to warn about
    assert "TRITON_DEFAULT_FP_FUSION" not in done.stderr, done.stderr


def test_argument_key_tells_apart_what_triton_specializes_on():
    from layernorm.kernels.direct import argument_key

    base = torch.zeros(64)
    aligned, unaligned = base[4:], base[1:]  # 16 bytes in, 4 bytes in
    assert argument_key((aligned,)) != argument_key((unaligned,))
    assert argument_key((aligned,)) != argument_key((aligned.half(),))
    keys = [argument_key((v,)) for v in (1, 2, 16, 2**31, 2**31 + 1, 2**63, 2**63 + 1)]  # i32, i64, u64
    assert len(set(keys)) == len(keys)
    assert argument_key((-(2**31),)) == argument_key((2**31 - 16,))  # both i32, multiples of 16
    assert argument_key((2,)) == argument_key((3,))  # neither 1 nor a multiple of 16: one kernel
    assert argument_key((1e-5,)) == argument_key((1e-6,))  # floats are not specialized
    assert argument_key((2,)) != argument_key((2.0,)) != argument_key((True,))  # another kind, another key


def test_interpreted_kernels_take_tritons_path(monkeypatch):
    from layernorm.kernels.direct import DirectKernel

    calls = []

    class Interpreted:  # not a JITFunction, as under TRITON_INTERPRET=1
        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append((grid, args, kwargs))

    DirectKernel(Interpreted()).launch((3,), 1, 2, BLOCK=4)
    assert calls == [((3,), (1, 2), {"BLOCK": 4, "enable_fp_fusion": True})]
