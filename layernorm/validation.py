"""Checks of user input at the API edge.

Every public function validates here, before any implementation runs, so a
mistake surfaces as a :class:`LayerNormTypeError` (wrong kind of thing) or
:class:`LayerNormValueError` (right kind, wrong value) that names what was
expected and what came, never as an ``assert``, a crash inside a kernel, or
silently wrong numbers.

Both are also ``RuntimeError``, which is what PyTorch's own ops raise for most
of the same mistakes (a shape that does not match, a parameter of the wrong
shape or dtype, an integer input), so code written against
``torch.nn.functional.layer_norm`` that catches ``RuntimeError`` still catches
ours, and code that catches ``ValueError`` / ``TypeError`` does too.
"""

from __future__ import annotations

import numbers
from typing import Optional, Tuple

import torch
from torch import Tensor

IMPLEMENTATIONS = ("torch", "reference", "triton")
# What impl= and LAYERNORM_IMPL accept, in any case; "auto" is the automatic choice (impl=None).
IMPL_NAMES = ("auto",) + IMPLEMENTATIONS


class LayerNormValueError(ValueError, RuntimeError):
    """The right kind of thing with a wrong value (a shape that does not match, a negative eps).

    A ``ValueError``, and a ``RuntimeError`` because that is what PyTorch raises
    for a wrong shape or device."""


class LayerNormTypeError(TypeError, RuntimeError):
    """The wrong kind of thing (a list for a tensor, an integer tensor).

    A ``TypeError``, and a ``RuntimeError`` because that is what PyTorch raises
    for integer inputs and parameters."""


def normalized_shape_tuple(normalized_shape) -> Tuple[int, ...]:
    """``int | list | tuple | torch.Size`` of sizes ``>= 0`` -> ``tuple``.

    A size of 0 is allowed, as PyTorch allows it: the rows are empty and so is the output."""
    # What modules pass on every call, a tuple of positive ints, returned as it is: the general
    # check below (isinstance of every entry, a new tuple) shows in a small call's host time.
    if type(normalized_shape) is tuple and normalized_shape and all(
            type(d) is int and d > 0 for d in normalized_shape):
        return normalized_shape
    if isinstance(normalized_shape, bool):
        raise LayerNormTypeError(
            f"normalized_shape must be an int or a sequence of ints, got {normalized_shape!r}"
        )
    if isinstance(normalized_shape, numbers.Integral):
        shape = (int(normalized_shape),)
    elif isinstance(normalized_shape, (list, tuple, torch.Size)):
        if not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in normalized_shape):
            raise LayerNormTypeError(
                f"normalized_shape must contain only ints, got {tuple(normalized_shape)!r}"
            )
        shape = tuple(int(d) for d in normalized_shape)
    else:
        raise LayerNormTypeError(
            "normalized_shape must be an int, list, tuple or torch.Size, "
            f"got {type(normalized_shape).__name__}"
        )
    if len(shape) == 0:
        raise LayerNormValueError("normalized_shape must name at least one dimension, got ()")
    if any(d < 0 for d in shape):
        raise LayerNormValueError(f"normalized_shape must contain sizes >= 0, got {shape}")
    return shape


def check_eps(eps) -> float:
    """eps must be a real number >= 0 (it is added under the square root)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise LayerNormTypeError(f"eps must be a real number, got {type(eps).__name__}")
    eps = float(eps)
    if not eps >= 0.0:  # also rejects NaN
        raise LayerNormValueError(f"eps must be >= 0, got {eps}")
    return eps


def check_weight_offset(offset) -> float:
    """weight_offset must be a finite real number (the gain is offset + weight)."""
    if isinstance(offset, bool) or not isinstance(offset, numbers.Real):
        raise LayerNormTypeError(f"weight_offset must be a real number, got {type(offset).__name__}")
    offset = float(offset)
    if offset != offset or offset in (float("inf"), float("-inf")):
        raise LayerNormValueError(f"weight_offset must be finite, got {offset}")
    return offset


def check_flag(name: str, value) -> bool:
    """A switch must be a bool (an int or a string would be truthy by accident)."""
    if not isinstance(value, bool):
        raise LayerNormTypeError(f"{name} must be True or False, got {type(value).__name__}")
    return value


def check_input(x, shape: Tuple[int, ...]) -> None:
    """x must be a floating tensor whose trailing dims equal ``shape``."""
    if not isinstance(x, Tensor):
        raise LayerNormTypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise LayerNormTypeError(f"input must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() < len(shape) or x.shape[x.dim() - len(shape):] != shape:  # torch.Size == tuple
        raise LayerNormValueError(
            f"normalized_shape {list(shape)} must match the trailing dimensions of the "
            f"input, got input of shape {list(x.shape)}"
        )


def check_parameter(name: str, p: Optional[Tensor], shape: Tuple[int, ...], x: Tensor) -> None:
    """weight / bias: None, or a floating tensor of ``normalized_shape`` on x's device."""
    if p is None:
        return
    if not isinstance(p, Tensor):
        raise LayerNormTypeError(f"{name} must be a torch.Tensor or None, got {type(p).__name__}")
    if not p.is_floating_point():
        raise LayerNormTypeError(f"{name} must be a floating-point tensor, got dtype {p.dtype}")
    if p.shape != shape:
        raise LayerNormValueError(
            f"{name} must have shape normalized_shape {list(shape)}, got {list(p.shape)}"
        )
    if p.device != x.device:
        raise LayerNormValueError(f"{name} is on {p.device} but the input is on {x.device}")


def check_impl(impl, source: str = "impl") -> Optional[str]:
    """The implementation ``impl`` names, or ``None`` for the automatic choice.

    One rule for the ``impl=`` argument and the ``LAYERNORM_IMPL`` variable
    (``source`` names which one a message is about): one of ``IMPL_NAMES`` in
    any case, surrounding spaces ignored; ``None`` and ``"auto"`` are automatic.
    """
    if impl is None:
        return None
    if not isinstance(impl, str):
        raise LayerNormTypeError(f"{source} must be a str or None, got {type(impl).__name__}")
    name = impl.strip().lower()
    if name not in IMPL_NAMES:
        expected = ", ".join(repr(n) for n in IMPL_NAMES)
        raise LayerNormValueError(f"{source} must be one of {expected} (in any case), got {impl!r}")
    return None if name == "auto" else name
