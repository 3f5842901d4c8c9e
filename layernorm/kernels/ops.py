"""The Triton kernels as PyTorch operators: ``torch.library`` registration and autograd.

Two operators cover LayerNorm, RMSNorm and the fused residual add:

- ``layernorm::norm_fwd(x, residual?, weight?, bias?, ...) -> (y, r', mean, rstd)``
- ``layernorm::norm_bwd(dy, x_or_r', dr'?, mean, rstd, weight?, bias?, ...) -> (dx, dweight, dbias)``

Each has a fake implementation (shapes and dtypes only) and the forward has
its autograd formula, so ``torch.compile(fullgraph=True)`` keeps them in the
graph as opaque calls, and CUDA graphs capture them (no host sync, no
allocation outside PyTorch's allocator). Outputs a call does not produce
(r' without a residual add, mean for RMSNorm, dweight without a weight) are
returned as empty tensors, since an operator cannot return ``None``.

In eager mode the same launches run through a plain ``torch.autograd.Function``
instead: it skips the dispatcher round trip of a Python custom operator, which
at M = 8 rows is a sizeable part of the whole call.

Shapes: ``x`` is ``(*, *normalized_shape)``; the kernels see it as ``M`` rows
of ``N = prod(normalized_shape)``. Strided rows with a contiguous last dim are
read in place; only a layout with no such 2-D view is copied.

Importing this module needs neither Triton nor a GPU; the kernels are imported
at the first launch.
"""

import contextlib
import importlib.util
import math
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import dtensor

__all__ = [
    "triton_supported",
    "triton_layer_norm",
    "triton_rms_norm",
    "triton_add_layer_norm",
    "triton_add_rms_norm",
]

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
HAS_TRITON = importlib.util.find_spec("triton") is not None


