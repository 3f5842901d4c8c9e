"""Triton kernels for LayerNorm and RMSNorm, forward and backward, with an optional fused residual add.

One family, switched by compile-time flags rather than copied:

- ``IS_RMS``: RMSNorm (no mean, no bias) instead of LayerNorm.
- ``HAS_RESIDUAL`` / ``STORE_RESIDUAL``: the pre-norm step ``r' = x + r``,
  ``y = norm(r')``; ``r'`` is written once and is what the backward reads.
- ``WEIGHT_OFFSET``: the gain is ``WEIGHT_OFFSET + weight``, added in float32
  at each weight load (Gemma's norms scale by ``1 + weight``); 0.0 compiles
  the add away.
- ``ROUND_BEFORE_WEIGHT`` (forward): x_hat is rounded to y's dtype before the
  gain multiplies it, and the product rounded again: Llama's order,
  ``weight * x_hat.to(dtype)``. Off, y is rounded once.
- ``SINGLE_CHUNK``: a row fits in registers (a ``[BLOCK_M, BLOCK_N]`` block
  holds ``BLOCK_M`` whole rows); otherwise a row is walked in chunks of
  ``BLOCK_N`` and its statistics are merged chunk by chunk.

float32 arithmetic inside, the input dtype outside; mean and rstd are saved
in float32 so the backward never recomputes a reduction over x. The
backward's dweight / dbias are summed without atomics: two runs give
bitwise-identical gradients.

The entry kernels, which :mod:`layernorm.kernels.launch` launches, pick a path
by those flags; each path is a module of its own, built from the helpers of
:mod:`layernorm.kernels.shared`:

- forward: :mod:`.forward_rows` (rows in registers, optionally a persistent
  grid), :mod:`.forward_chunked`;
- backward: :mod:`.backward_rows`, :mod:`.backward_chunked` (and
  :mod:`.backward_held`, its partial sums in registers), the split
  backward's two kernels in :mod:`.backward_split`, and the paired
  backward's kernel in :mod:`.backward_paired`; then :mod:`.partials` sums
  the dweight / dbias partial rows.

The math is in :mod:`layernorm.reference`; the paths cite it.
"""

import triton
import triton.language as tl

from .backward_chunked import backward_chunked
from .backward_held import backward_held
from .backward_rows import backward_rows
from .forward_chunked import forward_chunked
from .forward_rows import forward_rows, forward_rows_persistent

# Entry kernels of their own, re-exported: layernorm.kernels.launch launches every kernel from here.
from .backward_paired import norm_bwd_paired_kernel  # noqa: F401
from .backward_split import norm_bwd_row_sums_kernel, norm_bwd_tiles_kernel  # noqa: F401
from .partials import sum_partials_kernel  # noqa: F401


@triton.jit
def norm_fwd_kernel(
    X, R, Y, R_OUT, W, B, MEAN, RSTD,
    stride_x, stride_r, stride_y, stride_r_out,
    M, N, eps, num_programs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE_CHUNK: tl.constexpr, PERSISTENT: tl.constexpr,
    IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, STORE_RESIDUAL: tl.constexpr, WEIGHT_OFFSET: tl.constexpr = 0.0,
    ROUND_BEFORE_WEIGHT: tl.constexpr = False,
):
    """y = norm(x [+ r]) for BLOCK_M rows (or, ``PERSISTENT``, for the row blocks pid, pid + G, ...);
    saves mean (LayerNorm) and rstd per row."""
    if SINGLE_CHUNK:
        if PERSISTENT:
            forward_rows_persistent(X, R, Y, R_OUT, W, B, MEAN, RSTD, stride_x, stride_r, stride_y, stride_r_out,
                                    M, N, eps, num_programs, BLOCK_M, BLOCK_N, IS_RMS, HAS_WEIGHT, HAS_BIAS,
                                    HAS_RESIDUAL, STORE_RESIDUAL, WEIGHT_OFFSET, ROUND_BEFORE_WEIGHT)
        else:
            forward_rows(X, R, Y, R_OUT, W, B, MEAN, RSTD, stride_x, stride_r, stride_y, stride_r_out, M, N, eps,
                         BLOCK_M, BLOCK_N, IS_RMS, HAS_WEIGHT, HAS_BIAS, HAS_RESIDUAL, STORE_RESIDUAL, WEIGHT_OFFSET,
                         ROUND_BEFORE_WEIGHT)
    elif PERSISTENT:
        for block in range(tl.program_id(0), tl.cdiv(M, BLOCK_M), num_programs):
            forward_chunked(X, R, Y, R_OUT, W, B, MEAN, RSTD, stride_x, stride_r, stride_y, stride_r_out, M, N, eps,
                            block, BLOCK_M, BLOCK_N, IS_RMS, HAS_WEIGHT, HAS_BIAS, HAS_RESIDUAL, STORE_RESIDUAL,
                            WEIGHT_OFFSET, ROUND_BEFORE_WEIGHT)
    else:
        forward_chunked(X, R, Y, R_OUT, W, B, MEAN, RSTD, stride_x, stride_r, stride_y, stride_r_out, M, N, eps,
                        tl.program_id(0), BLOCK_M, BLOCK_N, IS_RMS, HAS_WEIGHT, HAS_BIAS, HAS_RESIDUAL, STORE_RESIDUAL,
                        WEIGHT_OFFSET, ROUND_BEFORE_WEIGHT)


