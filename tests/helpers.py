"""Shared test helpers: random inputs (never zeros), random parameters, the normwise error, and
Llama's rounding order. The device each test runs on and the kernels' set-up: conftest.py."""

import torch

from layernorm.cli.check import TOLERANCE, relative_error

__all__ = ["TOLERANCE", "llama_rms_norm", "params", "randn", "random_like_activations", "relative_error"]


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
