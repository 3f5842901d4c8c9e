"""Norm modules of other libraries, adopted: the same object, our forward.

HuggingFace's ``LlamaRMSNorm`` or ``T5LayerNorm``, a model's own subclass of
``torch.nn.LayerNorm``: once :mod:`layernorm.patching.recognize` has found out what such
a module computes and checked it on probe inputs, :func:`adopted_class` gives a
subclass of the module's own class whose ``forward`` calls
:func:`layernorm.rms_norm` or :func:`layernorm.layer_norm`. Patching assigns
that class to the module, so the object stays, with its parameters (the same
``Parameter`` objects under the same names: optimizers and state dicts keep
working), its other attributes (``variance_epsilon``, ``hidden_size``), its
hooks, device and dtype. ``isinstance(module, LlamaRMSNorm)`` stays true (model
libraries initialise weights by such checks) and the class keeps its name;
``type(module).__module__`` is ``layernorm.patching.adopted``. Undoing it assigns the
original class back.

Model libraries differ in where the result is rounded to a lower precision
(``cast_order``; it only matters when the input or the parameters are
float16 / bfloat16). Every one normalises in float32; then:

- ``"cast_then_weight"`` (Llama, Mistral, Qwen, Phi-3): the normalised input is
  cast to the input's dtype, then multiplied by the weight;
  ``weight * y.to(x.dtype)``, whose dtype is the promoted one.
- ``"weight_then_cast"`` (Gemma, Cohere, OLMo-2, and PyTorch's own
  ``F.layer_norm`` / ``F.rms_norm``): multiplied by the weight in float32,
  then cast to the input's dtype.
- ``"cast_to_weight_dtype"`` (T5): cast to the weight's dtype when that is
  float16 or bfloat16, then multiplied by the weight.

When the input and the parameters share one dtype, every order is one fused
call of ours: an RMS norm that rounds before the weight runs with
``round_before_weight=True``, which rounds where the original does, a layer
norm rounds once (where ``cast_then_weight`` would round twice, the results
agree to that rounding). Mixed dtypes (float32 weights on bfloat16 input)
follow the original's order step by step, so the output has the original's
dtype.

Gemma's RMS norms (Gemma, Gemma 2, Gemma 3 and others like them) and
Nemotron's layer norm (``LayerNorm1P``) store a weight centred on zero and
multiply by ``1 + weight`` (``weight_offset=1.0`` in the spec). The stored parameter stays the
module's ``weight``, untouched; the offset goes to :func:`layernorm.rms_norm`
or :func:`layernorm.layer_norm` as its ``weight_offset``, which adds it in
float32 inside the op, as Gemma does (``output * (1.0 + self.weight.float())``).
The gradient of the weight is the same with or without the offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from ..functional import layer_norm, rms_norm

__all__ = ["NormSpec", "AdoptedNorm", "adopted_class", "CAST_ORDERS"]

CAST_THEN_WEIGHT = "cast_then_weight"
WEIGHT_THEN_CAST = "weight_then_cast"
CAST_TO_WEIGHT_DTYPE = "cast_to_weight_dtype"
# In the order recognition tries them: our functions' own behaviour first.
CAST_ORDERS = (WEIGHT_THEN_CAST, CAST_THEN_WEIGHT, CAST_TO_WEIGHT_DTYPE)

_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class NormSpec:
    """What a norm module computes, as far as our functions need to know it.

    Attributes:
        kind: ``"layer"`` (subtract the mean) or ``"rms"`` (no mean).
        eps_attribute: the module attribute holding epsilon (``eps``,
            ``variance_epsilon``, ``epsilon``, ...), read on every call.
        weight: the module has a ``weight`` parameter.
        bias: the module has a ``bias`` parameter.
        shape_attribute: the attribute holding the normalised shape
            (``normalized_shape``), or ``None``: the weight's shape, or the
            input's last dim when there is no weight.
        cast_order: one of :data:`CAST_ORDERS` (see the module docs).
        weight_offset: added to the weight inside the op (``1.0`` for
            Gemma's and Nemotron's ``1 + weight``; ``0.0``: the weight as it
            is). Norms with a weight only.
    """

    kind: str
    eps_attribute: str
    weight: bool
    bias: bool
    shape_attribute: Optional[str]
    cast_order: str
    weight_offset: float = 0.0

    def __post_init__(self):
        if self.weight_offset and not self.weight:
            raise ValueError("weight_offset is for norms with a weight only")

    def describe(self) -> str:
        """A few words for ``repr``: the function that runs, the weight offset if any, and the cast order."""
        offset = f", weight_offset={self.weight_offset}" if self.weight_offset else ""
        return f"{self.kind}_norm{offset}, {self.cast_order}"


def _cast_dtype(cast_order: str, x_dtype: torch.dtype, param_dtype: torch.dtype) -> torch.dtype:
    """The dtype the normalised input is cast to before the weight multiplies it."""
    if cast_order == CAST_THEN_WEIGHT:
        return x_dtype
    if param_dtype in _HALF:  # CAST_TO_WEIGHT_DTYPE
        return param_dtype
    return torch.promote_types(x_dtype, torch.float32)


def _normalize(kind: str, x: Tensor, shape, weight, bias, eps, impl, weight_offset: float = 0.0,
               round_before_weight: bool = False) -> Tensor:
    if kind == "rms":
        if weight is None:
            return rms_norm(x, shape, None, eps, impl=impl)
        return rms_norm(x, shape, weight, eps, impl=impl, weight_offset=weight_offset,
                        round_before_weight=round_before_weight)
    return layer_norm(x, shape, weight, bias, eps, impl=impl, weight_offset=weight_offset if weight is not None else 0.0)


def normalize_in_order(
    x: Tensor, spec: NormSpec, shape: Tuple[int, ...], weight: Optional[Tensor],
    bias: Optional[Tensor], eps: Optional[float], impl: Optional[str] = None,
) -> Tensor:
    """Our norm of ``x``, rounded where ``spec.cast_order`` says (see the module docs)."""
    params = [p for p in (weight, bias) if p is not None]
    offset = spec.weight_offset
    if not params or spec.cast_order == WEIGHT_THEN_CAST:
        # Our functions' own contract: float32 math, the input's dtype out.
        return _normalize(spec.kind, x, shape, weight, bias, eps, impl, offset)
    cast_to = _cast_dtype(spec.cast_order, x.dtype, params[0].dtype)
    if x.dtype == cast_to and all(p.dtype == cast_to for p in params):  # one fused call
        return _normalize(spec.kind, x, shape, weight, bias, eps, impl, offset, round_before_weight=True)
    # Mixed dtypes: step by step, as the original, so the output dtype is the original's.
    wide = torch.promote_types(x.dtype, cast_to)
    y = _normalize(spec.kind, x.to(wide), shape, None, None, eps, impl).to(cast_to)
    if weight is not None:
        y = (weight + offset if offset else weight) * y
    if bias is not None:
        y = y + bias
    return y


class AdoptedNorm(torch.nn.Module):
    """Base of the adopted classes: ``forward`` runs ours, all else is the original class's.

    Set ``impl`` on a module (``"torch"``, ``"reference"``, ``"triton"``) to
    force an implementation for it, as on :class:`layernorm.LayerNorm`.
    """

    impl: Optional[str] = None
    layernorm_spec: NormSpec  # set on each adopted class
    layernorm_original: type  # the class it adopts

    def forward(self, *args, **kwargs) -> Tensor:
        # The original's forward takes one input, under whatever name it gave it.
        (x,) = (*args, *kwargs.values())
        spec = self.layernorm_spec
        weight = self.weight if spec.weight else None
        bias = self.bias if spec.bias else None
        if spec.shape_attribute is not None:
            shape = tuple(getattr(self, spec.shape_attribute))
        elif weight is not None:
            shape = tuple(weight.shape)
        else:
            shape = (x.shape[-1],)
        eps = getattr(self, spec.eps_attribute)
        return normalize_in_order(x, spec, shape, weight, bias, eps, self.impl)

    def extra_repr(self) -> str:
        theirs = super().extra_repr()
        ours = f"layernorm: {self.layernorm_spec.describe()}"
        if theirs:
            return f"{theirs}, {ours}"
        # The original shows nothing: show what ours reads.
        spec = self.layernorm_spec
        if spec.shape_attribute is not None:
            shape = str(tuple(getattr(self, spec.shape_attribute)))
        elif spec.weight:
            shape = str(tuple(self.weight.shape))
        else:
            shape = "last dim"
        return f"{shape}, eps={getattr(self, spec.eps_attribute)}, {ours}"

    def __reduce_ex__(self, protocol):
        # The class is made at run time, so pickle (torch.save of a whole
        # model, copy.deepcopy) rebuilds it from the original class and spec.
        return (_new_adopted, (self.layernorm_original, self.layernorm_spec), self.__dict__)


_CLASSES: Dict[Tuple[type, NormSpec], type] = {}


def adopted_class(original: type, spec: NormSpec) -> type:
    """The subclass of ``original`` whose ``forward`` is ours for ``spec`` (one per pair)."""
    key = (original, spec)
    if key not in _CLASSES:
        namespace = {
            "__module__": __name__,
            "__qualname__": original.__qualname__,
            "__doc__": f"{original.__name__} with layernorm's {spec.describe()} as its forward.",
            "layernorm_spec": spec,
            "layernorm_original": original,
        }
        _CLASSES[key] = type(original)(original.__name__, (AdoptedNorm, original), namespace)
    return _CLASSES[key]


def _new_adopted(original: type, spec: NormSpec) -> AdoptedNorm:
    cls = adopted_class(original, spec)
    return cls.__new__(cls)
