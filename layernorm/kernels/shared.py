"""The ``@triton.jit`` helpers that more than one of the kernels' paths calls.

Triton inlines them where called, and keeps each call's inlined scope in the
line information it compiles with (``$L__tmp`` labels in the PTX). ptxas
schedules and allocates registers around those labels, so how the helpers
nest is part of what a kernel compiles to: a helper that wraps one more load,
or a block of arithmetic moved into a helper, changes the SASS of some
launches (see ``scripts/kernel_fingerprint.py``, which compares the code
compiled for sm_90 before and after a change). That is why the loaders
below are still one per shape of load, as they were written before the
kernels were split by path.
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
def load_chunk(X, DY, rows, row_mask, c, stride_x, stride_dy, N):
    """x, dy (input dtype) of one chunk of columns c of the rows; columns outside [0, N) masked off
    (a chunk loaded ahead, by double buffering, may lie past either end of the row)."""
    mask = row_mask[:, None] & ((c >= 0) & (c < N))[None, :]
    x = tl.load(X + rows[:, None] * stride_x + c[None, :], mask=mask, other=0.0)
    dy = tl.load(DY + rows[:, None] * stride_dy + c[None, :], mask=mask, other=0.0)
    return x, dy


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
