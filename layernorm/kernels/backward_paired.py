"""The paired backward, a launch-table option for the widest rows: dx and the parameter
gradients computed by different programs of one launch, over the same rows at the same time.

A row too wide for registers costs the other backward paths extra bytes: the
chunked path read-modify-writes a float32 partial row of dweight / dbias for
every row block (at N = 65536 that is more bytes than the rows themselves),
and the split path reads x and dy a second time after its row-sum kernel (10
bytes an element for bf16 instead of 6).

Here the work is cut the other way. dweight and dbias need no row sums (only
x_hat, from the saved mean and rstd, and dy), so they can be summed by
programs of their own while other programs write dx. The programs come in
bands of ``band_rows`` rows: first the band's row programs, each writing dx
of one block of ``BLOCK_M`` rows (the chunked walk, without partial rows),
then one tile program per ``BLOCK_N`` columns, summing dweight / dbias of its
columns over the band's rows in registers and writing them once, as the
band's partial row. The GPU starts programs in about the order of their ids,
so a band's row and tile programs run side by side and read the same rows of
x and dy: whichever touches a chunk first brings it into L2, and the other
finds it there. Correctness does not depend on that order; only the bytes
read from memory do (at worst, those of the split path).

Extra bytes: ``8 / (6 * band_rows)`` of the rows' for the partial rows (bf16;
4% at 32 rows), and as much again for their sum.
"""

import triton
import triton.language as tl

from .backward_chunked import backward_chunked
from .shared import load_tiles, row_stats, store_partial_row, x_hat_of


@triton.jit
def norm_bwd_paired_kernel(
    DY, X, DRES, DX, W, MEAN, RSTD, DW_PARTIAL, DB_PARTIAL,
    stride_dy, stride_x, stride_dres, stride_dx, M, N, band_rows,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TILE_M: tl.constexpr,
    IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, NEED_DW: tl.constexpr, NEED_DB: tl.constexpr,
    HAS_DRES: tl.constexpr, WEIGHT_OFFSET: tl.constexpr = 0.0,
):
    """Program ``pid`` of band ``pid // (row programs + tiles)``: a row program (dx of one block of
    BLOCK_M rows) or a tile program (the band's partial dweight / dbias of BLOCK_N columns).
    ``band_rows`` is a multiple of BLOCK_M."""
    pid = tl.program_id(0)
    row_programs = band_rows // BLOCK_M
    per_band = row_programs + tl.cdiv(N, BLOCK_N)
    band = pid // per_band
    role = pid % per_band
    if role < row_programs:
        block = band * row_programs + role
        num_blocks = tl.cdiv(M, BLOCK_M)
        # one block: a step past the last block; no partial rows (the tile programs sum them)
        backward_chunked(DY, X, DRES, DX, W, MEAN, RSTD, DW_PARTIAL, DB_PARTIAL, stride_dy, stride_x, stride_dres,
                         stride_dx, M, N, block, num_blocks, BLOCK_M, BLOCK_N, IS_RMS, HAS_WEIGHT, False, False,
                         HAS_DRES, WEIGHT_OFFSET)
    else:
        band_start = band * band_rows
        band_parameter_sums(DY, X, MEAN, RSTD, DW_PARTIAL, DB_PARTIAL, stride_dy, stride_x, N, band,
                            band_start, tl.minimum(band_start + band_rows, M), role - row_programs,
                            TILE_M, BLOCK_N, IS_RMS, NEED_DW, NEED_DB)


@triton.jit
def band_parameter_sums(DY, X, MEAN, RSTD, DW_PARTIAL, DB_PARTIAL, stride_dy, stride_x, N, band, band_start,
                        band_end, tile, TILE_M: tl.constexpr, BLOCK_N: tl.constexpr, IS_RMS: tl.constexpr,
                        NEED_DW: tl.constexpr, NEED_DB: tl.constexpr):
    """Partial row ``band`` of dweight = sum of dy * x_hat and dbias = sum of dy over rows
    band_start..band_end, for the columns of ``tile``; TILE_M rows a step, the next step's
    loads issued before this one is reduced."""
    cols = tile * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    rows = (band_start + tl.arange(0, TILE_M)).to(tl.int64)
    x_next, dy_next = load_tiles(X, DY, rows, rows < band_end, cols, col_mask, stride_x, stride_dy, True)
    for first in range(band_start, band_end, TILE_M):
        rows = (first + tl.arange(0, TILE_M)).to(tl.int64)
        row_mask = rows < band_end
        x = x_next.to(tl.float32)
        dy = dy_next.to(tl.float32)
        x_next, dy_next = load_tiles(X, DY, rows + TILE_M, rows + TILE_M < band_end, cols, col_mask, stride_x,
                                     stride_dy, True)
        if NEED_DW:
            mean, rstd = row_stats(MEAN, RSTD, rows, row_mask, TILE_M, IS_RMS)
            x_hat = x_hat_of(x, mean, rstd, row_mask[:, None] & col_mask[None, :], IS_RMS)
            dw_acc += tl.sum(dy * x_hat, axis=0)
        if NEED_DB:
            db_acc += tl.sum(dy, axis=0)
    store_partial_row(DW_PARTIAL, DB_PARTIAL, band, N, cols, col_mask, dw_acc, db_acc, NEED_DW, NEED_DB)
