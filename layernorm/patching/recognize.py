"""Find the norm modules of a model and check what each computes before it is replaced.

Recognition goes by what a module has and does, not by its class name:

1. A *norm-like* module (:func:`looks_like_norm`) is a ``torch.nn.LayerNorm`` /
   ``torch.nn.RMSNorm`` (or a subclass), or a module with an epsilon attribute
   (``eps``, ``variance_epsilon``, ``epsilon``, ``layer_norm_eps``, ...), no
   submodules and no state but a ``weight`` and a ``bias``. PyTorch's norms
   over other dims (batch, instance and group norm) are not norm-like.
2. :func:`examine` runs the module's own ``forward`` on a probe: random
   input rows, some with a variance near epsilon so that a wrong epsilon
   shows, and random parameters in place of the module's (a weight of ones
   would hide a weight that is ignored). In float32 the output must be, to
   float32 rounding, a layer norm or an RMS norm over the trailing dims with
   the module's epsilon (computed by :mod:`layernorm.reference` in float64).
   A norm that multiplies by ``1 + weight`` (Gemma's RMS norms, Nemotron's
   ``LayerNorm1P``) is recognised too: ours runs it with
   ``weight_offset=1.0``, on the module's own weight.
3. The replacement then runs beside the original on more probes: float32,
   bfloat16, the two mixed cases (bfloat16 parameters on float32 input and the
   reverse; they tell the cast orders of :mod:`layernorm.patching.adopted` apart), and
   the module's own parameters in their own dtype. Both must give the same
   dtype and agree to the rounding of the lowest precision involved. A probe
   on which the original itself raises is skipped.

The probes run where the parameters are (on CPU for parameters on the meta
device, whose own values are then not probed), without gradients, hooks or
autocast.
"""

from __future__ import annotations

import inspect
import re
import sys
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .. import reference
from .adopted import CAST_ORDERS, AdoptedNorm, NormSpec, adopted_class
from ..modules import LayerNorm, RMSNorm

__all__ = ["Verdict", "looks_like_norm", "examine", "is_ours", "fsdp_roots"]

_OFFSET = 1.0  # the weight offset recognised: x_hat * (1 + weight)

# PyTorch's classes -> ours; they need no adopted class (ours subclass them).
TORCH_NORMS = {torch.nn.LayerNorm: LayerNorm, torch.nn.RMSNorm: RMSNorm}

# eps, epsilon, variance_epsilon, layer_norm_eps, rms_norm_eps, eps_value ...
_EPSILON_NAME = re.compile(r"(?:^|_)eps(?:ilon)?(?:$|_)")
# Normalise over the batch or channel dims: never a norm of the last dims.
_OTHER_DIM_NORMS = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LocalResponseNorm)
_AFFINE = ("weight", "bias")
_ROWS = 8  # probe rows: (2, 4, *normalized_shape)


@dataclass(frozen=True)
class Verdict:
    """What :func:`examine` decided: the class to give the module, or why not."""

    replacement: Optional[type]
    reason: str = ""


def is_ours(cls: type) -> bool:
    """Modules that already run our functions (and our own fused-add modules)."""
    return issubclass(cls, (LayerNorm, RMSNorm, AdoptedNorm))


def epsilon_attributes(module: torch.nn.Module) -> List[Tuple[str, Optional[float]]]:
    """``(name, value)`` of each float attribute named like an epsilon, ``eps`` first."""
    found = [
        (name, value) for name, value in vars(module).items()
        if _EPSILON_NAME.search(name) and isinstance(value, float)
    ]
    if isinstance(module, torch.nn.RMSNorm) and module.eps is None:
        found.append(("eps", None))  # PyTorch's default: the input dtype's epsilon
    return sorted(found, key=lambda item: item[0] != "eps")


def looks_like_norm(module: torch.nn.Module) -> bool:
    """Whether ``module`` is one patch should replace or explain why not (see the module docs)."""
    if isinstance(module, _OTHER_DIM_NORMS):
        return False
    if isinstance(module, tuple(TORCH_NORMS)):
        return True
    if not epsilon_attributes(module):
        return False
    if torch.nn.utils.parametrize.is_parametrized(module):
        return True
    own_state = [n for n, t in (*module._parameters.items(), *module._buffers.items()) if t is not None]
    return not module._modules and set(own_state) <= set(_AFFINE)


