"""Shared test helpers: random inputs (never zeros), the normwise error, and the ``impl``
fixture that runs each implementation (the Triton kernels through Triton's interpreter)."""

import os
import sys

import pytest
import torch

from layernorm.check import TOLERANCE

__all__ = ["TOLERANCE", "impl", "import_triton_interpreted", "llama_rms_norm", "random_like_activations",
           "relative_error", "triton_is_interpreted"]


def random_like_activations(*shape, dtype=torch.float32, seed=0, device="cpu"):
    """x = 0.5 randn - 2.3: an offset mean and a non-unit scale, like real activations."""
    g = torch.Generator().manual_seed(seed)
    x = 0.5 * torch.randn(*shape, generator=g, dtype=torch.float64) - 2.3
    return x.to(device=device, dtype=dtype)


def randn(*shape, dtype=torch.float32, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def relative_error(out, ref):
    """max |out - ref| / max(max |ref|, 1), in float64 (NaN anywhere gives NaN)."""
    from layernorm.check import relative_error as normwise

    return normwise(out, ref)


def import_triton_interpreted() -> None:
    """Import Triton for its interpreter, unless a GPU runs the kernels or Triton is imported.

    Triton picks interpreter or compiler when it is first imported, so a test module whose
    kernels run on the CPU calls this before anything imports Triton (tests/gpu covers GPUs).
    """
    if torch.cuda.is_available() or "triton" in sys.modules:
        return
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton  # noqa: F401
    except ImportError:
        pass
    finally:
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved


def triton_is_interpreted() -> bool:
    """Whether Triton's own functions were decorated for its interpreter (fixed at its import)."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.cdiv, InterpretedFunction)


@pytest.fixture
def impl(request, monkeypatch):
    """The implementation to run (parametrize indirectly); "triton" on the CPU through the
    interpreter, skipped where Triton is missing or was imported for compiling."""
    if request.param == "triton":
        from layernorm import functional

        if torch.cuda.is_available():
            pytest.skip("the kernels on a GPU are tested in tests/gpu")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        if "triton" not in functional.available_impls("cpu"):
            pytest.skip("triton is not installed")
        if not triton_is_interpreted():
            pytest.skip("Triton was imported for compiling earlier in this process: run this file alone")
    return request.param


def llama_rms_norm(x, w, eps, offset=0.0):
    """How Llama-style norms compute it: normalise in float32, round to x's dtype, then multiply
    by the weight (plus ``offset``) in float32 and round again."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return ((w.float() + offset) * h.to(x.dtype).float()).to(x.dtype)
