"""Swap the normalization modules inside any model for ours, in place, each one checked first.

:func:`patch` reaches every norm of the last dims that it can recognise
(:mod:`layernorm.patching.recognize`): PyTorch's ``torch.nn.LayerNorm`` and
``torch.nn.RMSNorm`` and their subclasses, and the norms of model libraries,
HuggingFace's ``LlamaRMSNorm``, ``T5LayerNorm`` and the like, whatever their
class is called or where they keep epsilon, and Gemma's RMS norms and
Nemotron's layer norm, which multiply by ``1 + weight`` (ours runs them with
``weight_offset=1.0``; the stored weight is the module's own, unchanged). Each candidate runs beside its
replacement on probe inputs, in float32 and in lower precision, and is
swapped only when the two agree to rounding.

A swap is a change of class of the existing module object: PyTorch's classes
become ours (:class:`~layernorm.LayerNorm`, :class:`~layernorm.RMSNorm`, which
subclass them), any other becomes a subclass of its own class whose
``forward`` calls ours (:mod:`layernorm.patching.adopted`). The very same parameter
tensors, under the same names, buffers, hooks, device, dtype and train/eval
flag stay, nothing is copied, an optimizer built before the swap still holds
the right parameters, and state-dict keys do not change. :func:`unpatch`
assigns the original classes back.

``patch`` returns a :class:`~layernorm.patching.report.PatchReport`: the number
of modules replaced (an ``int``, as before), how many of each class, and the
norm-like modules it left with the reason: a forward it does not recognise
(one that takes more than the input, as Mamba 2's gated norm does), a failed
verification, a parametrized weight (``torch.nn.utils.parametrize``),
sharding by FSDP. Each module left is also a
:class:`~layernorm.patching.report.PatchWarning`.

With ``fuse_add=True`` PyTorch's ``TransformerEncoderLayer`` and
``TransformerDecoderLayer`` are swapped the same way for the classes of
:mod:`layernorm.blocks`, whose ``forward`` runs each residual add and the norm
after it as one fused call. That is where a model's structure allows the
fusion without rewriting its code: the add and the norm sit in one
``forward`` we can replace. (In a model library's own block, GPT-2's say, the
add is in that block's code; use :class:`layernorm.AddLayerNorm` there.)
"""

from __future__ import annotations

import warnings
from collections import Counter

import torch

from .. import blocks
from .adopted import AdoptedNorm
from .report import LeftModule, PatchReport, PatchWarning, class_names
from .recognize import TORCH_NORMS, examine, fsdp_roots, is_ours, looks_like_norm

__all__ = ["patch", "unpatch"]

_LAYERS = {
    torch.nn.TransformerEncoderLayer: blocks.TransformerEncoderLayer,
    torch.nn.TransformerDecoderLayer: blocks.TransformerDecoderLayer,
}
# Ours -> PyTorch's, for unpatch.
_THEIRS = {ours: theirs for theirs, ours in {**TORCH_NORMS, **_LAYERS}.items()}


def _check_model(model) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _inside(name: str, roots) -> bool:
    return any(root == "" or name == root or name.startswith(root + ".") for root in roots)


def patch(model: torch.nn.Module, *, fuse_add: bool = False, warn: bool = True) -> PatchReport:
    """Make every norm module in ``model`` that computes what ours do run ours, in place.

    Every norm-like module is checked on probe inputs before it is swapped
    (see :mod:`layernorm.patching.swap` and :mod:`layernorm.patching.recognize`); modules that
    already run ours are skipped. With ``fuse_add``, also every
    ``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer``: their
    residual adds run fused with the norm after them (:mod:`layernorm.blocks`).

    Args:
        model: any ``torch.nn.Module``; the model itself counts when it is a norm.
        fuse_add: also swap PyTorch's transformer layers.
        warn: issue a :class:`~layernorm.patching.report.PatchWarning` for each
            norm-like module left as it was (the report lists them either way).

    Returns:
        A :class:`~layernorm.patching.report.PatchReport`: an ``int``, the number of
        modules swapped, with ``replaced`` (a count per class), ``left`` (name,
        class, reason) and a readable ``str``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LayerNorm(8))
        >>> report = patch(model)
        >>> report == 1, report.replaced
        (True, {'LayerNorm': 1})
        >>> type(model[1]).__module__
        'layernorm.modules'
    """
    _check_model(model)
    if not isinstance(fuse_add, bool):
        raise TypeError(f"fuse_add must be a bool, got {type(fuse_add).__name__}")
    sharded = fsdp_roots(model)
    replaced: Counter = Counter()
    left = []
    for name, module in model.named_modules():
        cls = type(module)
        if fuse_add and cls in _LAYERS:
            module.__class__ = _LAYERS[cls]
            replaced[cls] += 1
            continue
        if is_ours(cls) or not looks_like_norm(module):
            continue
        verdict = examine(module, inside_fsdp=_inside(name, sharded))
        if verdict.replacement is None:
            left.append((name, cls, verdict.reason))
            continue
        module.__class__ = verdict.replacement
        replaced[cls] += 1
    names = class_names([*replaced, *(cls for _, cls, _ in left)])
    report = PatchReport({names[cls]: n for cls, n in replaced.items()},
                         [LeftModule(name, names[cls], reason) for name, cls, reason in left])
    if warn:
        for item in report.left:
            warnings.warn(f"layernorm.patch left {item.name or 'the model'} ({item.class_name}) "
                          f"as it was: {item.reason}", PatchWarning, stacklevel=2)
    return report


def unpatch(model: torch.nn.Module) -> int:
    """Undo :func:`patch` (with or without ``fuse_add``): every module gets its original class back.

    The objects, their parameters and attributes are the same throughout; an
    ``impl`` set on one of our modules goes with it. Returns the number of
    modules restored.
    """
    _check_model(model)
    restored = 0
    for module in model.modules():
        cls = type(module)
        original = cls.layernorm_original if issubclass(cls, AdoptedNorm) else _THEIRS.get(cls)
        if original is None:
            continue
        module.__class__ = original
        if not hasattr(original, "impl"):
            module.__dict__.pop("impl", None)  # ours; the original class has no use for it
        restored += 1
    return restored
