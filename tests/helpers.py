"""Shared test helpers: random inputs (never zeros) and the normwise error."""

import torch

from layernorm.check import TOLERANCE

__all__ = ["TOLERANCE", "random_like_activations", "relative_error"]


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
