"""``F.layer_norm`` / ``F.rms_norm``-compatible functions, and the one place that
picks which implementation runs.

Implementations (``impl=``):

- ``"torch"``: PyTorch's native op (``torch.nn.functional``).
- ``"reference"``: :mod:`layernorm.reference`, the annotated math.
- ``"triton"``: the fused kernels of :mod:`layernorm.kernels.ops` (CUDA tensors of
  float16 / bfloat16 / float32; CPU tensors too when ``TRITON_INTERPRET=1``,
  which runs the same kernels in Triton's interpreter).

``impl=None`` (the default) takes the process-wide choice of the environment
variable ``LAYERNORM_IMPL`` (read once, when :mod:`layernorm` is imported);
when that is unset, empty or ``"auto"``, the Triton kernels run where they
support the input and PyTorch's op everywhere else. A process-wide ``triton``
also falls back to PyTorch's op for inputs the kernels do not take (float64,
CPU without the interpreter); asking for ``impl="triton"`` on one call for
such an input is an error.

``impl=`` and ``LAYERNORM_IMPL`` take the same names, ``"auto"``,
``"torch"``, ``"reference"`` and ``"triton"``, in any case (``impl="auto"``
is ``impl=None``); any other value is an error that names the argument or
the variable, the names it takes, and the value it got.

Autocast: we do what PyTorch does, so outputs match. Under CUDA autocast the
normalization runs in float32 and returns float32 (PyTorch puts layer_norm on
its float32 list: normalization statistics are precision-sensitive, and in a
transformer the residual stream it reads is float32 anyway). CPU autocast
leaves normalization alone, so there the output has the input's dtype. Outside
autocast the output has the input's dtype, whatever the dtype of ``weight``
and ``bias`` (float32 parameters on half-precision input are allowed).
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import reference
from .validation import (
    LayerNormTypeError,
    LayerNormValueError,
    check_eps,
    check_flag,
    check_impl,
    check_input,
    check_parameter,
    check_weight_offset,
    normalized_shape_tuple,
)

__all__ = [
    "layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm",
    "resolve_impl", "available_impls", "default_rms_norm_eps",
]


def _process_default() -> Optional[str]:
    value = os.environ.get("LAYERNORM_IMPL", "")
    if not value.strip():  # set but empty reads as unset, as shells often leave it
        return None
    return check_impl(value, source="the environment variable LAYERNORM_IMPL")


# Read once at import so that compiled graphs do not depend on os.environ.
PROCESS_DEFAULT_IMPL: Optional[str] = _process_default()


_ops = None  # layernorm.kernels.ops, imported at the first call that needs it


def _kernels_ops():
    global _ops
    if _ops is None:
        from .kernels import ops

        _ops = ops
    return _ops


def _triton_supports(x: Tensor) -> bool:
    return _kernels_ops().triton_supported(x)


def resolve_impl(x: Tensor, impl: Optional[str]) -> str:
    """The implementation one call will run: ``impl`` if given, else the process default.

    While ``torch.jit.trace`` records, every call runs PyTorch's op: the trace is
    a graph of PyTorch ops that must replay without Python, which neither the
    kernels' launches nor the reference's autograd function can be.
    """
    if torch.jit.is_tracing():
        return "torch"
    if impl is not None:
        if impl == "triton" and not _triton_supports(x):
            raise LayerNormValueError(
                "impl='triton' needs triton and a CUDA tensor of float16, bfloat16 or float32 "
                "(or a CPU tensor with TRITON_INTERPRET=1), got a "
                f"{x.dtype} tensor on {x.device}"
            )
        return impl
    chosen = PROCESS_DEFAULT_IMPL
    if chosen == "reference":
        return chosen
    if chosen == "torch":
        return chosen
    # auto, or a process-wide "triton": the kernels where they take the input.
    if (x.is_cuda or chosen == "triton") and _triton_supports(x):
        return "triton"
    return "torch"


def available_impls(device: torch.device | str) -> Tuple[str, ...]:
    """Implementations that can run on ``device`` (for ``layernorm check``)."""
    probe = torch.empty(1, device=device)
    return ("torch", "reference") + (("triton",) if _triton_supports(probe) else ())


def _autocast_float32(x: Tensor, *params: Optional[Tensor]):
    """Mirror PyTorch's CUDA autocast policy for normalization: run in float32."""
    if not (x.is_cuda and torch.is_autocast_enabled("cuda")):
        return (x, *params)
    return tuple(t.float() if t is not None and t.dtype != torch.float64 else t for t in (x, *params))


