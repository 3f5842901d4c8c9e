"""The forward on rows too wide for registers: each row is walked in chunks of ``BLOCK_N`` columns.

Two passes over the row. The first merges each chunk's (count, mean, M2) into
the running ones, Chan et al.'s pairwise update, which stays exact when the
mean is large (1e4 + randn), where E[x^2] - E[x]^2 would lose every digit.
The second normalises and writes, walking the chunks last first: the chunks
read most recently (or, for the fused add, r' just written) are the likeliest
still in L2. Both passes load the next chunk before working on this one
(double buffering).

A program normalises one row block, ``block``; the entry kernel passes its
program id, or, on a persistent grid, walks the row blocks pid, pid + G, ...:
at most G row blocks are then in flight, few enough (one or two per SM) for
the second pass to find them still in L2 when rows are as wide as 65536.
"""

import triton
import triton.language as tl

from .shared import apply_gain, in_row, load_tiles, row_offsets, rstd_of


@triton.jit
def forward_chunked(
    X, R, Y, R_OUT, W, B, MEAN, RSTD, stride_x, stride_r, stride_y, stride_r_out, M, N, eps, block,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_RESIDUAL: tl.constexpr, WEIGHT_OFFSET: tl.constexpr,
    ROUND_BEFORE_WEIGHT: tl.constexpr,
):
    """y = norm(x [+ r]) of the BLOCK_M rows of row block ``block``, chunk by chunk."""
    rows = row_offsets(block, BLOCK_M)
    row_mask = rows < M
    cols = tl.arange(0, BLOCK_N)

    # Pass 1: statistics, merging chunk (count, mean, M2) into the running ones.
    mean = tl.zeros([BLOCK_M], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_M], dtype=tl.float32)
    x_next, r_next = load_tiles(X, R, rows, row_mask, cols, in_row(cols, N), stride_x, stride_r, HAS_RESIDUAL)
    for start in range(0, N, BLOCK_N):
        c = start + cols
        mask = row_mask[:, None] & (c < N)[None, :]
        x = x_next.to(tl.float32)
        if HAS_RESIDUAL:
            x += r_next.to(tl.float32)
        x_next, r_next = load_tiles(X, R, rows, row_mask, c + BLOCK_N, in_row(c + BLOCK_N, N), stride_x, stride_r,
                                    HAS_RESIDUAL)
        if STORE_RESIDUAL:
            x_stored = x.to(R_OUT.dtype.element_ty)
            tl.store(R_OUT + rows[:, None] * stride_r_out + c[None, :], x_stored, mask=mask)
            x = x_stored.to(tl.float32)
        if IS_RMS:
            m2 += tl.sum(x * x, axis=1)
        else:
            n_a = start * 1.0  # elements merged so far
            n_b = tl.sum((c < N).to(tl.float32), axis=0)  # elements in this chunk
            mean_b = tl.sum(x, axis=1) / n_b
            xc = tl.where(mask, x - mean_b[:, None], 0.0)
            m2_b = tl.sum(xc * xc, axis=1)
            delta = mean_b - mean
            n_ab = n_a + n_b
            mean += delta * (n_b / n_ab)
            m2 += m2_b + delta * delta * (n_a * n_b / n_ab)
    rstd = rstd_of(m2 / N, eps)
    tl.store(RSTD + rows, rstd, mask=row_mask)
    if not IS_RMS:
        tl.store(MEAN + rows, mean, mask=row_mask)

    # Pass 2: normalise and write, last chunk first; with the fused add, from r' as stored.
    num_chunks = (N + BLOCK_N - 1) // BLOCK_N
    last = (num_chunks - 1) * BLOCK_N + cols
    if STORE_RESIDUAL:
        x_next, r_next = load_tiles(R_OUT, R_OUT, rows, row_mask, last, in_row(last, N), stride_r_out, stride_r_out,
                                    False)
    else:
        x_next, r_next = load_tiles(X, R, rows, row_mask, last, in_row(last, N), stride_x, stride_r, HAS_RESIDUAL)
    for i in range(0, num_chunks):
        c = (num_chunks - 1 - i) * BLOCK_N + cols
        col_mask = c < N
        mask = row_mask[:, None] & col_mask[None, :]
        x = x_next.to(tl.float32)
        if HAS_RESIDUAL and not STORE_RESIDUAL:
            x += r_next.to(tl.float32)
        if STORE_RESIDUAL:
            x_next, r_next = load_tiles(R_OUT, R_OUT, rows, row_mask, c - BLOCK_N, in_row(c - BLOCK_N, N),
                                        stride_r_out, stride_r_out, False)
        else:
            x_next, r_next = load_tiles(X, R, rows, row_mask, c - BLOCK_N, in_row(c - BLOCK_N, N), stride_x,
                                        stride_r, HAS_RESIDUAL)
        if IS_RMS:
            y = x * rstd[:, None]
        else:
            y = (x - mean[:, None]) * rstd[:, None]
        if HAS_WEIGHT:
            y = apply_gain(y, W, c, col_mask, Y, WEIGHT_OFFSET, ROUND_BEFORE_WEIGHT)
        if HAS_BIAS:
            y += tl.load(B + c, mask=col_mask, other=0.0).to(tl.float32)[None, :]
        tl.store(Y + rows[:, None] * stride_y + c[None, :], y.to(Y.dtype.element_ty), mask=mask)
