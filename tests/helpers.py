"""Shared test helpers: random inputs (never zeros), random parameters, the normwise error,
Llama's rounding order, and running the check programs and scripts that live beside the tests.
The device each test runs on and the kernels' set-up: conftest.py."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import torch

from layernorm.cli.check import TOLERANCE, relative_error

__all__ = ["TOLERANCE", "llama_rms_norm", "load_script", "params", "randn", "random_like_activations",
           "relative_error", "run_compiling"]

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_compiling(program: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``tests/<program>`` with Triton compiling, not interpreting: a pytest process that has
    imported the kernels under the interpreter cannot switch, so such checks run in a subprocess."""
    # TRITON_DEFAULT_FP_FUSION unset too, as for most users: the kernels ask for fusion themselves
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITON_DEFAULT_FP_FUSION")}
    return subprocess.run([sys.executable, str(ROOT / "tests" / program)], env=env, capture_output=True, text=True,
                          timeout=timeout)


def load_script(name: str):
    """``scripts/<name>.py`` loaded as a module, to test its functions."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_like_activations(*shape, dtype=torch.float32, seed=0, device="cpu", offset=-2.3, scale=0.5):
    """x = 0.5 randn - 2.3: an offset mean and a non-unit scale, like real activations. Drawn on
    the CPU in float64, so a seed gives the same values on every device."""
    g = torch.Generator().manual_seed(seed)
    x = scale * torch.randn(*shape, generator=g, dtype=torch.float64) + offset
    return x.to(device=device, dtype=dtype)


def randn(*shape, dtype=torch.float32, seed=1, device="cpu"):
    return random_like_activations(*shape, dtype=dtype, seed=seed, device=device, offset=0.0, scale=1.0)


def params(n, dtype, seed=3, device="cpu"):
    """A gain near 1 and a bias near 0, both random."""
    w = 1.0 + 0.5 * randn(n, dtype=torch.float64, seed=seed)
    b = 0.5 * randn(n, dtype=torch.float64, seed=seed + 1)
    return w.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)


def llama_rms_norm(x, w, eps, offset=0.0):
    """How Llama-style norms compute it: normalise in float32, round to x's dtype, then multiply
    by the weight (plus ``offset``) in float32 and round again."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return ((w.float() + offset) * h.to(x.dtype).float()).to(x.dtype)
