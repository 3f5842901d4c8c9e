"""Host side of the norm kernels: allocate outputs, look up the launch shape, launch.

Every function here takes 2-D row views ``(M, N)`` whose last dim is
contiguous (rows may be strided) and returns new tensors; the autograd and
``torch.library`` plumbing lives in :mod:`layernorm.kernels.ops`.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import norm, table
from .direct import DirectKernel

# Each kernel launched through its cached compiled kernel (Triton's own path under the interpreter).
norm_fwd_kernel = DirectKernel(norm.norm_fwd_kernel)
norm_bwd_kernel = DirectKernel(norm.norm_bwd_kernel)
norm_bwd_row_sums_kernel = DirectKernel(norm.norm_bwd_row_sums_kernel)
norm_bwd_tiles_kernel = DirectKernel(norm.norm_bwd_tiles_kernel)
norm_bwd_paired_kernel = DirectKernel(norm.norm_bwd_paired_kernel)
sum_partials_kernel = DirectKernel(norm.sum_partials_kernel)

# Programs per multiprocessor times this many SMs; the CPU interpreter gets a
# small grid so that tests still see several programs walking several blocks.
_INTERPRETER_SMS = 3


def _alloc(shape, dtype, device) -> Tensor:
    """Every output and scratch buffer; tests swap in a NaN-filled one to prove each element is written."""
    return torch.empty(shape, dtype=dtype, device=device)


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _sm_count(x: Tensor) -> int:
    """Multiprocessors of x's GPU (``get_device``: an int, cheaper than building ``x.device``)."""
    index = x.get_device()
    return _cuda_sm_count(index) if index >= 0 and x.is_cuda else _INTERPRETER_SMS


def norm_forward(
    x: Tensor,
    residual: Optional[Tensor],
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    eps: float,
    is_rms: bool,
    residual_out_dtype: Optional[torch.dtype],
    weight_offset: float = 0.0,
    round_before_weight: bool = False,
) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor], Tensor]:
    """y, r' (when ``residual_out_dtype``), mean (LayerNorm), rstd of the rows of ``x [+ residual]``;
    the gain is ``weight_offset + weight``; ``round_before_weight``: x_hat rounded to y's dtype
    before the gain multiplies it (Llama's order)."""
    m, n = x.shape
    y = _alloc((m, n), x.dtype, x.device)
    r_out = None if residual_out_dtype is None else _alloc((m, n), residual_out_dtype, x.device)
    mean = None if is_rms else _alloc((m,), torch.float32, x.device)  # apart from rstd: operator outputs
    rstd = _alloc((m,), torch.float32, x.device)  # may not share storage
    if m == 0 or n == 0:
        return y, r_out, mean, rstd
    launch = table.forward_launch(n, x.element_size())
    num_blocks = triton_cdiv(m, launch.block_m)
    persistent = launch.programs_per_sm > 0
    programs = num_blocks
    if persistent:
        programs = table.forced_programs() or int(launch.programs_per_sm * _sm_count(x))
        programs = max(1, min(programs, num_blocks))
    norm_fwd_kernel.launch(
        (programs,),
        x, x if residual is None else residual, y, y if r_out is None else r_out,
        x if weight is None else weight, x if bias is None else bias,
        rstd if mean is None else mean, rstd,
        x.stride(0), 0 if residual is None else residual.stride(0), y.stride(0),
        0 if r_out is None else r_out.stride(0),
        m, n, eps, programs,
        BLOCK_M=launch.block_m, BLOCK_N=launch.block_n, SINGLE_CHUNK=launch.single_chunk,
        PERSISTENT=persistent,
        IS_RMS=is_rms, HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
        HAS_RESIDUAL=residual is not None, STORE_RESIDUAL=r_out is not None, WEIGHT_OFFSET=weight_offset,
        ROUND_BEFORE_WEIGHT=round_before_weight, num_warps=launch.num_warps,
    )
    return y, r_out, mean, rstd


