"""The kernels under ``torch.func`` transforms: ``vmap``, ``grad`` / ``vjp``, ``jvp``.

The eager autograd function in :mod:`layernorm.kernels.ops` is the thin one every
ordinary call takes. While a ``torch.func`` transform is active, calls come
here instead, to an autograd function in the form those transforms need
(``setup_context``, and rules of its own for vmap and forward-mode AD):

- **vmap**: the op is row-wise, so a vmapped dim of the input is one more
  batch dim: it is moved to the front and the kernels see more rows. A
  vmapped weight or bias is not row-wise; then each slice runs on its own.
- **jvp**: the forward-mode derivative, in PyTorch ops from the saved row
  statistics (:math:`\\hat x`'s tangent has the backward's form:
  :math:`r\\,(t - \\bar t - \\hat x\\,\\overline{\\hat x t})`, without
  :math:`\\bar t` for RMSNorm).
- **grad / vjp**: the kernels' backward; under a transform, the reference's
  backward in PyTorch ops (see ``ops._differentiable_input_grads``), so that
  a vmap over it or a second derivative works.
"""

from __future__ import annotations

import contextlib

import torch

from .. import reference
from . import ops


class _TransformableNorm(torch.autograd.Function):
    """ops._EagerNorm in setup_context form; returns (y, r' or empty, mean or empty, rstd)."""

    @staticmethod
    def forward(x, residual, weight, bias, normalized_ndim, eps, v):
        y, r_out, mean, rstd = ops._forward(x, residual, weight, bias, normalized_ndim, eps, v)
        return y, ops._placeholder(x) if r_out is None else r_out, ops._placeholder(x) if mean is None else mean, rstd

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, residual, weight, bias, normalized_ndim, eps, v = inputs
        _, r_out, mean, rstd = output
        ops._save(ctx, x, residual, weight, bias, normalized_ndim, eps, v, r_out, None if v.is_rms else mean, rstd,
                  False)
        ctx.save_for_forward(r_out if v.store_residual else x, None if v.is_rms else mean, rstd, weight)
        # one call: each call replaces the set the last one marked
        ctx.mark_non_differentiable(mean, rstd, *(() if v.store_residual else (r_out,)))

    @staticmethod
    def backward(ctx, dy, dr_out, _dmean, _drstd):
        saved = ctx.saved_tensors
        dr_out = dr_out if ctx.spec.variant.store_residual else None
        with torch.enable_grad() if torch._C._are_functorch_transforms_active() else contextlib.nullcontext():
            grads = ops._input_grads(ctx, dy, dr_out, saved)
        return (*grads, None, None, None)

    @staticmethod
    def jvp(ctx, tx, tres, tw, tb, *_):
        x_or_r, mean, rstd, weight = ctx.saved_tensors
        spec = ctx.spec
        normalized_ndim, x_dtype, v = spec.normalized_ndim, spec.x_dtype, spec.variant
        is_rms, store_residual = v.is_rms, v.store_residual
        dims = tuple(range(x_or_r.dim() - normalized_ndim, x_or_r.dim()))
        rows = x_or_r.shape[: x_or_r.dim() - normalized_ndim] + (1,) * normalized_ndim
        compute = torch.promote_types(x_or_r.dtype, torch.float32)
        r = rstd.reshape(rows)
        x_hat = x_or_r.to(compute) * r if is_rms else (x_or_r.to(compute) - mean.reshape(rows)) * r
        t = _sum_tangents(tx, tres, x_or_r, compute)
        t_hat = t - x_hat * (x_hat * t).mean(dims, keepdim=True)
        if not is_rms:
            t_hat = t_hat - t.mean(dims, keepdim=True)
        ty = r * t_hat
        if weight is not None:
            ty = ty * reference._gain(weight, v.weight_offset).to(compute)
        if tw is not None:
            ty = ty + x_hat * tw.to(compute)
        if tb is not None:
            ty = ty + tb.to(compute)
        return ty.to(x_dtype), t.to(x_or_r.dtype) if store_residual else None, None, None

    @staticmethod
    def vmap(info, in_dims, x, residual, weight, bias, normalized_ndim, eps, v):
        x_dim, r_dim, w_dim, b_dim = in_dims[:4]
        size = info.batch_size
        if w_dim is None and b_dim is None:  # the vmapped dim is one more batch dim of the rows
            x = _batched_front(x, x_dim, size)
            residual = None if residual is None else _batched_front(residual, r_dim, size)
            y, r_out, mean, rstd = _TransformableNorm.apply(x, residual, weight, bias, normalized_ndim, eps, v)
            per_row = lambda t: t.reshape(size, -1) if t.numel() else t  # noqa: E731
            return ((y, r_out, per_row(mean), per_row(rstd)),
                    (0, 0 if v.store_residual else None, 0 if mean.numel() else None, 0))
        outs = []
        for i in range(size):  # a weight or bias per slice: each slice on its own
            pick = lambda t, d: t if t is None or d is None else t.select(d, i)  # noqa: E731
            outs.append(_TransformableNorm.apply(pick(x, x_dim), pick(residual, r_dim), pick(weight, w_dim),
                                                pick(bias, b_dim), normalized_ndim, eps, v))
        stacked = tuple(torch.stack(parts) if parts[0].numel() else parts[0] for parts in zip(*outs))
        return stacked, tuple(0 if t.numel() else None for t in stacked)


def _batched_front(t, dim, size):
    return t.unsqueeze(0).expand(size, *t.shape) if dim is None else t.movedim(dim, 0)


def _sum_tangents(tx, tres, like, compute):
    """The tangent of the normalised input: x's, plus the residual's for the fused add."""
    t = torch.zeros_like(like, dtype=compute) if tx is None else tx.to(compute)
    return t if tres is None else t + tres.to(compute)


def norm(x, residual, normalized_shape, weight, bias, eps, v: "ops.Variant"):
    """ops._norm under a torch.func transform: y, or (y, r')."""
    y, r_out, _, _ = _TransformableNorm.apply(x, residual, weight, bias, len(normalized_shape), float(eps), v)
    return (y, r_out) if v.store_residual else y
