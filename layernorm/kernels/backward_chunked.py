"""The backward on rows too wide for registers: each row walked in chunks, over a persistent grid.

Each program walks the row blocks pid, pid + G, ...; for each, a first pass
over the row's chunks sums what dx needs (sum(g * x_hat), sum(g)), and a
second writes dx and adds the chunks' dweight / dbias sums into the program's
own row of a float32 buffer (read-modify-write; the program's first block
writes it fresh, so no memset launch is needed). No atomics: the partial rows
are summed in a fixed order afterwards (``sum_partials_kernel``). Both loops
load the next chunk before reducing this one (double buffering); the second
walks the chunks last first, as the forward does, so that the chunks of x and
dy read most recently, likeliest still in L2, come back first.
"""

import triton
import triton.language as tl

from .shared import chunked_row_sums, in_row, load_gain, load_tiles, row_offsets, row_stats, store_dx


@triton.jit
def backward_chunked(
    DY, X, DRES, DX, W, MEAN, RSTD, DW_PARTIAL, DB_PARTIAL, stride_dy, stride_x, stride_dres, stride_dx,
    M, N, pid, num_programs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    NEED_DW: tl.constexpr, NEED_DB: tl.constexpr, HAS_DRES: tl.constexpr, WEIGHT_OFFSET: tl.constexpr,
):
    """dx of the row blocks pid, pid + G, ... (G = num_programs), chunk by chunk; partial row pid
    of dweight / dbias. (The paired backward calls it for one block, with neither.)"""
    num_blocks = (M + BLOCK_M - 1) // BLOCK_M
    cols = tl.arange(0, BLOCK_N)
    partial_row = pid.to(tl.int64) * N
    for block in range(pid, num_blocks, num_programs):
        rows = row_offsets(block, BLOCK_M)
        row_mask = rows < M
        mean, rstd = row_stats(MEAN, RSTD, rows, row_mask, BLOCK_M, IS_RMS)
        # Pass 1: the two row sums that dx needs.
        c1, c2 = chunked_row_sums(X, DY, W, rows, row_mask, mean, rstd, cols, N, stride_x, stride_dy,
                                  BLOCK_N, HAS_WEIGHT, WEIGHT_OFFSET)
        # Pass 2: dx, and this program's partial rows of dweight / dbias, last chunk first.
        num_chunks = (N + BLOCK_N - 1) // BLOCK_N
        last = (num_chunks - 1) * BLOCK_N + cols
        x_next, dy_next = load_tiles(X, DY, rows, row_mask, last, in_row(last, N), stride_x, stride_dy, True)
        for i in range(0, num_chunks):
            c = (num_chunks - 1 - i) * BLOCK_N + cols
            col_mask = c < N
            mask = row_mask[:, None] & col_mask[None, :]
            x = x_next.to(tl.float32)
            dy = dy_next.to(tl.float32)
            x_next, dy_next = load_tiles(X, DY, rows, row_mask, c - BLOCK_N, in_row(c - BLOCK_N, N), stride_x,
                                         stride_dy, True)
            x_hat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
            if HAS_WEIGHT:
                g = dy * load_gain(W, c, col_mask, WEIGHT_OFFSET)[None, :]
            else:
                g = dy
            store_dx(g, x_hat, c1, c2, rstd, rows, c, mask, DRES, DX, stride_dres, stride_dx, IS_RMS, HAS_DRES)
            keep = col_mask & ((c * 0 + block) != pid)  # a tensor compare: the interpreter's block is an int
            if NEED_DW:
                dw = tl.load(DW_PARTIAL + partial_row + c, mask=keep, other=0.0)
                tl.store(DW_PARTIAL + partial_row + c, dw + tl.sum(dy * x_hat, axis=0), mask=col_mask)
            if NEED_DB:
                db = tl.load(DB_PARTIAL + partial_row + c, mask=keep, other=0.0)
                tl.store(DB_PARTIAL + partial_row + c, db + tl.sum(dy, axis=0), mask=col_mask)
