"""Checks of user input at the API edge.

Every public function validates here, before any implementation runs, so a
mistake surfaces as a ``TypeError`` (wrong kind of thing) or ``ValueError``
(right kind, wrong value) that names what was expected and what came, never
as an ``assert``, a crash inside a kernel, or silently wrong numbers.
"""

from __future__ import annotations

import numbers
from typing import Optional, Tuple

import torch
from torch import Tensor

IMPLEMENTATIONS = ("torch", "reference", "triton")


def normalized_shape_tuple(normalized_shape) -> Tuple[int, ...]:
    """``int | list | tuple | torch.Size`` of positive ints -> ``tuple``."""
    if isinstance(normalized_shape, bool):
        raise TypeError(f"normalized_shape must be an int or a sequence of ints, got {normalized_shape!r}")
    if isinstance(normalized_shape, numbers.Integral):
        shape = (int(normalized_shape),)
    elif isinstance(normalized_shape, (list, tuple, torch.Size)):
        if not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in normalized_shape):
            raise TypeError(
                f"normalized_shape must contain only ints, got {tuple(normalized_shape)!r}"
            )
        shape = tuple(int(d) for d in normalized_shape)
    else:
        raise TypeError(
            "normalized_shape must be an int, list, tuple or torch.Size, "
            f"got {type(normalized_shape).__name__}"
        )
    if len(shape) == 0:
        raise ValueError("normalized_shape must name at least one dimension, got ()")
    if any(d < 1 for d in shape):
        raise ValueError(f"normalized_shape must contain positive sizes, got {shape}")
    return shape


def check_eps(eps) -> float:
    """eps must be a real number >= 0 (it is added under the square root)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    eps = float(eps)
    if not eps >= 0.0:  # also rejects NaN
        raise ValueError(f"eps must be >= 0, got {eps}")
    return eps


def check_input(x, shape: Tuple[int, ...]) -> None:
    """x must be a floating tensor whose trailing dims equal ``shape``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got dtype {x.dtype}")
    if tuple(x.shape[x.dim() - len(shape):]) != shape or x.dim() < len(shape):
        raise ValueError(
            f"normalized_shape {list(shape)} must match the trailing dimensions of the "
            f"input, got input of shape {list(x.shape)}"
        )


def check_parameter(name: str, p: Optional[Tensor], shape: Tuple[int, ...], x: Tensor) -> None:
    """weight / bias: None, or a floating tensor of ``normalized_shape`` on x's device."""
    if p is None:
        return
    if not isinstance(p, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(p).__name__}")
    if not p.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {p.dtype}")
    if tuple(p.shape) != shape:
        raise ValueError(
            f"{name} must have shape normalized_shape {list(shape)}, got {list(p.shape)}"
        )
    if p.device != x.device:
        raise ValueError(f"{name} is on {p.device} but the input is on {x.device}")


def check_impl(impl) -> Optional[str]:
    """impl is None (automatic) or one of IMPLEMENTATIONS."""
    if impl is None or impl in IMPLEMENTATIONS:
        return impl
    raise ValueError(f"impl must be one of {IMPLEMENTATIONS} or None, got {impl!r}")
