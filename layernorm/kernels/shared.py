"""The ``@triton.jit`` helpers that more than one of the kernels' paths calls.

Every path reads its inputs through one loader, :func:`load_tiles`; what
differs between paths (a row block or a chunk of columns, loaded now or one
step ahead) is only which rows and columns they pass it. The backward's
register and split paths compute x_hat through :func:`x_hat_of`.

Triton inlines these helpers where called, and keeps each call's inlined
scope in the line information it compiles with (``$L__tmp`` labels in the
PTX), which ptxas schedules around: how the helpers nest is part of what a
kernel compiles to, down to the registers it allocates.
``scripts/kernel_fingerprint.py`` compares the code compiled for sm_90
(registers, spills, SASS) of every launch before and after such a change.
"""

import triton
import triton.language as tl


@triton.jit
def row_offsets(block, BLOCK_M: tl.constexpr):
    """Rows of one row block, as int64 so row * stride cannot overflow."""
    return (block * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)


@triton.jit
def load_gain(W, c, mask, WEIGHT_OFFSET: tl.constexpr):
    """The gain in float32: weight, or WEIGHT_OFFSET + weight (Gemma's norms scale by 1 + weight;
    the offset is added here, in float32, so the stored weight stays as the model keeps it)."""
    w = tl.load(W + c, mask=mask, other=0.0).to(tl.float32)
    if WEIGHT_OFFSET != 0.0:
        w += WEIGHT_OFFSET
    return w


@triton.jit
def apply_gain(x_hat, W, c, col_mask, Y, WEIGHT_OFFSET: tl.constexpr, ROUND_BEFORE_WEIGHT: tl.constexpr):
    """x_hat (float32) times the gain of columns c; with ``ROUND_BEFORE_WEIGHT``, x_hat rounded to
    y's dtype first, as ``weight * x_hat.to(dtype)`` computes it (a no-op for float32 y)."""
    if ROUND_BEFORE_WEIGHT:
        x_hat = x_hat.to(Y.dtype.element_ty).to(tl.float32)
    return x_hat * load_gain(W, c, col_mask, WEIGHT_OFFSET)[None, :]


@triton.jit
def rstd_of(var, eps):
    """1 / sqrt(var + eps); NaN, as PyTorch gives, where the variance overflowed float32 (rows of
    values near 1e19 or more), rather than the 0 that would silently zero the row."""
    rstd = 1.0 / tl.sqrt(var + eps)
    return tl.where(rstd > 0.0, rstd, float("nan"))


@triton.jit
def row_stats(MEAN, RSTD, rows, row_mask, BLOCK_M: tl.constexpr, IS_RMS: tl.constexpr):
    """The forward's saved mean (zeros for RMSNorm, which has none) and rstd of the rows."""
    rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
    if IS_RMS:
        mean = tl.zeros([BLOCK_M], dtype=tl.float32)
    else:
        mean = tl.load(MEAN + rows, mask=row_mask, other=0.0)
    return mean, rstd


@triton.jit
def load_tiles(A, B, rows, row_mask, c, col_mask, stride_a, stride_b, HAS_B: tl.constexpr):
    """The tiles of A and B (each in its own dtype) at rows x columns c, zero where row_mask x
    col_mask is off; without ``HAS_B`` B's tile is A's again, loaded once (a forward without a
    residual, which adds nothing)."""
    mask = row_mask[:, None] & col_mask[None, :]
    a = tl.load(A + rows[:, None] * stride_a + c[None, :], mask=mask, other=0.0)
    if HAS_B:
        b = tl.load(B + rows[:, None] * stride_b + c[None, :], mask=mask, other=0.0)
    else:
        b = a
    return a, b


@triton.jit
def in_row(c, N):
    """Which columns c lie in the row: a chunk loaded ahead may lie past either end of it."""
    return (c >= 0) & (c < N)


