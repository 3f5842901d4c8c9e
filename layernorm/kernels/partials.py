"""The sum of the backward's dweight / dbias partial rows, in a fixed order.

The backward programs each write their partial sums to a private row of a
float32 buffer rather than adding them into dweight / dbias with atomics;
this kernel sums those rows in the same order every time, so two runs give
bitwise-identical gradients.
"""

import triton
import triton.language as tl


@triton.jit
def sum_partials_kernel(
    DW_PARTIAL, DB_PARTIAL, DW, DB, num_partials, N,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """dweight[n] = sum over programs p of DW_PARTIAL[p, n], in a fixed order (likewise dbias)."""
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    parts = tl.arange(0, BLOCK_P)
    dw = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    db = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    for start in range(0, num_partials, BLOCK_P):
        p = start + parts
        mask = (p < num_partials)[:, None] & col_mask[None, :]
        offsets = p.to(tl.int64)[:, None] * N + cols[None, :]
        if HAS_WEIGHT:
            dw += tl.load(DW_PARTIAL + offsets, mask=mask, other=0.0)
        if HAS_BIAS:
            db += tl.load(DB_PARTIAL + offsets, mask=mask, other=0.0)
    if HAS_WEIGHT:
        tl.store(DW + cols, tl.sum(dw, axis=0).to(DW.dtype.element_ty), mask=col_mask)
    if HAS_BIAS:
        tl.store(DB + cols, tl.sum(db, axis=0).to(DB.dtype.element_ty), mask=col_mask)
