"""Swap PyTorch's normalization modules inside any model for ours, in place.

Our :class:`~layernorm.LayerNorm` subclasses ``torch.nn.LayerNorm`` and adds no
state, so swapping is a change of class of the existing module object: the
very same parameter tensors, buffers, hooks, device, dtype and train/eval
flag stay, nothing is copied, and an optimizer built before the swap still
holds the right parameters. Only modules whose class is exactly PyTorch's
are swapped; subclasses of it (a model's own LayerNorm variant) are left
alone, because their ``forward`` may do something else.
"""

from __future__ import annotations

import torch

from .modules import LayerNorm, RMSNorm

__all__ = ["patch", "unpatch"]

# PyTorch's class -> ours, and back.
_OURS = {torch.nn.LayerNorm: LayerNorm, torch.nn.RMSNorm: RMSNorm}
_THEIRS = {ours: theirs for theirs, ours in _OURS.items()}


def _swap_classes(model: torch.nn.Module, mapping: dict) -> int:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    swapped = 0
    for module in model.modules():
        new_class = mapping.get(type(module))
        if new_class is not None:
            module.__class__ = new_class
            swapped += 1
    return swapped


def patch(model: torch.nn.Module) -> int:
    """Make every ``torch.nn.LayerNorm`` / ``torch.nn.RMSNorm`` in ``model`` run ours.

    Returns the number of modules swapped (the root counts when it is one).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
        >>> patch(model)
        1
        >>> type(model[1]).__module__
        'layernorm.modules'
    """
    return _swap_classes(model, _OURS)


def unpatch(model: torch.nn.Module) -> int:
    """Undo :func:`patch`: our modules become PyTorch's again. Returns the count."""
    return _swap_classes(model, _THEIRS)