def fsdp_roots(model: torch.nn.Module) -> List[str]:
    """Names of the modules wrapped by FSDP (``fully_shard`` or ``FullyShardedDataParallel``)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")  # never imported: nothing can be wrapped
    if fsdp is None:
        return []
    classes = tuple(c for c in (getattr(fsdp, "FSDPModule", None), getattr(fsdp, "FullyShardedDataParallel", None))
                    if isinstance(c, type))
    return [name for name, m in model.named_modules() if classes and isinstance(m, classes)]


def _is_dtensor(t: Tensor) -> bool:
    tensor_module = sys.modules.get("torch.distributed.tensor")
    dtensor = getattr(tensor_module, "DTensor", None)
    return isinstance(dtensor, type) and isinstance(t, dtensor)


def _takes_one_input(cls: type) -> str:
    """``""`` when ``cls.forward`` takes exactly one input, else what else it takes."""
    try:
        params = list(inspect.signature(cls.forward).parameters.values())[1:]  # drop self
    except (TypeError, ValueError):
        return "a signature that cannot be read"
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(params) == 1 and params[0].kind in positional:
        return ""
    return ", ".join(p.name for p in params[1:]) or "no input"


def _blocking_reason(module: torch.nn.Module, inside_fsdp: bool) -> str:
    """Why ``module`` cannot be swapped whatever it computes, or ``""``."""
    if torch.nn.utils.parametrize.is_parametrized(module):
        return "parametrized (torch.nn.utils.parametrize): its weight is computed, not a plain parameter"
    if inside_fsdp:
        return "wrapped by FSDP: its parameters are sharded"
    if any(_is_dtensor(p) for p in module.parameters(recurse=False)):
        return "its parameters are distributed tensors (DTensor)"
    if "forward" in vars(module):
        return "unknown forward: forward was replaced on the module itself (by a hook or a wrapper)"
    extra = _takes_one_input(type(module))
    if extra:
        return f"unknown forward: it takes more than the input ({extra})"
    if not epsilon_attributes(module):
        return "unknown forward: no epsilon attribute (eps, variance_epsilon, epsilon, ...)"
    weight, bias = module._parameters.get("weight"), module._parameters.get("bias")
    if weight is None and isinstance(getattr(module, "weight", None), Tensor):
        return "unknown forward: its weight is not a parameter"
    if weight is not None and bias is not None and bias.shape != weight.shape:
        return "unknown forward: its bias and weight have different shapes"
    return ""


# ---------------------------------------------------------------------------
# Probes


@dataclass
class _Probe:
    x: Tensor
    params: Dict[str, Tensor]
    precision: torch.dtype  # the lowest precision involved: sets the tolerance
    label: str
    expected: Optional[Tensor] = None  # the original's output (None: it raised)


def _probe_device(module: torch.nn.Module) -> torch.device:
    for p in module.parameters(recurse=False):
        return torch.device("cpu") if p.is_meta else p.device
    return torch.device("cpu")


def _normalized_shape(module: torch.nn.Module) -> Tuple[Tuple[int, ...], Optional[str]]:
    """(the shape to probe with, the attribute it comes from or None)."""
    shape = getattr(module, "normalized_shape", None)
    if isinstance(shape, (tuple, list, torch.Size)) and all(isinstance(n, int) for n in shape) and shape:
        return tuple(shape), "normalized_shape"
    weight = module._parameters.get("weight")
    if weight is not None:
        return tuple(weight.shape), None
    return (24,), None


def _probe_input(shape, dtype, device, generator, eps: Optional[float]) -> Tensor:
    """Rows of different scales and means; with ``eps``, two rows whose variance is near it."""
    scales = [1.0, 3.0, 0.3, 10.0, 1.0, 0.5, 2.0, 0.1]
    means = [0.5, -1.0, 0.0, 2.0, 0.0, 0.25, -0.5, 1.0]
    if eps is not None and eps > 0:
        # Here epsilon is half the denominator: the wrong epsilon, or none, shows.
        scales[6:] = [eps ** 0.5, 2 * eps ** 0.5]
    # Drawn on the CPU, from the CPU generator, whatever the default device.
    rows = torch.randn((_ROWS,) + tuple(shape), generator=generator, dtype=torch.float64, device="cpu")
    view = (_ROWS,) + (1,) * len(shape)
    scale = torch.tensor(scales, dtype=torch.float64, device="cpu").view(view)
    mean = torch.tensor(means, dtype=torch.float64, device="cpu").view(view)
    rows = (rows + mean) * scale
    return rows.reshape((2, 4) + tuple(shape)).to(device=device, dtype=dtype)


def _random_params(module, dtype, device, generator) -> Dict[str, Tensor]:
    params = {}
    for name in _AFFINE:
        p = module._parameters.get(name)
        if p is not None:
            values = torch.randn(tuple(p.shape), generator=generator, dtype=torch.float64, device="cpu") * 0.5
            params[name] = (values + 1.0 if name == "weight" else values).to(device=device, dtype=dtype)
    return params


def _run(cls: type, module: torch.nn.Module, params: Dict[str, Tensor], x: Tensor) -> Tensor:
    """``cls.forward`` on a shallow copy of ``module`` that holds ``params``: no hooks, no side effects."""
    probe = object.__new__(cls)
    probe.__dict__.update(vars(module))
    probe.__dict__["_parameters"] = {
        name: torch.nn.Parameter(params[name], requires_grad=False) if name in params else None
        for name in module._parameters
    }
    return cls.forward(probe, x)


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _agree(actual: Tensor, expected: Tensor, precision: torch.dtype) -> Tuple[bool, str]:
    """Equal to the rounding of ``precision`` (two units of it in half precision)."""
    if not isinstance(actual, Tensor):
        return False, f"ours returns a {type(actual).__name__}"
    if actual.shape != expected.shape:
        return False, f"ours returns shape {list(actual.shape)} where the original returns {list(expected.shape)}"
    if actual.dtype != expected.dtype:
        return False, f"ours returns {_name(actual.dtype)} where the original returns {_name(expected.dtype)}"
    a, e = actual.double(), expected.double()
    if not torch.isfinite(a).all():
        return False, "ours is not finite"
    finfo = torch.finfo(precision)
    rtol = (2 if finfo.bits <= 16 else 128) * finfo.eps
    # Relative to each value and to the typical size (sums like n * w + b can cancel).
    allowed = rtol * (e.abs() + e.abs().mean())
    excess = ((a - e).abs() / allowed).max().item()
    if excess <= 1:
        return True, ""
    return False, f"the two differ by {excess:.3g} times the rounding allowed"


def _expected(kind: str, offset: float, x: Tensor, shape, params: Dict[str, Tensor], eps) -> Tensor:
    """The hypothesis, in float64 by the reference: the gain is ``offset + weight``."""
    x64 = x.double()
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    weight, bias = (params[n].double() if n in params else None for n in _AFFINE)
    if weight is not None and offset:
        weight = weight + offset
    if kind == "layer":
        return reference.layer_norm(x64, shape, weight, bias, eps)
    y = reference.rms_norm(x64, shape, weight, eps)
    return y if bias is None else y + bias


def _identify(module, device, generator) -> Tuple[Optional[Tuple[str, str, float]], str]:
    """``((kind, eps attribute, weight offset), "")`` from a float32 probe, or ``(None, reason)``."""
    shape, _ = _normalized_shape(module)
    has_bias = module._parameters.get("bias") is not None
    params = _random_params(module, torch.float32, device, generator)
    for eps_name, eps in epsilon_attributes(module):
        x = _probe_input(shape, torch.float32, device, generator, torch.finfo(torch.float32).eps if eps is None else eps)
        try:
            y = _run(type(module), module, params, x)
        except Exception as error:  # noqa: BLE001 - any failure means we cannot tell what it computes
            return None, f"unknown forward: it raised {type(error).__name__} on a float32 probe"
        if not isinstance(y, Tensor) or y.shape != x.shape or y.dtype != torch.float32:
            return None, "unknown forward: its output is not a float32 tensor of the input's shape"
        for kind in ("rms", "layer"):
            for offset in (0.0, _OFFSET):
                if offset and "weight" not in params:
                    continue
                expected = _expected(kind, offset, x, shape, params, eps).float()
                if _agree(y, expected, torch.float32)[0]:
                    if kind == "rms" and has_bias:
                        return None, "unknown forward: an RMS norm with a bias (not supported)"
                    return (kind, eps_name, offset), ""
    eps_names = " or ".join(f"{name}={value}" for name, value in epsilon_attributes(module))
    return None, ("unknown forward: it does not compute a layer norm or an RMS norm over the last "
                  f"{len(shape)} dim(s) {list(shape)} with {eps_names}")


def _probes(module, spec_eps: Optional[float], device, generator) -> List[_Probe]:
    shape, _ = _normalized_shape(module)
    f32, bf16 = torch.float32, torch.bfloat16
    tiny = torch.finfo(f32).eps if spec_eps is None else spec_eps
    probes = []
    for param_dtype, x_dtype in ((f32, f32), (bf16, bf16), (bf16, f32), (f32, bf16)):
        probes.append(_Probe(
            _probe_input(shape, x_dtype, device, generator, tiny if x_dtype == f32 else None),
            _random_params(module, param_dtype, device, generator),
            bf16 if bf16 in (param_dtype, x_dtype) else f32,
            f"{_name(x_dtype)} input with {_name(param_dtype)} parameters",
        ))
    own = {n: p for n, p in module._parameters.items() if p is not None}
    own_dtype = next(iter(own.values())).dtype if own else f32
    if own and not any(p.is_meta for p in own.values()) and own_dtype.is_floating_point:
        probes.append(_Probe(_probe_input(shape, own_dtype, device, generator, None), own,
                             own_dtype, f"{_name(own_dtype)} input with its own parameters"))
    return probes


def _verify(replacement: type, module, probes: Sequence[_Probe]) -> Tuple[int, str]:
    """``(probes passed, "")``, or with the first failure's description."""
    passed = 0
    for probe in probes:
        if probe.expected is None:
            continue
        try:
            actual = _run(replacement, module, probe.params, probe.x)
        except Exception as error:  # noqa: BLE001
            return passed, f"ours raised {type(error).__name__} on {probe.label}"
        ok, why = _agree(actual, probe.expected, probe.precision)
        if not ok:
            return passed, f"{why}, on {probe.label}"
        passed += 1
    return passed, ""