def triton_supported(x: Tensor) -> bool:
    """Whether the kernels take ``x``: Triton is installed, the dtype is half, bfloat16 or
    float32, and ``x`` is on a CUDA device (or on the CPU under ``TRITON_INTERPRET=1``)."""
    if not HAS_TRITON or x.dtype not in SUPPORTED_DTYPES:
        return False
    return x.is_cuda or (x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1")


# ---------------------------------------------------------------------------
# Which op of the family a call runs.


@dataclass(frozen=True)
class Variant:
    """Everything about an op but its tensors and eps, by name.

    Attributes:
        is_rms: RMSNorm (no mean, no bias) instead of LayerNorm.
        store_residual: the fused pre-norm add: ``r' = x + residual`` is
            normalised and returned beside ``y``.
        residual_in_fp32: ``r'`` is stored in float32 (with ``store_residual``).
        weight_offset: the gain is ``weight_offset + weight`` (``1.0`` for
            Gemma's and Nemotron's norms).
        round_before_weight: x_hat is rounded to y's dtype before the gain
            multiplies it (Llama's order); forward only.
    """

    is_rms: bool = False
    store_residual: bool = False
    residual_in_fp32: bool = False
    weight_offset: float = 0.0
    round_before_weight: bool = False

    def operator_args(self) -> Tuple[bool, bool, bool, float, bool]:
        """The fields in the order of ``layernorm::norm_fwd``'s trailing arguments."""
        return (self.is_rms, self.store_residual, self.residual_in_fp32, self.weight_offset,
                self.round_before_weight)


_VARIANTS: Dict[Tuple[bool, bool, bool, float, bool], Variant] = {}


def variant(is_rms: bool, store_residual: bool = False, residual_in_fp32: bool = False, weight_offset: float = 0.0,
            round_before_weight: bool = False) -> Variant:
    """One shared object per variant: a call builds none (a frozen dataclass costs host time).
    Not ``functools.lru_cache``: torch.compile traces this function, and warns about a cache
    wrapper; while it traces, a new object is built (its guards cannot follow the dict's growth)."""
    key = (bool(is_rms), bool(store_residual), bool(residual_in_fp32), float(weight_offset), bool(round_before_weight))
    if torch.compiler.is_compiling():
        return Variant(*key)
    found = _VARIANTS.get(key)
    if found is None:
        found = _VARIANTS[key] = Variant(*key)
    return found


@dataclass(frozen=True)
class _Saved:
    """What the backward needs besides the saved tensors."""

    variant: Variant
    normalized_ndim: int
    eps: float
    x_dtype: torch.dtype
    residual_dtype: Optional[torch.dtype]  # None: no residual input
    compiling: bool  # the forward ran as the operator (torch.compile): the backward calls norm_bwd


# ---------------------------------------------------------------------------
# Row views and the launches, shared by the operators and the eager path.


_launch = None  # layernorm.kernels.launch, imported at the first call (it imports Triton)


def _kernels():
    global _launch
    if _launch is None:
        from . import launch

        _launch = launch
    return _launch


def _rows(t: Tensor, m: int, n: int) -> Tensor:
    """``t`` as ``(m, n)`` rows with a contiguous last dim; copies only when no such view exists."""
    if t.dim() == 2 and t.shape[0] == m and (t.stride(1) == 1 or n <= 1):
        return t  # already rows (the common case; skipping the view saves host time at small M)
    try:
        rows = t.view(m, n)
    except RuntimeError:
        rows = t.reshape(m, n)
    if n > 1 and rows.stride(1) != 1:
        rows = rows.contiguous()
    return rows


def _on_device_of(x: Tensor):
    """Triton launches on the current CUDA device: make it x's for the call."""
    if x.is_cuda and x.device.index != torch.cuda.current_device():
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


def _param(t: Optional[Tensor], n: int) -> Optional[Tensor]:
    """weight / bias as a contiguous vector of n (the kernels index it with unit stride)."""
    if t is None or (t.dim() == 1 and (t.stride(0) == 1 or n <= 1)):
        return t
    return t.reshape(n).contiguous()


def _num_rows(x: Tensor, normalized_ndim: int) -> int:
    if x.dim() == 2 and normalized_ndim == 1:
        return x.shape[0]  # the common case, without building a slice of the shape
    return math.prod(x.shape[: x.dim() - normalized_ndim])


def _placeholder(x: Tensor) -> Tensor:
    """An output the call does not produce (operators return tensors, never None); each one distinct."""
    return x.new_empty((0,), dtype=torch.float32)


def _forward(
    x: Tensor,
    residual: Optional[Tensor],
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    normalized_ndim: int,
    eps: float,
    v: Variant,
) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor], Tensor]:
    """(y, r' or None, mean or None, rstd); the row statistics are float32 of shape (M,)."""
    m = _num_rows(x, normalized_ndim)
    n = x.numel() // m if m else math.prod(x.shape[x.dim() - normalized_ndim:])
    r_dtype = None
    if v.store_residual:
        r_dtype = torch.float32 if v.residual_in_fp32 else x.dtype
    with _on_device_of(x):
        y, r_out, mean, rstd = _kernels().norm_forward(
            _rows(x, m, n),
            None if residual is None else _rows(residual, m, n),
            _param(weight, n),
            _param(bias, n),
            eps, v.is_rms, r_dtype, v.weight_offset, v.round_before_weight,
        )
    if y.shape != x.shape:
        y = y.view(x.shape)
        r_out = None if r_out is None else r_out.view(x.shape)
    return y, r_out, mean, rstd


def _backward(
    dy: Tensor,
    x: Tensor,
    dres: Optional[Tensor],
    mean: Tensor,
    rstd: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    normalized_ndim: int,
    is_rms: bool,
    need_dweight: bool = True,
    need_dbias: bool = True,
    weight_offset: float = 0.0,
) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    m = _num_rows(x, normalized_ndim)
    n = x.numel() // m if m else math.prod(x.shape[x.dim() - normalized_ndim:])
    with _on_device_of(x):
        dx, dw, db = _kernels().norm_backward(
            _rows(dy, m, n),
            _rows(x, m, n),
            None if dres is None else _rows(dres, m, n),
            None if is_rms else mean,
            rstd,
            _param(weight, n),
            None if bias is None or not need_dbias else bias.dtype,
            is_rms,
            need_dweight,
            weight_offset,
        )
    if dx.shape != x.shape:
        dx = dx.view(x.shape)
    if dw is not None and weight.dim() != 1:
        dw = dw.view(weight.shape)
    if db is not None and bias.dim() != 1:
        db = db.view(bias.shape)
    return dx, dw, db


