"""Swap PyTorch's normalization modules inside any model for ours, in place.

Our :class:`~layernorm.LayerNorm` subclasses ``torch.nn.LayerNorm`` and adds no
state, so swapping is a change of class of the existing module object: the
very same parameter tensors, buffers, hooks, device, dtype and train/eval
flag stay, nothing is copied, and an optimizer built before the swap still
holds the right parameters. Only modules whose class is exactly PyTorch's
are swapped; subclasses of it (a model's own LayerNorm variant) are left
alone, because their ``forward`` may do something else.

With ``fuse_add=True`` PyTorch's ``TransformerEncoderLayer`` and
``TransformerDecoderLayer`` are swapped the same way for the classes of
:mod:`layernorm.blocks`, whose ``forward`` runs each residual add and the norm
after it as one fused call. That is where a model's structure allows the
fusion without rewriting its code: the add and the norm sit in one
``forward`` we can replace. (In a model library's own block, GPT-2's say, the
add is in that block's code; use :class:`layernorm.AddLayerNorm` there.)
"""

from __future__ import annotations

import torch

from . import blocks
from .modules import LayerNorm, RMSNorm

__all__ = ["patch", "unpatch"]

# PyTorch's class -> ours, and back.
_NORMS = {torch.nn.LayerNorm: LayerNorm, torch.nn.RMSNorm: RMSNorm}
_LAYERS = {
    torch.nn.TransformerEncoderLayer: blocks.TransformerEncoderLayer,
    torch.nn.TransformerDecoderLayer: blocks.TransformerDecoderLayer,
}
_THEIRS = {ours: theirs for theirs, ours in {**_NORMS, **_LAYERS}.items()}


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


def patch(model: torch.nn.Module, *, fuse_add: bool = False) -> int:
    """Make every ``torch.nn.LayerNorm`` / ``torch.nn.RMSNorm`` in ``model`` run ours.

    With ``fuse_add``, also every ``torch.nn.TransformerEncoderLayer`` /
    ``TransformerDecoderLayer``: their residual adds run fused with the norm
    after them (:mod:`layernorm.blocks`). Returns the number of modules swapped
    (the root counts when it is one).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
        >>> patch(model)
        1
        >>> type(model[1]).__module__
        'layernorm.modules'
    """
    if not isinstance(fuse_add, bool):
        raise TypeError(f"fuse_add must be a bool, got {type(fuse_add).__name__}")
    return _swap_classes(model, {**_NORMS, **_LAYERS} if fuse_add else _NORMS)


def unpatch(model: torch.nn.Module) -> int:
    """Undo :func:`patch` (with or without ``fuse_add``): our modules become PyTorch's again.
    Returns the count."""
    return _swap_classes(model, _THEIRS)