def _replacements(module, kind: str, eps_name: str, offset: float) -> List[type]:
    if type(module) in TORCH_NORMS and not offset:
        return [TORCH_NORMS[type(module)]]
    _, shape_attribute = _normalized_shape(module)
    has = {n: module._parameters.get(n) is not None for n in _AFFINE}
    return [adopted_class(type(module), NormSpec(kind, eps_name, has["weight"], has["bias"], shape_attribute, order,
                                                 offset))
            for order in CAST_ORDERS]


def _quietly(device: torch.device) -> ExitStack:
    """No gradients, no autocast, no warnings of PyTorch's about probe dtypes, factories on ``device``."""
    stack = ExitStack()
    stack.enter_context(torch.no_grad())
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    try:
        stack.enter_context(torch.autocast(device.type, enabled=False))
    except RuntimeError:
        pass  # a device type autocast does not know: it cannot be on either
    stack.enter_context(device)  # model libraries may build models under torch.device("meta")
    return stack


def examine(module: torch.nn.Module, *, inside_fsdp: bool = False) -> Verdict:
    """Decide whether ``module`` (norm-like) can run ours: the class to give it, or why not."""
    reason = _blocking_reason(module, inside_fsdp)
    if reason:
        return Verdict(None, reason)
    device = _probe_device(module)
    generator = torch.Generator().manual_seed(0)
    default_dtype = torch.get_default_dtype()
    try:
        with _quietly(device):
            torch.set_default_dtype(torch.float32)
            found, reason = _identify(module, device, generator)
            if found is None:
                return Verdict(None, reason)
            kind, eps_name, offset = found
            probes = _probes(module, getattr(module, eps_name), device, generator)
            for probe in probes:
                try:
                    probe.expected = _run(type(module), module, probe.params, probe.x)
                except Exception:  # noqa: BLE001 - a case the original does not take: nothing to match
                    probe.expected = None
            best = (-1, "")
            for replacement in _replacements(module, kind, eps_name, offset):
                passed, failure = _verify(replacement, module, probes)
                if not failure:
                    return Verdict(replacement)
                best = max(best, (passed, failure), key=lambda item: item[0])
            return Verdict(None, f"failed verification: {best[1]}")
    finally:
        torch.set_default_dtype(default_dtype)