@triton.jit
def x_hat_of(x, mean, rstd, mask, IS_RMS: tl.constexpr):
    """x_hat = (x - mean) * rstd, zero outside the mask; RMSNorm's x * rstd needs no mask (x was
    loaded as zero there)."""
    if IS_RMS:
        x_hat = x * rstd[:, None]
    else:
        x_hat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
    return x_hat


@triton.jit
def chunk_row_sums(x, dy, mean, rstd, mask, W, c, col_mask, HAS_WEIGHT: tl.constexpr,
                   WEIGHT_OFFSET: tl.constexpr):
    """This chunk's share of the two row sums dx needs: sum(g * x_hat) and sum(g), g = weight * dy
    (x and dy in float32; columns outside the row masked to zero)."""
    x_hat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
    if HAS_WEIGHT:
        g = dy * load_gain(W, c, col_mask, WEIGHT_OFFSET)[None, :]
    else:
        g = dy
    return tl.sum(g * x_hat, axis=1), tl.sum(g, axis=1)


@triton.jit
def chunked_row_sums(X, DY, W, rows, row_mask, mean, rstd, cols, N, stride_x, stride_dy, BLOCK_N: tl.constexpr,
                     HAS_WEIGHT: tl.constexpr, WEIGHT_OFFSET: tl.constexpr):
    """c1 = mean(g * x_hat) and c2 = mean(g) of the rows, walked in chunks of BLOCK_N columns
    (``cols``: 0..BLOCK_N); each chunk's loads are issued before the previous one is reduced."""
    sum_gx = tl.zeros_like(mean)
    sum_g = tl.zeros_like(mean)
    x_next, dy_next = load_tiles(X, DY, rows, row_mask, cols, in_row(cols, N), stride_x, stride_dy, True)
    for start in range(0, N, BLOCK_N):
        c = start + cols
        col_mask = c < N
        mask = row_mask[:, None] & col_mask[None, :]
        x = x_next.to(tl.float32)
        dy = dy_next.to(tl.float32)
        x_next, dy_next = load_tiles(X, DY, rows, row_mask, c + BLOCK_N, in_row(c + BLOCK_N, N), stride_x,
                                     stride_dy, True)
        chunk_gx, chunk_g = chunk_row_sums(x, dy, mean, rstd, mask, W, c, col_mask, HAS_WEIGHT, WEIGHT_OFFSET)
        sum_gx += chunk_gx
        sum_g += chunk_g
    return sum_gx / N, sum_g / N


@triton.jit
def store_dx(g, x_hat, c1, c2, rstd, rows, c, mask, DRES, DX, stride_dres, stride_dx,
             IS_RMS: tl.constexpr, HAS_DRES: tl.constexpr):
    """dx = rstd * (g - x_hat * c1 - c2) (RMSNorm: no c2), plus the gradient reaching r' directly,
    stored in dx's dtype for the rows x columns c of the block."""
    if IS_RMS:
        dx = (g - x_hat * c1[:, None]) * rstd[:, None]
    else:
        dx = (g - x_hat * c1[:, None] - c2[:, None]) * rstd[:, None]
    if HAS_DRES:
        dx += tl.load(DRES + rows[:, None] * stride_dres + c[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(DX + rows[:, None] * stride_dx + c[None, :], dx.to(DX.dtype.element_ty), mask=mask)


@triton.jit
def store_partial_row(DW_PARTIAL, DB_PARTIAL, row, N, cols, col_mask, dw_acc, db_acc, NEED_DW: tl.constexpr,
                      NEED_DB: tl.constexpr):
    """Columns ``cols`` of partial row ``row`` of dweight / dbias (float32, N wide), written once."""
    partial_row = row.to(tl.int64) * N
    if NEED_DW:
        tl.store(DW_PARTIAL + partial_row + cols, dw_acc, mask=col_mask)
    if NEED_DB:
        tl.store(DB_PARTIAL + partial_row + cols, db_acc, mask=col_mask)
