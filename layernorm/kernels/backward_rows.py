"""The backward on rows held in registers, over a persistent grid.

Each program walks the row blocks pid, pid + G, ... and sums its dweight /
dbias partials in registers over all of them, then writes them once as its
own row of a float32 buffer (``sum_partials_kernel`` sums those rows). The
loop is double-buffered by hand: the next row block's loads are issued before
this one's reductions, since registers allow only one or two programs per SM.
``LEAN`` rows (the widest register rows) skip that, and reload the weight per
block (an L2 hit) instead of holding it: each saves a register per element,
which they lack.
"""

import triton
import triton.language as tl

from .shared import load_gain, load_tiles, row_offsets, row_stats, store_dx, x_hat_of


@triton.jit
def _bwd_block_loads(X, DY, MEAN, RSTD, block, stride_x, stride_dy, M, N, cols, BLOCK_M: tl.constexpr,
                     IS_RMS: tl.constexpr):
    """x, dy (input dtype), mean, rstd of one row block; all masked off past the last row."""
    rows = row_offsets(block, BLOCK_M)
    row_mask = rows < M
    x, dy = load_tiles(X, DY, rows, row_mask, cols, cols < N, stride_x, stride_dy, True)
    mean, rstd = row_stats(MEAN, RSTD, rows, row_mask, BLOCK_M, IS_RMS)
    return x, dy, mean, rstd


@triton.jit
def backward_rows(
    DY, X, DRES, DX, W, MEAN, RSTD, DW_PARTIAL, DB_PARTIAL, stride_dy, stride_x, stride_dres, stride_dx,
    M, N, num_programs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    NEED_DW: tl.constexpr, NEED_DB: tl.constexpr, HAS_DRES: tl.constexpr, LEAN: tl.constexpr,
    WEIGHT_OFFSET: tl.constexpr,
):
    """dx of the row blocks pid, pid + G, ... (G = num_programs); this program's partial row of
    dweight / dbias."""
    pid = tl.program_id(0)
    num_blocks = (M + BLOCK_M - 1) // BLOCK_M
    cols = tl.arange(0, BLOCK_N)
    partial_row = pid.to(tl.int64) * N
    col_mask = cols < N
    if HAS_WEIGHT and not LEAN:
        w = load_gain(W, cols, col_mask, WEIGHT_OFFSET)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    # Loaded ahead, kept in the input dtype until used.
    if not LEAN:
        x_next, dy_next, mean_next, rstd_next = _bwd_block_loads(
            X, DY, MEAN, RSTD, pid, stride_x, stride_dy, M, N, cols, BLOCK_M, IS_RMS)
    for block in range(pid, num_blocks, num_programs):
        rows = row_offsets(block, BLOCK_M)
        row_mask = rows < M
        mask = row_mask[:, None] & col_mask[None, :]
        if LEAN:
            x, dy, mean, rstd = _bwd_block_loads(X, DY, MEAN, RSTD, block, stride_x, stride_dy, M, N, cols,
                                                 BLOCK_M, IS_RMS)
            x = x.to(tl.float32)
            dy = dy.to(tl.float32)
            if HAS_WEIGHT:
                w = load_gain(W, cols, col_mask, WEIGHT_OFFSET)
        else:
            x = x_next.to(tl.float32)
            dy = dy_next.to(tl.float32)
            mean = mean_next
            rstd = rstd_next
            x_next, dy_next, mean_next, rstd_next = _bwd_block_loads(
                X, DY, MEAN, RSTD, block + num_programs, stride_x, stride_dy, M, N, cols, BLOCK_M, IS_RMS)
        x_hat = x_hat_of(x, mean, rstd, mask, IS_RMS)
        g = dy * w[None, :] if HAS_WEIGHT else dy
        c1 = tl.sum(g * x_hat, axis=1) / N
        if IS_RMS:
            c2 = c1  # unused
        else:
            c2 = tl.sum(g, axis=1) / N
        store_dx(g, x_hat, c1, c2, rstd, rows, cols, mask, DRES, DX, stride_dres, stride_dx, IS_RMS, HAS_DRES)
        if NEED_DW:
            dw_acc += tl.sum(dy * x_hat, axis=0)
        if NEED_DB:
            db_acc += tl.sum(dy, axis=0)
    if NEED_DW:
        tl.store(DW_PARTIAL + partial_row + cols, dw_acc, mask=col_mask)
    if NEED_DB:
        tl.store(DB_PARTIAL + partial_row + cols, db_acc, mask=col_mask)