def _torch_layer_norm(
    x: Tensor, shape: Tuple[int, ...], weight: Optional[Tensor], bias: Optional[Tensor], eps: float
) -> Tensor:
    """``F.layer_norm``, also for parameters in another dtype than ``x`` (float32 on half input).

    PyTorch's CUDA kernel refuses that mix (torch 2.11: "expected scalar type
    BFloat16 but found Float"), its CPU kernel takes it. Either way we run the
    op in the promoted dtype (at least float32, as the fused kernels compute)
    and return ``x``'s dtype, so the result does not depend on the device.
    """
    params = [p for p in (weight, bias) if p is not None]
    if all(p.dtype == x.dtype for p in params):
        return F.layer_norm(x, shape, weight, bias, eps)
    dtype = torch.promote_types(x.dtype, torch.float32)
    for p in params:
        dtype = torch.promote_types(dtype, p.dtype)
    weight, bias = (None if p is None else p.to(dtype) for p in (weight, bias))
    return F.layer_norm(x.to(dtype), shape, weight, bias, eps).to(x.dtype)


def layer_norm(
    input: Tensor,
    normalized_shape,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    eps: float = 1e-5,
    *,
    impl: Optional[str] = None,
    weight_offset: float = 0.0,
) -> Tensor:
    r"""Layer normalization over the trailing ``normalized_shape`` of ``input``.

    Same signature and result as :func:`torch.nn.functional.layer_norm`, plus
    the keyword ``impl`` to force an implementation. The math is in
    :mod:`layernorm.reference`:
    :math:`y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta`.

    Args:
        input: tensor of shape ``(*, *normalized_shape)``, floating point.
        normalized_shape: int, list, tuple or ``torch.Size`` of the trailing dims.
        weight: :math:`\gamma` of shape ``normalized_shape``, or ``None``.
        bias: :math:`\beta` of shape ``normalized_shape``, or ``None``.
        eps: added to the variance under the square root; ``>= 0``.
        impl: ``"torch"``, ``"reference"``, ``"triton"``, or ``None`` / ``"auto"`` (automatic);
            in any case, as for ``LAYERNORM_IMPL``.
        weight_offset: keyword only, not in PyTorch's signature: the gain is
            ``weight_offset + weight``, added in float32 (or float64) inside
            the op, for norms that store their weight around zero (Nemotron's
            ``LayerNorm1P`` scales by ``1 + weight``). As for :func:`rms_norm`.

    Example:
        >>> x = torch.randn(4, 10)
        >>> torch.allclose(layer_norm(x, (10,)), torch.nn.functional.layer_norm(x, (10,)), atol=1e-6)
        True
    """
    shape = normalized_shape_tuple(normalized_shape)
    check_input(input, shape)
    check_parameter("weight", weight, shape, input)
    check_parameter("bias", bias, shape, input)
    eps = check_eps(eps)
    impl = check_impl(impl)
    weight_offset = check_weight_offset(weight_offset)
    input, weight, bias = _autocast_float32(input, weight, bias)
    chosen = resolve_impl(input, impl)
    if chosen == "triton":
        return _kernels_ops().triton_layer_norm(input, shape, weight, bias, eps, weight_offset)
    return _layer_norm_on(chosen, input, shape, weight, bias, eps, weight_offset)


def _layer_norm_on(chosen: str, x: Tensor, shape, weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
                   weight_offset: float) -> Tensor:
    """LayerNorm on the reference or on PyTorch's op; an offset gain formed as the reference forms
    it (in float32 or wider) and passed as the weight, so the gradient reaches ``weight`` unchanged."""
    if weight_offset and weight is not None:
        weight = reference._gain(weight, weight_offset)
    if chosen == "reference":
        return reference.layer_norm(x, shape, weight, bias, eps)
    return _torch_layer_norm(x, shape, weight, bias, eps)


def default_rms_norm_eps(dtype: torch.dtype) -> float:
    """PyTorch's ``eps=None`` for ``rms_norm``: the epsilon of the dtype it computes in.

    Half-precision input is normalized in float32, so its eps is float32's
    (1.2e-7), not the input dtype's: bfloat16's 2**-7 would dominate the mean
    square of small activations (at ``|x| ~ 0.05`` the output would come out
    at half its size).
    """
    return torch.finfo(torch.promote_types(dtype, torch.float32)).eps