@triton.jit
def norm_bwd_kernel(
    DY, X, DRES, DX, W, MEAN, RSTD, DW_PARTIAL, DB_PARTIAL,
    stride_dy, stride_x, stride_dres, stride_dx,
    M, N, num_programs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE_CHUNK: tl.constexpr,
    IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, NEED_DW: tl.constexpr, NEED_DB: tl.constexpr,
    HAS_DRES: tl.constexpr, LEAN: tl.constexpr, WEIGHT_OFFSET: tl.constexpr = 0.0,
    HOLD_PARTIALS: tl.constexpr = False, NUM_CHUNKS: tl.constexpr = 1, UNROLL: tl.constexpr = True,
):
    """dx for the row blocks pid, pid + G, ...; one partial row of dweight / dbias per program.

    With x_hat and g = weight * dy (reference.layer_norm_backward)::

        LayerNorm: dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))
        RMSNorm:   dx = rstd * (g - x_hat * mean(g * x_hat))
        dweight = sum over rows of dy * x_hat;  dbias = sum over rows of dy.

    ``X`` is the normalised input (r' for the fused add); ``DRES`` the
    gradient reaching r' directly, added to dx. ``NEED_DW`` / ``NEED_DB``: the
    parameter gradients are wanted (frozen parameters cost nothing).
    ``HOLD_PARTIALS``: chunked rows whose partial sums stay in registers
    (``NUM_CHUNKS`` chunks cover a row; ``UNROLL``: the chunks' loop unrolled).
    """
    if SINGLE_CHUNK:
        backward_rows(DY, X, DRES, DX, W, MEAN, RSTD, DW_PARTIAL, DB_PARTIAL, stride_dy, stride_x, stride_dres,
                      stride_dx, M, N, num_programs, BLOCK_M, BLOCK_N, IS_RMS, HAS_WEIGHT, NEED_DW, NEED_DB, HAS_DRES,
                      LEAN, WEIGHT_OFFSET)
    elif HOLD_PARTIALS:
        backward_held(DY, X, DRES, DX, W, MEAN, RSTD, DW_PARTIAL, DB_PARTIAL, stride_dy, stride_x, stride_dres,
                      stride_dx, M, N, num_programs, BLOCK_M, BLOCK_N, NUM_CHUNKS, UNROLL, IS_RMS, HAS_WEIGHT,
                      NEED_DW, NEED_DB, HAS_DRES, WEIGHT_OFFSET)
    else:
        backward_chunked(DY, X, DRES, DX, W, MEAN, RSTD, DW_PARTIAL, DB_PARTIAL, stride_dy, stride_x, stride_dres,
                         stride_dx, M, N, tl.program_id(0), num_programs, BLOCK_M, BLOCK_N, IS_RMS, HAS_WEIGHT,
                         NEED_DW, NEED_DB, HAS_DRES, WEIGHT_OFFSET)
