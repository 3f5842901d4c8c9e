"""Make the models that HuggingFace transformers creates from now on run our norms.

:func:`patch_transformers` hooks ``PreTrainedModel.post_init``, which every
transformers model calls at the end of its construction, whether it is built
from its class (``LlamaForCausalLM(config)``), from a config
(``AutoModelForCausalLM.from_config``) or by ``from_pretrained`` (there the
parameters are still on the meta device and the checkpoint is loaded into them
afterwards; the probes run on the CPU). Each new model of the chosen type, or
of every type, goes through :func:`layernorm.patch`, so every norm of it that
passes verification runs ours, whatever its class (``nn.LayerNorm`` in GPT-2,
``LlamaRMSNorm``, ``T5LayerNorm``, ...); one
:class:`~layernorm.patching.report.PatchWarning` per module left, once.

Hooking construction, rather than replacing the norm classes in the modeling
modules, reaches norms that a model takes from ``torch.nn`` or from another
model's module, and checks every module as :func:`layernorm.patch` does.

:func:`unpatch_transformers` (or leaving the ``with`` block of the returned
handle) stops it; models created meanwhile keep our norms until
:func:`layernorm.unpatch` is called on them.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections import Counter
from typing import Optional

from .swap import patch
from .report import PatchWarning

__all__ = ["patch_transformers", "unpatch_transformers", "TransformersPatch"]

# Model types patched (None: every type), counted so that nested patches undo in turn.
_ACTIVE: Counter = Counter()
_ORIGINAL_POST_INIT = None
# Bumped by unpatch_transformers, so that older handles cannot undo newer patches.
_GENERATION = 0
# Modules already warned about: an inner model's post_init (T5's stacks, a
# language model inside a vision-language model) runs before the outer one's.
_WARNED: "weakref.WeakSet" = weakref.WeakSet()


class TransformersPatch:
    """The handle :func:`patch_transformers` returns: ``undo()``, or use it as a context manager."""

    def __init__(self, model_type: Optional[str]) -> None:
        self.model_type = model_type
        self._generation = _GENERATION
        self._done = False

    def undo(self) -> None:
        """Stop patching the models created from now on (once; later calls do nothing)."""
        if not self._done:
            self._done = True
            if self._generation == _GENERATION:  # else unpatch_transformers undid it already
                _release(self.model_type)

    def __enter__(self) -> "TransformersPatch":
        return self

    def __exit__(self, *exc_info) -> None:
        self.undo()

    def __repr__(self) -> str:
        state = "undone" if self._done else "active"
        return f"TransformersPatch(model_type={self.model_type!r}, {state})"


def _pretrained_model_class():
    try:
        from transformers import PreTrainedModel
    except ImportError as error:
        raise ImportError("patch_transformers needs the transformers package: pip install transformers") from error
    return PreTrainedModel


def _known_model_types():
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    return CONFIG_MAPPING_NAMES


def _wanted(model) -> bool:
    if _ACTIVE[None]:
        return True
    return getattr(getattr(model, "config", None), "model_type", None) in _ACTIVE


def _post_init_then_patch(original):
    @functools.wraps(original)
    def post_init(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if not _wanted(self):
            return result
        try:
            report = patch(self, warn=False)
        except Exception as error:  # noqa: BLE001 - never stop a model from being built
            warnings.warn(f"layernorm.patch_transformers could not patch {type(self).__name__}, "
                          f"which keeps its own norms: {type(error).__name__}: {error}", PatchWarning, stacklevel=2)
            return result
        for item in report.left:
            module = self.get_submodule(item.name)
            if module not in _WARNED:
                _WARNED.add(module)
                warnings.warn(f"layernorm.patch_transformers left {item.name or 'the model'} "
                              f"({item.class_name}) of {type(self).__name__} as it was: {item.reason}",
                              PatchWarning, stacklevel=2)
        return result

    return post_init


def patch_transformers(model_type: Optional[str] = None) -> TransformersPatch:
    """Make the transformers models created from now on run our norms (see the module docs).

    Args:
        model_type: a transformers model type (``"llama"``, ``"gpt2"``, ``"t5"``:
            ``config.model_type``), or ``None`` for every model.

    Returns:
        A :class:`TransformersPatch`: call ``undo()``, or use it in a ``with``
        block, to stop. :func:`unpatch_transformers` stops every patch at once.

    Example::

        with layernorm.patch_transformers("llama"):
            model = AutoModelForCausalLM.from_pretrained(path)   # its norms run ours
    """
    model_class = _pretrained_model_class()
    if model_type is not None:
        if not isinstance(model_type, str):
            raise TypeError(f"model_type must be a str or None, got {type(model_type).__name__}")
        if model_type not in _known_model_types():
            raise ValueError(f"transformers has no model type {model_type!r} (config.model_type, e.g. 'llama')")
    global _ORIGINAL_POST_INIT
    if _ORIGINAL_POST_INIT is None:
        _ORIGINAL_POST_INIT = model_class.__dict__["post_init"]
        model_class.post_init = _post_init_then_patch(_ORIGINAL_POST_INIT)
    _ACTIVE[model_type] += 1
    return TransformersPatch(model_type)


def _release(model_type: Optional[str]) -> None:
    _ACTIVE[model_type] -= 1
    if _ACTIVE[model_type] <= 0:
        del _ACTIVE[model_type]
    if not _ACTIVE:
        _restore()


def _restore() -> None:
    global _ORIGINAL_POST_INIT
    if _ORIGINAL_POST_INIT is not None:
        _pretrained_model_class().post_init = _ORIGINAL_POST_INIT
        _ORIGINAL_POST_INIT = None
# Bumped by unpatch_transformers, so that older handles cannot undo newer patches.
_GENERATION = 0


def unpatch_transformers() -> None:
    """Stop every :func:`patch_transformers`: models created from now on are transformers' own.

    Models created while it was active keep our norms; :func:`layernorm.unpatch` restores them.
    """
    global _GENERATION
    _GENERATION += 1
    _ACTIVE.clear()
    _restore()
