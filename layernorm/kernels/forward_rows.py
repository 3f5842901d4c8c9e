"""The forward on rows held in registers: a ``[BLOCK_M, BLOCK_N]`` block holds ``BLOCK_M`` whole rows.

The variance is two-pass, the sum of squared deviations from the mean, both
read from registers: it stays exact when the mean is large (1e4 + randn),
where E[x^2] - E[x]^2 would lose every digit.

:func:`forward_rows` normalises one row block per program.
:func:`forward_rows_persistent` serves the widest register rows, which leave
room for one program per SM, so nothing would overlap one block's loads with
its reductions: each program walks the row blocks pid, pid + G, ..., loading
the next block (in its input dtype) before normalising this one.
"""

import triton
import triton.language as tl

from .shared import apply_gain, load_tiles, row_offsets, rstd_of


@triton.jit
def _fwd_rows(x, rows, row_mask, cols, Y, R_OUT, W, B, MEAN, RSTD, stride_y, stride_r_out, N, eps,
              IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
              STORE_RESIDUAL: tl.constexpr, WEIGHT_OFFSET: tl.constexpr, ROUND_BEFORE_WEIGHT: tl.constexpr):
    """Normalise whole rows held in registers (x: float32, [rows, BLOCK_N]) and store y, r', stats."""
    mask = row_mask[:, None] & (cols < N)[None, :]
    if STORE_RESIDUAL:
        # normalise the value the backward will read back: r' as stored
        x_stored = x.to(R_OUT.dtype.element_ty)
        tl.store(R_OUT + rows[:, None] * stride_r_out + cols[None, :], x_stored, mask=mask)
        x = x_stored.to(tl.float32)
    if IS_RMS:
        # rstd = 1 / sqrt(E[x^2] + eps);  x_hat = x * rstd
        xc = x
    else:
        # mean = E[x];  var = E[(x - mean)^2];  x_hat = (x - mean) * rstd
        mean = tl.sum(x, axis=1) / N
        xc = tl.where(mask, x - mean[:, None], 0.0)
        tl.store(MEAN + rows, mean, mask=row_mask)
    rstd = rstd_of(tl.sum(xc * xc, axis=1) / N, eps)
    tl.store(RSTD + rows, rstd, mask=row_mask)
    y = xc * rstd[:, None]
    if HAS_WEIGHT:
        y = apply_gain(y, W, cols, cols < N, Y, WEIGHT_OFFSET, ROUND_BEFORE_WEIGHT)
    if HAS_BIAS:
        y += tl.load(B + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def forward_rows(
    X, R, Y, R_OUT, W, B, MEAN, RSTD, stride_x, stride_r, stride_y, stride_r_out, M, N, eps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_RESIDUAL: tl.constexpr, WEIGHT_OFFSET: tl.constexpr,
    ROUND_BEFORE_WEIGHT: tl.constexpr,
):
    """y = norm(x [+ r]) of this program's BLOCK_M rows."""
    rows = row_offsets(tl.program_id(0), BLOCK_M)
    row_mask = rows < M
    cols = tl.arange(0, BLOCK_N)
    x, r = load_tiles(X, R, rows, row_mask, cols, cols < N, stride_x, stride_r, HAS_RESIDUAL)
    x = x.to(tl.float32)
    if HAS_RESIDUAL:
        x += r.to(tl.float32)
    _fwd_rows(x, rows, row_mask, cols, Y, R_OUT, W, B, MEAN, RSTD, stride_y, stride_r_out, N, eps,
              IS_RMS, HAS_WEIGHT, HAS_BIAS, STORE_RESIDUAL, WEIGHT_OFFSET, ROUND_BEFORE_WEIGHT)


@triton.jit
def forward_rows_persistent(
    X, R, Y, R_OUT, W, B, MEAN, RSTD, stride_x, stride_r, stride_y, stride_r_out, M, N, eps, num_programs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_RESIDUAL: tl.constexpr, WEIGHT_OFFSET: tl.constexpr,
    ROUND_BEFORE_WEIGHT: tl.constexpr,
):
    """y = norm(x [+ r]) of the row blocks pid, pid + G, ... (G = num_programs)."""
    cols = tl.arange(0, BLOCK_N)
    pid = tl.program_id(0)
    num_blocks = (M + BLOCK_M - 1) // BLOCK_M
    rows_next = row_offsets(pid, BLOCK_M)
    x_next, r_next = load_tiles(X, R, rows_next, rows_next < M, cols, cols < N, stride_x, stride_r, HAS_RESIDUAL)
    for block in range(pid, num_blocks, num_programs):
        rows = row_offsets(block, BLOCK_M)
        x = x_next.to(tl.float32)
        if HAS_RESIDUAL:
            x += r_next.to(tl.float32)
        rows_next = row_offsets(block + num_programs, BLOCK_M)
        x_next, r_next = load_tiles(X, R, rows_next, rows_next < M, cols, cols < N, stride_x, stride_r,
                                    HAS_RESIDUAL)
        _fwd_rows(x, rows, rows < M, cols, Y, R_OUT, W, B, MEAN, RSTD, stride_y, stride_r_out, N, eps,
                  IS_RMS, HAS_WEIGHT, HAS_BIAS, STORE_RESIDUAL, WEIGHT_OFFSET, ROUND_BEFORE_WEIGHT)
