"""The fused kernels on ``DTensor`` inputs (tensor and sequence parallelism).

A norm is row-wise: rows sharded over batch or sequence dims can be
normalised where they are, each rank on its own rows, with no communication.
So a call on a DTensor runs the kernels on each rank's local rows and wraps
the outputs back with the input's placements. What must be arranged first:

- a shard of a *normalized* dim, or a pending sum (``Partial``), cannot be
  normalised locally: it is redistributed to ``Replicate`` on those mesh dims
  (as PyTorch's own op would, with an all-gather or an all-reduce);
- the residual of the fused add takes the input's placements;
- weight and bias are replicated DTensors (or plain tensors); each rank's
  gradient of them covers its own rows only, so it is declared ``Partial``
  on every mesh dim where the rows are sharded (summed when redistributed,
  as PyTorch's op's parameter gradient is), and ``Replicate`` elsewhere.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from torch import Tensor


def is_dtensor(t: Optional[Tensor]) -> bool:
    if t is None or type(t) is Tensor:  # the common case, without importing torch.distributed
        return False
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a build without distributed
        return False
    return isinstance(t, DTensor)


def norm_on_local_rows(norm: Callable, x, residual, normalized_ndim: int, weight, bias, store_residual: bool):
    """``norm(x_local, residual_local, weight_local, bias_local)`` -> y or (y, r'), as DTensors."""
    from torch.distributed.tensor import DTensor, Partial, Replicate

    first_normalized = x.dim() - normalized_ndim
    placements = [
        Replicate() if p.is_partial() or (p.is_shard() and _dim(p, x.dim()) >= first_normalized) else p
        for p in x.placements
    ]
    if list(placements) != list(x.placements):
        x = x.redistribute(x.device_mesh, placements)
    mesh = x.device_mesh
    if residual is not None:
        residual = _as_dtensor(residual, mesh).redistribute(mesh, placements).to_local()
    grad_placements = [Partial() if p.is_shard() else Replicate() for p in placements]
    weight, bias = (None if t is None else _parameter_local(t, mesh, grad_placements) for t in (weight, bias))
    out = norm(x.to_local(), residual, weight, bias)

    def wrap(local: Tensor) -> "DTensor":
        return DTensor.from_local(local, mesh, placements, run_check=False, shape=x.shape, stride=_contiguous_stride(x.shape))

    return (wrap(out[0]), wrap(out[1])) if store_residual else wrap(out)


def _dim(placement, ndim: int) -> int:
    return placement.dim % ndim


def _as_dtensor(t: Tensor, mesh):
    from torch.distributed.tensor import DTensor, Replicate

    return t if isinstance(t, DTensor) else DTensor.from_local(t, mesh, [Replicate()] * mesh.ndim, run_check=False)


def _parameter_local(t: Tensor, mesh, grad_placements: Sequence) -> Tensor:
    """A weight or bias as this rank's full copy, its gradient declared partial where rows are sharded."""
    from torch.distributed.tensor import DTensor, Replicate

    if not isinstance(t, DTensor):
        return t
    replicated = [Replicate()] * mesh.ndim
    if list(t.placements) != replicated:
        t = t.redistribute(mesh, replicated)
    return t.to_local(grad_placements=grad_placements)


def _contiguous_stride(shape) -> tuple:
    """The global stride of a contiguous tensor of ``shape`` (the kernels' outputs are contiguous)."""
    stride, size = [], 1
    for n in reversed(shape):
        stride.append(size)
        size *= n
    return tuple(reversed(stride))
