"""The split backward, a launch-table option for the widest rows: two kernels instead of one.

With the two row sums that dx needs known (c1 = mean(g * x_hat), c2 =
mean(g); reference.layer_norm_backward), dx of a column needs nothing beyond
its own column, so the row can be cut in column tiles:
:func:`norm_bwd_row_sums_kernel` computes c1 and c2, then
:func:`norm_bwd_tiles_kernel` runs a program per (column tile, row band)
whose dweight / dbias partials stay in registers for the whole band and are
written once, instead of a partial row per row block read and written back
(what limits the chunked backward). The price is a second read of x and dy
after the row-sum kernel's: 5 passes over the data instead of 3.
"""

import triton
import triton.language as tl

from .shared import (chunk_row_sums, in_row, load_gain, load_tiles, row_offsets, row_stats, store_dx,
                     store_partial_row, x_hat_of)


@triton.jit
def norm_bwd_row_sums_kernel(
    DY, X, W, MEAN, RSTD, C1, C2, stride_dy, stride_x, M, N,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    WEIGHT_OFFSET: tl.constexpr = 0.0,
):
    """The split backward's first kernel: per row, c1 = mean(g * x_hat) and c2 = mean(g).

    One streaming read of x and dy, 8 bytes written per row.
    """
    rows = row_offsets(tl.program_id(0), BLOCK_M)
    row_mask = rows < M
    cols = tl.arange(0, BLOCK_N)
    mean, rstd = row_stats(MEAN, RSTD, rows, row_mask, BLOCK_M, IS_RMS)
    sum_gx = tl.zeros([BLOCK_M], dtype=tl.float32)
    sum_g = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        c = start + cols
        col_mask = c < N
        x, dy = load_tiles(X, DY, rows, row_mask, c, in_row(c, N), stride_x, stride_dy, True)
        mask = row_mask[:, None] & col_mask[None, :]
        chunk_gx, chunk_g = chunk_row_sums(x.to(tl.float32), dy.to(tl.float32), mean, rstd, mask, W, c, col_mask,
                                           HAS_WEIGHT, WEIGHT_OFFSET)
        sum_gx += chunk_gx
        sum_g += chunk_g
    tl.store(C1 + rows, sum_gx / N, mask=row_mask)
    tl.store(C2 + rows, sum_g / N, mask=row_mask)


@triton.jit
def norm_bwd_tiles_kernel(
    DY, X, DRES, DX, W, MEAN, RSTD, C1, C2, DW_PARTIAL, DB_PARTIAL,
    stride_dy, stride_x, stride_dres, stride_dx, M, N, rows_per_band,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, NEED_DW: tl.constexpr, NEED_DB: tl.constexpr,
    HAS_DRES: tl.constexpr, WEIGHT_OFFSET: tl.constexpr = 0.0,
):
    """The split backward's second kernel: program (column tile, row band) writes dx of its
    tile for every row of the band, and the band's partial dweight / dbias of its columns."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    band = tl.program_id(1)
    band_start = band * rows_per_band
    band_end = tl.minimum(band_start + rows_per_band, M)
    if HAS_WEIGHT:
        w = load_gain(W, cols, col_mask, WEIGHT_OFFSET)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for first in range(band_start, band_end, BLOCK_M):
        rows = (first + tl.arange(0, BLOCK_M)).to(tl.int64)
        row_mask = rows < band_end
        mask = row_mask[:, None] & col_mask[None, :]
        # The rows' statistics first, then the tiles: in the other order ptxas keeps more of the
        # tiles live across the scalar loads (155 against 118 registers in one bf16 case).
        mean, rstd = row_stats(MEAN, RSTD, rows, row_mask, BLOCK_M, IS_RMS)
        c1 = tl.load(C1 + rows, mask=row_mask, other=0.0)
        if IS_RMS:
            c2 = c1  # unused
        else:
            c2 = tl.load(C2 + rows, mask=row_mask, other=0.0)
        x, dy = load_tiles(X, DY, rows, row_mask, cols, col_mask, stride_x, stride_dy, True)
        x = x.to(tl.float32)
        dy = dy.to(tl.float32)
        x_hat = x_hat_of(x, mean, rstd, mask, IS_RMS)
        g = dy * w[None, :] if HAS_WEIGHT else dy
        store_dx(g, x_hat, c1, c2, rstd, rows, cols, mask, DRES, DX, stride_dres, stride_dx, IS_RMS, HAS_DRES)
        if NEED_DW:
            dw_acc += tl.sum(dy * x_hat, axis=0)
        if NEED_DB:
            db_acc += tl.sum(dy, axis=0)
    store_partial_row(DW_PARTIAL, DB_PARTIAL, band, N, cols, col_mask, dw_acc, db_acc, NEED_DW, NEED_DB)