def _partial_rows(has_weight: bool, has_bias: bool, rows: int, n: int, other: Tensor) -> Tuple[Tensor, Tensor]:
    """float32 scratch for the dweight / dbias partial sums, ``rows`` x n each, in one allocation;
    ``other`` (any float32 tensor) stands in for a buffer not needed (the kernel never touches it)."""
    if has_weight and has_bias:
        dw_partial, db_partial = _alloc((2, rows, n), torch.float32, other.device).unbind(0)
        return dw_partial, db_partial
    if has_weight or has_bias:
        partial = _alloc((rows, n), torch.float32, other.device)
        return (partial, other) if has_weight else (other, partial)
    return other, other


def norm_backward(
    dy: Tensor,
    x: Tensor,
    dres: Optional[Tensor],
    mean: Optional[Tensor],
    rstd: Tensor,
    weight: Optional[Tensor],
    bias_dtype: Optional[torch.dtype],
    is_rms: bool,
    need_dweight: bool = True,
    weight_offset: float = 0.0,
) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """dx (in ``x``'s dtype), dweight (when ``weight`` and ``need_dweight``), dbias (when
    ``bias_dtype``) for the rows of ``x``.

    ``x`` is the normalised input the forward saw (r' for the fused add);
    ``dres`` is a gradient reaching it directly, added to dx.
    """
    m, n = x.shape
    has_weight = weight is not None and need_dweight  # a dweight to compute
    has_bias = bias_dtype is not None
    dx = _alloc((m, n), x.dtype, x.device)
    dw = None if not has_weight else _alloc((n,), weight.dtype, x.device)
    db = None if not has_bias else _alloc((n,), bias_dtype, x.device)
    if m == 0 or n == 0:
        # no rows: the sums over rows are empty
        return dx, None if dw is None else dw.zero_(), None if db is None else db.zero_()
    launch = table.backward_launch(n, x.element_size())
    if launch.split and not launch.single_chunk:
        programs, dw_partial, db_partial = _split_backward(
            dy, x, dres, dx, mean, rstd, weight, is_rms, has_weight, has_bias, launch, weight_offset)
    elif launch.band_rows and not launch.single_chunk and (has_weight or has_bias):
        programs, dw_partial, db_partial = _paired_backward(
            dy, x, dres, dx, mean, rstd, weight, is_rms, has_weight, has_bias, launch, weight_offset)
    else:
        num_blocks = triton_cdiv(m, launch.block_m)
        programs = table.forced_programs() or int(launch.programs_per_sm * _sm_count(x))
        programs = max(1, min(programs, num_blocks))  # every program owns at least one block
        dw_partial, db_partial = _partial_rows(has_weight, has_bias, programs, n, rstd)
        hold = launch.hold_partials and not launch.single_chunk and n <= table.HOLD_MAX_N
        norm_bwd_kernel.launch(
            (programs,),
            dy, x, dy if dres is None else dres, dx,
            x if weight is None else weight, rstd if mean is None else mean, rstd,
            dw_partial, db_partial,
            dy.stride(0), x.stride(0), 0 if dres is None else dres.stride(0), dx.stride(0),
            m, n, programs,
            BLOCK_M=launch.block_m, BLOCK_N=launch.block_n, SINGLE_CHUNK=launch.single_chunk,
            IS_RMS=is_rms, HAS_WEIGHT=weight is not None, NEED_DW=has_weight, NEED_DB=has_bias,
            HAS_DRES=dres is not None, LEAN=launch.lean and launch.single_chunk, WEIGHT_OFFSET=weight_offset,
            HOLD_PARTIALS=hold, NUM_CHUNKS=table.next_power_of_2(triton_cdiv(n, launch.block_n)) if hold else 1,
            UNROLL=launch.unroll or not hold, num_warps=launch.num_warps,
        )
    if has_weight or has_bias:
        reduce_block_n = table.reduce_block_n(n, _sm_count(x))
        sum_partials_kernel.launch(
            (triton_cdiv(n, reduce_block_n),),
            dw_partial, db_partial, dx if dw is None else dw, dx if db is None else db, programs, n,
            HAS_WEIGHT=has_weight, HAS_BIAS=has_bias,
            BLOCK_P=table.REDUCE_BLOCK_P, BLOCK_N=reduce_block_n,
            num_warps=table.REDUCE_NUM_WARPS,
        )
    return dx, dw, db


