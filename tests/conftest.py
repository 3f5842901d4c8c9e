"""The test harness: which device each test runs on, and how the Triton kernels run there.

Triton decides when it is first imported whether it interprets or compiles, and
that holds for the whole process. So a test process has one *kernel device*:

- no GPU: the kernels run on CPU tensors through Triton's interpreter
  (``TRITON_INTERPRET=1``, set here, before any test module imports Triton);
- a CUDA GPU: they are compiled and run on the GPU.

Fixtures:

- ``device``: each test that takes it runs on the CPU and, marked ``gpu``, on
  CUDA (skipped where no GPU is; ``pytest -m gpu`` runs those);
- ``interpreted_kernels``: the kernels on the CPU through the interpreter
  (skipped on a GPU machine, where tests/gpu runs them compiled, and where
  Triton is missing);
- ``poisoned_buffers``: every buffer the kernels are handed is NaN-filled
  first, so an element left unwritten fails the comparison;
- ``impl``: the implementation to run, parametrised indirectly
  (``"reference"``, ``"torch"``, ``"triton"``).

Every test under tests/gpu is marked ``gpu``; a ``gpu`` test is skipped where
no CUDA device is.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
KERNEL_DEVICE = "cuda" if HAS_CUDA else "cpu"
GPU_TESTS = Path(__file__).resolve().parent / "gpu"


def _import_triton_for_the_kernel_device() -> None:
    if HAS_CUDA or "triton" in sys.modules:
        return
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton  # noqa: F401
    except ImportError:
        pass
    finally:  # the variable itself is set per test (interpreted_kernels), not for the whole process
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved


_import_triton_for_the_kernel_device()


def triton_is_interpreted() -> bool:
    """Whether Triton's own functions were decorated for its interpreter (fixed at its import)."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.cdiv, InterpretedFunction)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if GPU_TESTS in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.gpu)
        if not HAS_CUDA and item.get_closest_marker("gpu") is not None:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def device(request):
    return request.param


@pytest.fixture
def interpreted_kernels(monkeypatch):
    if HAS_CUDA:
        pytest.skip("on a GPU the kernels are compiled; tests/gpu runs them (pytest -m gpu)")
    pytest.importorskip("triton")
    if not triton_is_interpreted():
        pytest.skip("Triton was imported for compiling before the harness set up its interpreter")
    monkeypatch.setenv("TRITON_INTERPRET", "1")


@pytest.fixture
def poisoned_buffers(monkeypatch):
    from layernorm.kernels import launch

    def nan_filled(shape, dtype, device):
        return torch.full(shape, float("nan"), dtype=dtype, device=device)

    monkeypatch.setattr(launch, "_alloc", nan_filled)


@pytest.fixture
def impl(request):
    """The implementation to run (parametrize indirectly); "triton" where the kernels run on this
    process's kernel device: on the CPU tensors of these tests only through the interpreter."""
    if request.param == "triton":
        request.getfixturevalue("interpreted_kernels")
    return request.param