def rms_norm(
    input: Tensor,
    normalized_shape,
    weight: Optional[Tensor] = None,
    eps: Optional[float] = None,
    *,
    impl: Optional[str] = None,
    weight_offset: float = 0.0,
    round_before_weight: bool = False,
) -> Tensor:
    r"""RMS normalization over the trailing ``normalized_shape`` of ``input``.

    Same signature and result as :func:`torch.nn.functional.rms_norm`:
    :math:`y = \frac{x}{\sqrt{\mathrm{E}[x^2] + \epsilon}} \cdot \gamma`.
    ``eps=None`` means PyTorch's default, the machine epsilon of the dtype the
    statistics are computed in: float32's for float16, bfloat16 and float32
    input, float64's for float64. ``impl`` is as for :func:`layer_norm`.

    ``weight_offset`` (keyword only, not in PyTorch's signature): the gain is
    :math:`\text{weight\_offset} + \gamma`, added in float32 (or float64)
    inside the op, as Gemma's norms scale by ``1 + weight`` with the weight
    stored around zero; the gradient reaches ``weight`` unchanged.

    ``round_before_weight`` (keyword only): the normalized input is rounded to
    the input's dtype before the gain multiplies it, and the product rounded
    again, as Llama-style norms compute ``weight * x_hat.to(dtype)``; by
    default the product is formed in float32 and rounded once, as PyTorch's
    op does. It changes float16 / bfloat16 results by at most one rounding,
    and nothing for float32. The gradients are the same either way (the
    rounding's derivative is taken as 1, as autograd takes a cast's).
    """
    shape = normalized_shape_tuple(normalized_shape)
    check_input(input, shape)
    check_parameter("weight", weight, shape, input)
    impl = check_impl(impl)
    weight_offset = check_weight_offset(weight_offset)
    round_first = check_flag("round_before_weight", round_before_weight) and weight is not None
    input, weight = _autocast_float32(input, weight)
    eps = default_rms_norm_eps(input.dtype) if eps is None else check_eps(eps)
    chosen = resolve_impl(input, impl)
    if chosen == "triton":
        return _kernels_ops().triton_rms_norm(input, shape, weight, eps, weight_offset, round_first)
    if round_first:
        return _gain_after_rounding(_rms_norm_on(chosen, input, shape, None, eps, 0.0), weight, weight_offset)
    return _rms_norm_on(chosen, input, shape, weight, eps, weight_offset)


def _rms_norm_on(chosen: str, x: Tensor, shape, weight: Optional[Tensor], eps: float, weight_offset: float) -> Tensor:
    """RMSNorm on the reference or on PyTorch's op."""
    if chosen == "reference":
        return reference.rms_norm(x, shape, weight, eps, weight_offset)
    return _torch_rms_norm(x, shape, weight, eps, weight_offset)


def _gain_after_rounding(x_hat: Tensor, weight: Tensor, weight_offset: float) -> Tensor:
    """``(weight_offset + weight) * x_hat``, x_hat already rounded to its dtype, the product formed
    in float32 (or wider) and rounded to x_hat's dtype: Llama's ``weight * x_hat.to(dtype)``."""
    compute = torch.promote_types(torch.promote_types(x_hat.dtype, torch.float32), weight.dtype)
    gain = weight.to(compute) + weight_offset if weight_offset else weight.to(compute)
    return (x_hat.to(compute) * gain).to(x_hat.dtype)


def _torch_rms_norm(x: Tensor, shape, weight: Optional[Tensor], eps: float, weight_offset: float) -> Tensor:
    """``F.rms_norm``; with an offset gain, run in the promoted dtype (at least float32) and cast back."""
    if not weight_offset or weight is None:
        return F.rms_norm(x, shape, weight, eps)
    dtype = torch.promote_types(torch.promote_types(x.dtype, torch.float32), weight.dtype)
    return F.rms_norm(x.to(dtype), shape, weight.to(dtype) + weight_offset, eps).to(x.dtype)


def _residual_sum(x: Tensor, residual: Optional[Tensor], residual_in_fp32: bool) -> Tensor:
    """new_residual = x + residual, in float32 when asked, else in x's dtype."""
    dtype = torch.float32 if residual_in_fp32 and x.dtype != torch.float64 else x.dtype
    if residual is None:
        return x.to(dtype)
    return x.to(dtype) + residual.to(dtype)