# ---------------------------------------------------------------------------
# torch.library operators (what torch.compile sees). Their schemas take only
# primitives, so the variant travels as its fields, in Variant.operator_args order.


@torch.library.custom_op("layernorm::norm_fwd", mutates_args=())
def norm_fwd(
    x: Tensor,
    residual: Optional[Tensor],
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    normalized_ndim: int,
    eps: float,
    is_rms: bool,
    store_residual: bool,
    residual_in_fp32: bool,
    weight_offset: float,
    round_before_weight: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, r' or empty, mean or empty, rstd) of ``norm(x [+ residual])``."""
    v = variant(is_rms, store_residual, residual_in_fp32, weight_offset, round_before_weight)
    y, r_out, mean, rstd = _forward(x, residual, weight, bias, normalized_ndim, eps, v)
    return y, _placeholder(x) if r_out is None else r_out, _placeholder(x) if mean is None else mean, rstd


@norm_fwd.register_fake
def _norm_fwd_fake(x, residual, weight, bias, normalized_ndim, eps, is_rms, store_residual, residual_in_fp32,
                   weight_offset, round_before_weight):
    m = 1
    for size in x.shape[: x.dim() - normalized_ndim]:
        m = m * size
    r_dtype = torch.float32 if residual_in_fp32 else x.dtype
    return (
        x.new_empty(x.shape),
        x.new_empty(x.shape, dtype=r_dtype) if store_residual else _placeholder(x),
        _placeholder(x) if is_rms else x.new_empty((m,), dtype=torch.float32),
        x.new_empty((m,), dtype=torch.float32),
    )


@torch.library.custom_op("layernorm::norm_bwd", mutates_args=())
def norm_bwd(
    dy: Tensor,
    x: Tensor,
    dres: Optional[Tensor],
    mean: Tensor,
    rstd: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    normalized_ndim: int,
    is_rms: bool,
    need_dweight: bool,
    need_dbias: bool,
    weight_offset: float,
) -> Tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight or empty, dbias or empty); ``bias`` only says whether and in which dtype."""
    dx, dw, db = _backward(dy, x, dres, mean, rstd, weight, bias, normalized_ndim, is_rms, need_dweight, need_dbias,
                           weight_offset)
    return dx, _placeholder(x) if dw is None else dw, _placeholder(x) if db is None else db


@norm_bwd.register_fake
def _norm_bwd_fake(dy, x, dres, mean, rstd, weight, bias, normalized_ndim, is_rms, need_dweight, need_dbias,
                   weight_offset):
    return (
        x.new_empty(x.shape),
        _placeholder(x) if weight is None or not need_dweight else weight.new_empty(weight.shape),
        _placeholder(x) if bias is None or not need_dbias else bias.new_empty(bias.shape),
    )


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def _input_grads(ctx, dy, dr_out, saved):
    """Gradients of (x, residual, weight, bias) from those of (y, r'); shared by both paths."""
    x_or_r, mean, rstd, weight, bias = saved
    spec: _Saved = ctx.spec
    v = spec.variant
    if torch.is_grad_enabled():  # backward(create_graph=True): gradients that can be differentiated again
        return _differentiable_input_grads(ctx, dy, dr_out, saved)
    if dy is None:
        dy = torch.zeros_like(x_or_r, dtype=spec.x_dtype)  # y has x's dtype
    dres = dr_out if v.store_residual else None
    need_dw, need_db = ctx.needs_input_grad[2], ctx.needs_input_grad[3]  # frozen parameters: no sums
    backward = torch.ops.layernorm.norm_bwd if spec.compiling else _backward
    dx, dw, db = backward(dy, x_or_r, dres, mean, rstd, weight, bias, spec.normalized_ndim, v.is_rms, need_dw, need_db,
                          v.weight_offset)
    grad_residual = None if spec.residual_dtype is None else _cast(dx, spec.residual_dtype)
    return (_cast(dx, spec.x_dtype), grad_residual, dw if weight is not None and need_dw else None,
            db if bias is not None and need_db else None)


def _differentiable_input_grads(ctx, dy, dr_out, saved):
    """The gradients of (x, residual, weight, bias) as a graph of PyTorch ops.

    The kernels' backward is not differentiable (its launches are opaque to
    autograd), so a backward that must itself be differentiated, as in
    gradient penalties or Hessian-vector products, runs the reference's
    backward instead, with the row statistics recomputed from the saved input
    in PyTorch ops, so that they too depend on it. The saved input is x, or
    r' = x + residual for the fused add, whose own dependence on x and the
    residual then flows back through this function's first-order backward.
    """
    from .. import reference

    x_or_r, _, _, weight, bias = saved
    spec: _Saved = ctx.spec
    v = spec.variant
    shape = tuple(x_or_r.shape[x_or_r.dim() - spec.normalized_ndim:])
    if dy is None:
        dy = torch.zeros_like(x_or_r, dtype=spec.x_dtype)
    gain = reference._gain(weight, v.weight_offset)  # the gain the forward used, as a function of the weight
    if v.is_rms:
        _, rstd = reference.rms_norm_forward(x_or_r, shape, None, spec.eps)
        dx, dw = reference.rms_norm_backward(dy, x_or_r, gain, rstd)
        db = None
    else:
        _, mean, rstd = reference.layer_norm_forward(x_or_r, shape, None, None, spec.eps)
        dx, dw, db = reference.layer_norm_backward(dy, x_or_r, gain, mean, rstd, with_bias=bias is not None)
        db = None if db is None else db.to(bias.dtype)
    dw = None if dw is None else dw.to(weight.dtype)  # the gain's dtype may be wider than the weight's
    if v.store_residual and dr_out is not None:
        dx = dx + dr_out
    grad_residual = None if spec.residual_dtype is None else dx.to(spec.residual_dtype)
    return (dx.to(spec.x_dtype), grad_residual, dw if ctx.needs_input_grad[2] else None,
            db if ctx.needs_input_grad[3] else None)


def _save(ctx, x, residual, weight, bias, normalized_ndim, eps, v: Variant, r_out, mean, rstd, compiling: bool):
    """What the backward needs: the tensors, and the call's constants in one object."""
    ctx.save_for_backward(r_out if v.store_residual else x, mean, rstd, weight, bias)
    ctx.spec = _Saved(v, normalized_ndim, eps, x.dtype, None if residual is None else residual.dtype, compiling)


def _residual_sum_wants_grad(ctx) -> bool:
    """Whether r' = x + residual wants a gradient: only through x or the residual (the forward's
    first two inputs), never through the weight or bias."""
    return ctx.needs_input_grad[0] or ctx.needs_input_grad[1]


def _setup_context(ctx, inputs, output):
    x, residual, weight, bias, normalized_ndim, eps, *fields = inputs
    _, r_out, mean, rstd = output
    v = variant(*fields)
    _save(ctx, x, residual, weight, bias, normalized_ndim, eps, v, r_out, mean, rstd, True)
    non_differentiable = [mean, rstd]
    if not (v.store_residual and _residual_sum_wants_grad(ctx)):
        non_differentiable.append(r_out)  # an empty placeholder, or an r' that wants no gradient
    ctx.mark_non_differentiable(*non_differentiable)


def _norm_fwd_backward(ctx, dy, dr_out, _dmean, _drstd):
    # one None per argument after the four tensors: normalized_ndim, eps and the variant's five fields
    return (*_input_grads(ctx, dy, dr_out, ctx.saved_tensors), *(None,) * 7)


norm_fwd.register_autograd(_norm_fwd_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------
# Eager path: the same launches behind a plain autograd.Function, or none at all
# when no gradient is wanted (the launch path is the whole cost at a few rows).


class _EagerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, residual, weight, bias, normalized_ndim, eps, v):
        y, r_out, mean, rstd = _forward(x, residual, weight, bias, normalized_ndim, eps, v)
        _save(ctx, x, residual, weight, bias, normalized_ndim, eps, v, r_out, mean, rstd, False)
        if not v.store_residual:
            return y
        if not _residual_sum_wants_grad(ctx):
            ctx.mark_non_differentiable(r_out)
        return y, r_out

    @staticmethod
    def backward(ctx, *grads):
        dr_out = grads[1] if ctx.spec.variant.store_residual else None
        return (*_input_grads(ctx, grads[0], dr_out, ctx.saved_tensors), None, None, None)


def _wants_grad(*tensors: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _norm(x, residual, normalized_shape, weight, bias, eps, v: Variant):
    """y, or (y, r') when ``v.store_residual``; the gain is ``v.weight_offset + weight``, applied to
    x_hat rounded to y's dtype first when ``v.round_before_weight``. (The backward is the same
    either way: the rounding's derivative is taken as 1, as autograd takes that of a cast.)"""
    if type(x) is not Tensor and dtensor.is_dtensor(x):  # tensor / sequence parallel: each rank its rows
        return dtensor.norm_on_local_rows(lambda x, r, w, b: _norm(x, r, normalized_shape, w, b, eps, v),
                                          x, residual, len(normalized_shape), weight, bias, v.store_residual)
    if torch._C._are_functorch_transforms_active():  # vmap, grad, jvp: the autograd function they need
        from . import func

        return func.norm(x, residual, normalized_shape, weight, bias, eps, v)
    eps = float(eps)
    if torch.compiler.is_compiling():
        y, r_out, _, _ = norm_fwd(x, residual, weight, bias, len(normalized_shape), eps, *v.operator_args())
    elif _wants_grad(x, residual, weight, bias):
        return _EagerNorm.apply(x, residual, weight, bias, len(normalized_shape), eps, v)
    else:
        y, r_out, _, _ = _forward(x, residual, weight, bias, len(normalized_shape), eps, v)
    return (y, r_out) if v.store_residual else y


# ---------------------------------------------------------------------------
# What layernorm.functional calls (inputs already validated there).

_LAYER_NORM, _RMS_NORM = variant(False), variant(True)  # the plain calls skip even the cache lookup


def triton_layer_norm(
    x: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor], bias: Optional[Tensor], eps: float,
    weight_offset: float = 0.0,
) -> Tensor:
    """LayerNorm of ``x`` over ``normalized_shape`` on the Triton kernels (gain ``weight_offset + weight``)."""
    return _norm(x, None, normalized_shape, weight, bias, eps,
                 _LAYER_NORM if not weight_offset else variant(False, weight_offset=weight_offset))


def triton_rms_norm(x: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor], eps: float,
                    weight_offset: float = 0.0, round_before_weight: bool = False) -> Tensor:
    """RMSNorm of ``x`` over ``normalized_shape`` on the Triton kernels (gain ``weight_offset + weight``)."""
    v = _RMS_NORM if not (weight_offset or round_before_weight) else variant(
        True, weight_offset=weight_offset, round_before_weight=round_before_weight)
    return _norm(x, None, normalized_shape, weight, None, eps, v)


def triton_add_layer_norm(
    x: Tensor,
    residual: Optional[Tensor],
    normalized_shape: Sequence[int],
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    eps: float,
    residual_in_fp32: bool = False,
    weight_offset: float = 0.0,
) -> Tuple[Tensor, Tensor]:
    """(LayerNorm(x + residual), x + residual) in one pass; r' in float32 when ``residual_in_fp32``."""
    v = variant(False, store_residual=True, residual_in_fp32=residual_in_fp32, weight_offset=weight_offset)
    return _norm(x, residual, normalized_shape, weight, bias, eps, v)


def triton_add_rms_norm(
    x: Tensor,
    residual: Optional[Tensor],
    normalized_shape: Sequence[int],
    weight: Optional[Tensor],
    eps: float,
    residual_in_fp32: bool = False,
    weight_offset: float = 0.0,
    round_before_weight: bool = False,
) -> Tuple[Tensor, Tensor]:
    """(RMSNorm(x + residual), x + residual) in one pass; r' in float32 when ``residual_in_fp32``."""
    v = variant(True, store_residual=True, residual_in_fp32=residual_in_fp32, weight_offset=weight_offset,
                round_before_weight=round_before_weight)
    return _norm(x, residual, normalized_shape, weight, None, eps, v)