# The split backward's row-sum kernel: a streaming reduction, one row per program.
_ROW_SUMS_BLOCK_N = 4096
_ROW_SUMS_NUM_WARPS = 8


def _split_backward(dy, x, dres, dx, mean, rstd, weight, is_rms, has_weight, has_bias, launch, weight_offset):
    """The wide-row backward in column tiles (see norm_bwd_tiles_kernel); returns
    (number of partial rows, dweight partials, dbias partials) for the final sum."""
    m, n = x.shape
    sums = _alloc((2, m), torch.float32, x.device)  # c1, c2 per row
    c1, c2 = sums[0], sums[1]
    norm_bwd_row_sums_kernel.launch(
        (m,),
        dy, x, x if weight is None else weight, rstd if mean is None else mean, rstd, c1, c2,
        dy.stride(0), x.stride(0), m, n,
        BLOCK_M=1, BLOCK_N=min(_ROW_SUMS_BLOCK_N, table.next_power_of_2(n)), IS_RMS=is_rms,
        HAS_WEIGHT=weight is not None, WEIGHT_OFFSET=weight_offset, num_warps=_ROW_SUMS_NUM_WARPS,
    )
    tiles = triton_cdiv(n, launch.block_n)
    # row bands: enough (tile, band) programs for programs_per_sm per SM, each band at least one step
    wanted = table.forced_programs() or int(launch.programs_per_sm * _sm_count(x))
    bands = max(1, min(triton_cdiv(wanted, tiles), triton_cdiv(m, launch.block_m)))
    rows_per_band = triton_cdiv(triton_cdiv(m, bands), launch.block_m) * launch.block_m
    bands = triton_cdiv(m, rows_per_band)  # no empty band: every partial row gets written
    dw_partial, db_partial = _partial_rows(has_weight, has_bias, bands, n, rstd)
    norm_bwd_tiles_kernel.launch(
        (tiles, bands),
        dy, x, dy if dres is None else dres, dx,
        x if weight is None else weight, rstd if mean is None else mean, rstd, c1, c2,
        dw_partial, db_partial,
        dy.stride(0), x.stride(0), 0 if dres is None else dres.stride(0), dx.stride(0), m, n, rows_per_band,
        BLOCK_M=launch.block_m, BLOCK_N=launch.block_n,
        IS_RMS=is_rms, HAS_WEIGHT=weight is not None, NEED_DW=has_weight, NEED_DB=has_bias,
        HAS_DRES=dres is not None, WEIGHT_OFFSET=weight_offset, num_warps=launch.num_warps,
    )
    return bands, dw_partial, db_partial


def _paired_backward(dy, x, dres, dx, mean, rstd, weight, is_rms, has_weight, has_bias, launch, weight_offset):
    """The wide-row backward as row programs and column-tile programs side by side (see
    norm_bwd_paired_kernel); returns (number of partial rows, dweight partials, dbias partials)."""
    m, n = x.shape
    band_rows = max(1, launch.band_rows // launch.block_m) * launch.block_m  # whole row blocks
    bands = triton_cdiv(m, band_rows)
    per_band = band_rows // launch.block_m + triton_cdiv(n, launch.block_n)
    dw_partial, db_partial = _partial_rows(has_weight, has_bias, bands, n, rstd)
    norm_bwd_paired_kernel.launch(
        (bands * per_band,),
        dy, x, dy if dres is None else dres, dx,
        x if weight is None else weight, rstd if mean is None else mean, rstd,
        dw_partial, db_partial,
        dy.stride(0), x.stride(0), 0 if dres is None else dres.stride(0), dx.stride(0), m, n, band_rows,
        BLOCK_M=launch.block_m, BLOCK_N=launch.block_n, TILE_M=table.paired_tile_m(launch.block_n),
        IS_RMS=is_rms, HAS_WEIGHT=weight is not None, NEED_DW=has_weight, NEED_DB=has_bias,
        HAS_DRES=dres is not None, WEIGHT_OFFSET=weight_offset, num_warps=launch.num_warps,
    )
    return bands, dw_partial, db_partial


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)