def _check_residual(x: Tensor, residual: Optional[Tensor]) -> None:
    if residual is None:
        return
    if not isinstance(residual, Tensor):
        raise LayerNormTypeError(f"residual must be a torch.Tensor or None, got {type(residual).__name__}")
    if not residual.is_floating_point():
        raise LayerNormTypeError(f"residual must be a floating-point tensor, got dtype {residual.dtype}")
    if residual.shape != x.shape:
        raise LayerNormValueError(
            f"residual must have the input's shape {list(x.shape)}, got {list(residual.shape)}"
        )
    if residual.device != x.device:
        raise LayerNormValueError(f"residual is on {residual.device} but the input is on {x.device}")


def add_layer_norm(
    input: Tensor,
    residual: Optional[Tensor],
    normalized_shape,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    eps: float = 1e-5,
    *,
    residual_in_fp32: bool = False,
    impl: Optional[str] = None,
    weight_offset: float = 0.0,
) -> Tuple[Tensor, Tensor]:
    r"""The pre-norm transformer step: ``(layer_norm(input + residual), input + residual)``.

    Returns ``(y, new_residual)``: :math:`r' = x + r` and :math:`y = \mathrm{LN}(r')`.
    The fused kernels read ``input`` and ``residual`` once and write ``y`` and
    ``new_residual`` once, instead of a separate add that writes ``r'`` and a
    norm that reads it back. Gradients flow to ``input``, ``residual``,
    ``weight`` and ``bias`` from both outputs.

    ``residual=None`` is the first block: ``new_residual`` is ``input`` itself
    (cast as below). ``y`` has the input's dtype; ``new_residual`` has it too,
    or float32 when ``residual_in_fp32`` (keeps the residual stream exact
    while the activations are half precision). ``weight_offset`` as for
    :func:`layer_norm`.
    """
    shape = normalized_shape_tuple(normalized_shape)
    check_input(input, shape)
    _check_residual(input, residual)
    check_parameter("weight", weight, shape, input)
    check_parameter("bias", bias, shape, input)
    eps = check_eps(eps)
    impl = check_impl(impl)
    weight_offset = check_weight_offset(weight_offset)
    chosen = resolve_impl(input, impl)
    if chosen == "triton":
        return _kernels_ops().triton_add_layer_norm(input, residual, shape, weight, bias, eps, residual_in_fp32,
                                                    weight_offset)
    new_residual = _residual_sum(input, residual, residual_in_fp32)
    y = _layer_norm_on(chosen, new_residual, shape, weight, bias, eps, weight_offset)
    return y.to(input.dtype), new_residual


def add_rms_norm(
    input: Tensor,
    residual: Optional[Tensor],
    normalized_shape,
    weight: Optional[Tensor] = None,
    eps: Optional[float] = None,
    *,
    residual_in_fp32: bool = False,
    impl: Optional[str] = None,
    weight_offset: float = 0.0,
    round_before_weight: bool = False,
) -> Tuple[Tensor, Tensor]:
    r"""``(rms_norm(input + residual), input + residual)``; see :func:`add_layer_norm`
    (``weight_offset`` and ``round_before_weight`` as for :func:`rms_norm`)."""
    shape = normalized_shape_tuple(normalized_shape)
    check_input(input, shape)
    _check_residual(input, residual)
    check_parameter("weight", weight, shape, input)
    eps = default_rms_norm_eps(input.dtype) if eps is None else check_eps(eps)
    impl = check_impl(impl)
    weight_offset = check_weight_offset(weight_offset)
    round_first = check_flag("round_before_weight", round_before_weight) and weight is not None
    chosen = resolve_impl(input, impl)
    if chosen == "triton":
        return _kernels_ops().triton_add_rms_norm(input, residual, shape, weight, eps, residual_in_fp32,
                                                  weight_offset, round_first)
    new_residual = _residual_sum(input, residual, residual_in_fp32)
    if round_first:  # x_hat rounded to the output's dtype (the input's), then the gain
        x_hat = _rms_norm_on(chosen, new_residual, shape, None, eps, 0.0).to(input.dtype)
        return _gain_after_rounding(x_hat, weight, weight_offset), new_residual
    return _rms_norm_on(chosen, new_residual, shape, weight, eps, weight_offset).to(input.dtype), new_residual
