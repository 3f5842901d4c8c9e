"""The chunked backward with its dweight / dbias partial sums held in registers (rows up to 16384 wide).

The chunked backward (:mod:`.backward_chunked`) adds each row block's
dweight / dbias sums into the program's row of a float32 buffer in memory: a
read and a write of 8 bytes per column for each block, as many bytes as the
block's own rows when a block holds one or two of them. Here the program
holds those partial sums in registers over all its blocks, as the register
path does, and writes them once at the end; the rows themselves are still
walked in chunks, so only one chunk of x and dy is in registers at a time.

The price is registers for the sums of every column of the row
(2 x ``NUM_CHUNKS`` x ``BLOCK_N`` floats over the program's threads), which
bounds the width: 16384 columns at 16 warps take 64 registers a thread. The
second pass over a row block re-reads its chunks, which the first pass has
just brought through L1 and L2 (a row of 16384 bf16 columns is 64 KB of x and
dy).

The sums live in a ``[NUM_CHUNKS, BLOCK_N]`` tensor, chunk j in its row j
(each thread holds all the rows of its columns). With ``UNROLL`` the second
pass is unrolled (``static_range``), so the row a chunk adds to is known
when compiling and the select that adds it to that row alone costs nothing;
but the unrolled loads stay live longer, and spill in the float32 rows of
16384. Without, a loop: it selects over all the rows for each chunk, an
addition and a select per held sum per chunk, which float32 rows (twice the
bytes per column) can better afford.
"""

import triton
import triton.language as tl

from .shared import chunked_row_sums, load_gain, load_tiles, row_offsets, row_stats, store_dx, x_hat_of


@triton.jit
def _chunk_dx_and_sums(DY, X, DRES, DX, W, stride_dy, stride_x, stride_dres, stride_dx, rows, row_mask, cols,
                       chunk_ids, j, N, mean, rstd, c1, c2, dw_acc, db_acc, BLOCK_N: tl.constexpr,
                       IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, NEED_DW: tl.constexpr,
                       NEED_DB: tl.constexpr, HAS_DRES: tl.constexpr, WEIGHT_OFFSET: tl.constexpr):
    """dx of chunk j of the rows, and the chunk's dweight / dbias sums added to row j of the held
    sums (a select: free when j is a constexpr, a pass over all rows of the sums when not)."""
    c = j * BLOCK_N + cols
    col_mask = c < N
    mask = row_mask[:, None] & col_mask[None, :]
    x, dy = load_tiles(X, DY, rows, row_mask, c, col_mask, stride_x, stride_dy, True)
    x = x.to(tl.float32)
    dy = dy.to(tl.float32)
    x_hat = x_hat_of(x, mean, rstd, mask, IS_RMS)
    g = dy * load_gain(W, c, col_mask, WEIGHT_OFFSET)[None, :] if HAS_WEIGHT else dy
    store_dx(g, x_hat, c1, c2, rstd, rows, c, mask, DRES, DX, stride_dres, stride_dx, IS_RMS, HAS_DRES)
    in_chunk = chunk_ids[:, None] == j
    if NEED_DW:
        dw_acc = tl.where(in_chunk, dw_acc + tl.sum(dy * x_hat, axis=0)[None, :], dw_acc)
    if NEED_DB:
        db_acc = tl.where(in_chunk, db_acc + tl.sum(dy, axis=0)[None, :], db_acc)
    return dw_acc, db_acc


@triton.jit
def backward_held(
    DY, X, DRES, DX, W, MEAN, RSTD, DW_PARTIAL, DB_PARTIAL, stride_dy, stride_x, stride_dres, stride_dx,
    M, N, num_programs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NUM_CHUNKS: tl.constexpr, UNROLL: tl.constexpr,
    IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, NEED_DW: tl.constexpr, NEED_DB: tl.constexpr,
    HAS_DRES: tl.constexpr, WEIGHT_OFFSET: tl.constexpr,
):
    """dx of the row blocks pid, pid + G, ... (G = num_programs), chunk by chunk; this program's
    partial row of dweight / dbias, summed in registers. ``NUM_CHUNKS`` (a power of two) chunks of
    ``BLOCK_N`` columns cover the row; ``UNROLL``: the second pass unrolled (fewer instructions,
    more registers live)."""
    pid = tl.program_id(0)
    num_blocks = (M + BLOCK_M - 1) // BLOCK_M
    cols = tl.arange(0, BLOCK_N)
    chunk_ids = tl.arange(0, NUM_CHUNKS)
    dw_acc = tl.zeros([NUM_CHUNKS, BLOCK_N], dtype=tl.float32)
    db_acc = tl.zeros([NUM_CHUNKS, BLOCK_N], dtype=tl.float32)
    for block in range(pid, num_blocks, num_programs):
        rows = row_offsets(block, BLOCK_M)
        row_mask = rows < M
        mean, rstd = row_stats(MEAN, RSTD, rows, row_mask, BLOCK_M, IS_RMS)
        c1, c2 = chunked_row_sums(X, DY, W, rows, row_mask, mean, rstd, cols, N, stride_x, stride_dy,
                                  BLOCK_N, HAS_WEIGHT, WEIGHT_OFFSET)
        # dx, and the sums of this block, last chunk first (the likeliest still in L1)
        if UNROLL:
            for i in tl.static_range(NUM_CHUNKS):
                dw_acc, db_acc = _chunk_dx_and_sums(
                    DY, X, DRES, DX, W, stride_dy, stride_x, stride_dres, stride_dx, rows, row_mask, cols, chunk_ids,
                    NUM_CHUNKS - 1 - i, N, mean, rstd, c1, c2, dw_acc, db_acc, BLOCK_N, IS_RMS, HAS_WEIGHT, NEED_DW,
                    NEED_DB, HAS_DRES, WEIGHT_OFFSET)
        else:
            for i in range(NUM_CHUNKS):
                dw_acc, db_acc = _chunk_dx_and_sums(
                    DY, X, DRES, DX, W, stride_dy, stride_x, stride_dres, stride_dx, rows, row_mask, cols, chunk_ids,
                    NUM_CHUNKS - 1 - i, N, mean, rstd, c1, c2, dw_acc, db_acc, BLOCK_N, IS_RMS, HAS_WEIGHT, NEED_DW,
                    NEED_DB, HAS_DRES, WEIGHT_OFFSET)
    columns = chunk_ids[:, None] * BLOCK_N + cols[None, :]
    partial = pid.to(tl.int64) * N + columns
    if NEED_DW:
        tl.store(DW_PARTIAL + partial, dw_acc, mask=columns < N)
    if NEED_DB:
        tl.store(DB_PARTIAL + partial, db_acc, mask=columns < N)
