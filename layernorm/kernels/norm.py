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

Design trade-offs, in a line each:

- float32 arithmetic inside, the input dtype outside; mean and rstd are saved
  in float32 so the backward never recomputes a reduction over x.
- the variance is two-pass (sum of squared deviations from the mean) in the
  register path, and Chan's pairwise merge of per-chunk (mean, M2) in the
  chunked path: both stay exact when the mean is large (1e4 + randn), where
  E[x^2] - E[x]^2 would lose every digit.
- the backward runs a persistent grid: each program walks row blocks
  ``pid, pid + G, ...`` and keeps its dweight/dbias partial sums in registers
  (or, for chunked rows, in its own private row of a float32 buffer), then a
  second small kernel sums the G partial rows in a fixed order. No atomics:
  two runs give bitwise-identical gradients. Its loops are double-buffered by
  hand: the next row block's (or chunk's) loads are issued before this one's
  reductions, since registers allow only one or two programs per SM.
- chunked rows are read twice; the second pass walks the chunks last first,
  so the ones read most recently, likeliest still in L2, come back first.
- the split backward (a table option for the widest rows) cuts rows in column
  tiles instead: a row-sum kernel first, then one program per (column tile,
  row band) whose dweight/dbias partials stay in registers for the whole band.

The math is in :mod:`layernorm.reference`; each step below cites it.
"""

import triton
import triton.language as tl


@triton.jit
def _row_offsets(block, BLOCK_M: tl.constexpr):
    """Rows of one row block, as int64 so row * stride cannot overflow."""
    return (block * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)


@triton.jit
def _load_weight(W, c, mask, WEIGHT_OFFSET: tl.constexpr):
    """The gain in float32: weight, or WEIGHT_OFFSET + weight (Gemma's norms scale by 1 + weight;
    the offset is added here, in float32, so the stored weight stays as the model keeps it)."""
    w = tl.load(W + c, mask=mask, other=0.0).to(tl.float32)
    if WEIGHT_OFFSET != 0.0:
        w += WEIGHT_OFFSET
    return w


@triton.jit
def _apply_gain(x_hat, W, c, col_mask, Y, WEIGHT_OFFSET: tl.constexpr, ROUND_BEFORE_WEIGHT: tl.constexpr):
    """x_hat (float32) times the gain of columns c; with ``ROUND_BEFORE_WEIGHT``, x_hat rounded to
    y's dtype first, as ``weight * x_hat.to(dtype)`` computes it (a no-op for float32 y)."""
    if ROUND_BEFORE_WEIGHT:
        x_hat = x_hat.to(Y.dtype.element_ty).to(tl.float32)
    return x_hat * _load_weight(W, c, col_mask, WEIGHT_OFFSET)[None, :]


@triton.jit
def _rstd(var, eps):
    """1 / sqrt(var + eps); NaN, as PyTorch gives, where the variance overflowed float32 (rows of
    values near 1e19 or more), rather than the 0 that would silently zero the row."""
    rstd = 1.0 / tl.sqrt(var + eps)
    return tl.where(rstd > 0.0, rstd, float("nan"))


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
    rstd = _rstd(tl.sum(xc * xc, axis=1) / N, eps)
    tl.store(RSTD + rows, rstd, mask=row_mask)
    y = xc * rstd[:, None]
    if HAS_WEIGHT:
        y = _apply_gain(y, W, cols, cols < N, Y, WEIGHT_OFFSET, ROUND_BEFORE_WEIGHT)
    if HAS_BIAS:
        y += tl.load(B + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _fwd_block_loads(X, R, block, stride_x, stride_r, M, N, cols, BLOCK_M: tl.constexpr,
                     HAS_RESIDUAL: tl.constexpr):
    """x and r (input dtypes; r is x again without a residual) of one row block, masked past the end."""
    rows = _row_offsets(block, BLOCK_M)
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(R + rows[:, None] * stride_r + cols[None, :], mask=mask, other=0.0)
    else:
        r = x
    return x, r


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
    rows = _row_offsets(tl.program_id(0), BLOCK_M)
    row_mask = rows < M
    cols = tl.arange(0, BLOCK_N)

    if SINGLE_CHUNK:
        if PERSISTENT:
            # Wide register rows leave room for one program per SM: walk row blocks, loading
            # the next block (in its input dtype) before normalising this one.
            pid = tl.program_id(0)
            num_blocks = (M + BLOCK_M - 1) // BLOCK_M
            x_next, r_next = _fwd_block_loads(X, R, pid, stride_x, stride_r, M, N, cols, BLOCK_M, HAS_RESIDUAL)
            for block in range(pid, num_blocks, num_programs):
                rows = _row_offsets(block, BLOCK_M)
                x = x_next.to(tl.float32)
                if HAS_RESIDUAL:
                    x += r_next.to(tl.float32)
                x_next, r_next = _fwd_block_loads(X, R, block + num_programs, stride_x, stride_r, M, N, cols,
                                                  BLOCK_M, HAS_RESIDUAL)
                _fwd_rows(x, rows, rows < M, cols, Y, R_OUT, W, B, MEAN, RSTD, stride_y, stride_r_out, N, eps,
                          IS_RMS, HAS_WEIGHT, HAS_BIAS, STORE_RESIDUAL, WEIGHT_OFFSET, ROUND_BEFORE_WEIGHT)
        else:
            x, r = _fwd_block_loads(X, R, tl.program_id(0), stride_x, stride_r, M, N, cols, BLOCK_M, HAS_RESIDUAL)
            x = x.to(tl.float32)
            if HAS_RESIDUAL:
                x += r.to(tl.float32)
            _fwd_rows(x, rows, row_mask, cols, Y, R_OUT, W, B, MEAN, RSTD, stride_y, stride_r_out, N, eps,
                      IS_RMS, HAS_WEIGHT, HAS_BIAS, STORE_RESIDUAL, WEIGHT_OFFSET, ROUND_BEFORE_WEIGHT)
    else:
        # Pass 1: statistics, merging chunk (count, mean, M2) into the running ones (Chan et al.).
        # Both passes load the next chunk before working on this one (double buffering).
        mean = tl.zeros([BLOCK_M], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_M], dtype=tl.float32)
        x_next, r_next = _fwd_chunk_loads(X, R, rows, row_mask, cols, stride_x, stride_r, N, HAS_RESIDUAL)
        for start in range(0, N, BLOCK_N):
            c = start + cols
            mask = row_mask[:, None] & (c < N)[None, :]
            x = x_next.to(tl.float32)
            if HAS_RESIDUAL:
                x += r_next.to(tl.float32)
            x_next, r_next = _fwd_chunk_loads(X, R, rows, row_mask, c + BLOCK_N, stride_x, stride_r, N,
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
        rstd = _rstd(m2 / N, eps)
        tl.store(RSTD + rows, rstd, mask=row_mask)
        if not IS_RMS:
            tl.store(MEAN + rows, mean, mask=row_mask)
        # Pass 2: normalise and write, last chunk first: the chunks read last are the likeliest
        # still in L2 (or, for the fused add, r' just written).
        num_chunks = (N + BLOCK_N - 1) // BLOCK_N
        last = (num_chunks - 1) * BLOCK_N + cols
        if STORE_RESIDUAL:
            x_next, r_next = _fwd_chunk_loads(R_OUT, R_OUT, rows, row_mask, last, stride_r_out, stride_r_out, N,
                                              False)
        else:
            x_next, r_next = _fwd_chunk_loads(X, R, rows, row_mask, last, stride_x, stride_r, N, HAS_RESIDUAL)
        for i in range(0, num_chunks):
            c = (num_chunks - 1 - i) * BLOCK_N + cols
            col_mask = c < N
            mask = row_mask[:, None] & col_mask[None, :]
            x = x_next.to(tl.float32)
            if HAS_RESIDUAL and not STORE_RESIDUAL:
                x += r_next.to(tl.float32)
            if STORE_RESIDUAL:
                x_next, r_next = _fwd_chunk_loads(R_OUT, R_OUT, rows, row_mask, c - BLOCK_N, stride_r_out,
                                                  stride_r_out, N, False)
            else:
                x_next, r_next = _fwd_chunk_loads(X, R, rows, row_mask, c - BLOCK_N, stride_x, stride_r, N,
                                                  HAS_RESIDUAL)
            if IS_RMS:
                y = x * rstd[:, None]
            else:
                y = (x - mean[:, None]) * rstd[:, None]
            if HAS_WEIGHT:
                y = _apply_gain(y, W, c, col_mask, Y, WEIGHT_OFFSET, ROUND_BEFORE_WEIGHT)
            if HAS_BIAS:
                y += tl.load(B + c, mask=col_mask, other=0.0).to(tl.float32)[None, :]
            tl.store(Y + rows[:, None] * stride_y + c[None, :], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _fwd_chunk_loads(X, R, rows, row_mask, c, stride_x, stride_r, N, HAS_RESIDUAL: tl.constexpr):
    """x and r (input dtypes; r is x again without a residual) of one chunk of columns c."""
    mask = row_mask[:, None] & ((c >= 0) & (c < N))[None, :]
    x = tl.load(X + rows[:, None] * stride_x + c[None, :], mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(R + rows[:, None] * stride_r + c[None, :], mask=mask, other=0.0)
    else:
        r = x
    return x, r


@triton.jit
def _row_stats(MEAN, RSTD, rows, row_mask, BLOCK_M: tl.constexpr, IS_RMS: tl.constexpr):
    """The forward's saved mean (zeros for RMSNorm, which has none) and rstd of the rows."""
    rstd = tl.load(RSTD + rows, mask=row_mask, other=0.0)
    if IS_RMS:
        mean = tl.zeros([BLOCK_M], dtype=tl.float32)
    else:
        mean = tl.load(MEAN + rows, mask=row_mask, other=0.0)
    return mean, rstd


@triton.jit
def _chunk_row_sums(x, dy, mean, rstd, mask, W, c, col_mask, HAS_WEIGHT: tl.constexpr,
                    WEIGHT_OFFSET: tl.constexpr):
    """This chunk's share of the two row sums dx needs: sum(g * x_hat) and sum(g), g = weight * dy
    (x and dy in float32; columns outside the row masked to zero)."""
    x_hat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
    if HAS_WEIGHT:
        g = dy * _load_weight(W, c, col_mask, WEIGHT_OFFSET)[None, :]
    else:
        g = dy
    return tl.sum(g * x_hat, axis=1), tl.sum(g, axis=1)


@triton.jit
def _bwd_block_loads(X, DY, MEAN, RSTD, block, stride_x, stride_dy, M, N, cols, BLOCK_M: tl.constexpr,
                     IS_RMS: tl.constexpr):
    """x, dy (input dtype), mean, rstd of one row block; all masked off past the last row."""
    rows = _row_offsets(block, BLOCK_M)
    row_mask = rows < M
    mask = row_mask[:, None] & (cols < N)[None, :]
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0)
    dy = tl.load(DY + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0)
    mean, rstd = _row_stats(MEAN, RSTD, rows, row_mask, BLOCK_M, IS_RMS)
    return x, dy, mean, rstd


@triton.jit
def _chunk_loads(X, DY, rows, row_mask, c, stride_x, stride_dy, N):
    """x, dy (input dtype) of one chunk of columns c of the rows; columns outside [0, N) masked off."""
    mask = row_mask[:, None] & ((c >= 0) & (c < N))[None, :]
    x = tl.load(X + rows[:, None] * stride_x + c[None, :], mask=mask, other=0.0)
    dy = tl.load(DY + rows[:, None] * stride_dy + c[None, :], mask=mask, other=0.0)
    return x, dy


@triton.jit
def _store_dx(g, x_hat, c1, c2, rstd, rows, c, mask, DRES, DX, stride_dres, stride_dx,
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
def norm_bwd_kernel(
    DY, X, DRES, DX, W, MEAN, RSTD, DW_PARTIAL, DB_PARTIAL,
    stride_dy, stride_x, stride_dres, stride_dx,
    M, N, num_programs,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SINGLE_CHUNK: tl.constexpr,
    IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, NEED_DW: tl.constexpr, NEED_DB: tl.constexpr,
    HAS_DRES: tl.constexpr, LEAN: tl.constexpr, WEIGHT_OFFSET: tl.constexpr = 0.0,
):
    """dx for the row blocks pid, pid + G, ...; one partial row of dweight / dbias per program.

    With x_hat and g = weight * dy (reference.layer_norm_backward)::

        LayerNorm: dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat))
        RMSNorm:   dx = rstd * (g - x_hat * mean(g * x_hat))
        dweight = sum over rows of dy * x_hat;  dbias = sum over rows of dy.

    ``X`` is the normalised input (r' for the fused add); ``DRES`` the
    gradient reaching r' directly, added to dx. ``NEED_DW`` / ``NEED_DB``: the
    parameter gradients are wanted (frozen parameters cost nothing).
    """
    pid = tl.program_id(0)
    num_blocks = (M + BLOCK_M - 1) // BLOCK_M
    cols = tl.arange(0, BLOCK_N)
    partial_row = pid.to(tl.int64) * N

    if SINGLE_CHUNK:
        col_mask = cols < N
        if HAS_WEIGHT and not LEAN:
            w = _load_weight(W, cols, col_mask, WEIGHT_OFFSET)
        dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        db_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        # Double buffering: the next block's loads are issued before this block's reductions,
        # so one program per SM still keeps memory busy. Kept in the input dtype until used.
        # LEAN rows (the widest register rows) skip it and reload the weight per block (an L2
        # hit) instead of holding it: each saves a register per element, which they lack.
        if not LEAN:
            x_next, dy_next, mean_next, rstd_next = _bwd_block_loads(
                X, DY, MEAN, RSTD, pid, stride_x, stride_dy, M, N, cols, BLOCK_M, IS_RMS)
        for block in range(pid, num_blocks, num_programs):
            rows = _row_offsets(block, BLOCK_M)
            row_mask = rows < M
            mask = row_mask[:, None] & col_mask[None, :]
            if LEAN:
                x, dy, mean, rstd = _bwd_block_loads(X, DY, MEAN, RSTD, block, stride_x, stride_dy, M, N, cols,
                                                     BLOCK_M, IS_RMS)
                x = x.to(tl.float32)
                dy = dy.to(tl.float32)
                if HAS_WEIGHT:
                    w = _load_weight(W, cols, col_mask, WEIGHT_OFFSET)
            else:
                x = x_next.to(tl.float32)
                dy = dy_next.to(tl.float32)
                mean = mean_next
                rstd = rstd_next
                x_next, dy_next, mean_next, rstd_next = _bwd_block_loads(
                    X, DY, MEAN, RSTD, block + num_programs, stride_x, stride_dy, M, N, cols, BLOCK_M, IS_RMS)
            if IS_RMS:
                x_hat = x * rstd[:, None]
            else:
                x_hat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
            if HAS_WEIGHT:
                g = dy * w[None, :]
            else:
                g = dy
            c1 = tl.sum(g * x_hat, axis=1) / N
            if IS_RMS:
                c2 = c1  # unused
            else:
                c2 = tl.sum(g, axis=1) / N
            _store_dx(g, x_hat, c1, c2, rstd, rows, cols, mask, DRES, DX, stride_dres, stride_dx, IS_RMS, HAS_DRES)
            if NEED_DW:
                dw_acc += tl.sum(dy * x_hat, axis=0)
            if NEED_DB:
                db_acc += tl.sum(dy, axis=0)
        if NEED_DW:
            tl.store(DW_PARTIAL + partial_row + cols, dw_acc, mask=col_mask)
        if NEED_DB:
            tl.store(DB_PARTIAL + partial_row + cols, db_acc, mask=col_mask)
    else:
        for block in range(pid, num_blocks, num_programs):
            rows = _row_offsets(block, BLOCK_M)
            row_mask = rows < M
            mean, rstd = _row_stats(MEAN, RSTD, rows, row_mask, BLOCK_M, IS_RMS)
            # Pass 1: the two row sums that dx needs.
            # Each loop loads the next chunk before reducing this one (double buffering).
            sum_gx = tl.zeros([BLOCK_M], dtype=tl.float32)
            sum_g = tl.zeros([BLOCK_M], dtype=tl.float32)
            x_next, dy_next = _chunk_loads(X, DY, rows, row_mask, cols, stride_x, stride_dy, N)
            for start in range(0, N, BLOCK_N):
                c = start + cols
                col_mask = c < N
                mask = row_mask[:, None] & col_mask[None, :]
                x = x_next.to(tl.float32)
                dy = dy_next.to(tl.float32)
                x_next, dy_next = _chunk_loads(X, DY, rows, row_mask, c + BLOCK_N, stride_x, stride_dy, N)
                chunk_gx, chunk_g = _chunk_row_sums(x, dy, mean, rstd, mask, W, c, col_mask, HAS_WEIGHT,
                                                    WEIGHT_OFFSET)
                sum_gx += chunk_gx
                sum_g += chunk_g
            c1 = sum_gx / N
            c2 = sum_g / N
            # Pass 2: dx, and this program's private partial rows of dweight / dbias
            # (read-modify-write; the program's first block, block == pid, writes them fresh).
            # Last chunk first, as in the forward: those chunks of x and dy are still in L2.
            num_chunks = (N + BLOCK_N - 1) // BLOCK_N
            x_next, dy_next = _chunk_loads(X, DY, rows, row_mask, (num_chunks - 1) * BLOCK_N + cols,
                                           stride_x, stride_dy, N)
            for i in range(0, num_chunks):
                c = (num_chunks - 1 - i) * BLOCK_N + cols
                col_mask = c < N
                mask = row_mask[:, None] & col_mask[None, :]
                x = x_next.to(tl.float32)
                dy = dy_next.to(tl.float32)
                x_next, dy_next = _chunk_loads(X, DY, rows, row_mask, c - BLOCK_N, stride_x, stride_dy, N)
                x_hat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
                if HAS_WEIGHT:
                    g = dy * _load_weight(W, c, col_mask, WEIGHT_OFFSET)[None, :]
                else:
                    g = dy
                _store_dx(g, x_hat, c1, c2, rstd, rows, c, mask, DRES, DX, stride_dres, stride_dx, IS_RMS, HAS_DRES)
                keep = col_mask & ((c * 0 + block) != pid)  # a tensor compare: the interpreter's block is an int
                if NEED_DW:
                    dw = tl.load(DW_PARTIAL + partial_row + c, mask=keep, other=0.0)
                    tl.store(DW_PARTIAL + partial_row + c, dw + tl.sum(dy * x_hat, axis=0), mask=col_mask)
                if NEED_DB:
                    db = tl.load(DB_PARTIAL + partial_row + c, mask=keep, other=0.0)
                    tl.store(DB_PARTIAL + partial_row + c, db + tl.sum(dy, axis=0), mask=col_mask)


@triton.jit
def norm_bwd_row_sums_kernel(
    DY, X, W, MEAN, RSTD, C1, C2, stride_dy, stride_x, M, N,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    WEIGHT_OFFSET: tl.constexpr = 0.0,
):
    """The split backward's first kernel: per row, c1 = mean(g * x_hat) and c2 = mean(g).

    The two row sums dx needs (reference.layer_norm_backward), for rows too wide
    to hold: one streaming read of x and dy, 8 bytes written per row.
    """
    rows = _row_offsets(tl.program_id(0), BLOCK_M)
    row_mask = rows < M
    cols = tl.arange(0, BLOCK_N)
    mean, rstd = _row_stats(MEAN, RSTD, rows, row_mask, BLOCK_M, IS_RMS)
    sum_gx = tl.zeros([BLOCK_M], dtype=tl.float32)
    sum_g = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start in range(0, N, BLOCK_N):
        c = start + cols
        col_mask = c < N
        x, dy = _chunk_loads(X, DY, rows, row_mask, c, stride_x, stride_dy, N)
        mask = row_mask[:, None] & col_mask[None, :]
        chunk_gx, chunk_g = _chunk_row_sums(x.to(tl.float32), dy.to(tl.float32), mean, rstd, mask, W, c, col_mask,
                                            HAS_WEIGHT, WEIGHT_OFFSET)
        sum_gx += chunk_gx
        sum_g += chunk_g
    tl.store(C1 + rows, sum_gx / N, mask=row_mask)
    tl.store(C2 + rows, sum_g / N, mask=row_mask)


@triton.jit
def norm_bwd_tiles_kernel(
    DY, X, DRES, DX, W, MEAN, RSTD, C1, C2, DW_PARTIAL, DB_PARTIAL,
    stride_dy, stride_x, stride_dres, stride_dx, M, N, rows_per_band,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    IS_RMS: tl.constexpr, HAS_WEIGHT: tl.constexpr, NEED_DW: tl.constexpr, NEED_DB: tl.constexpr,
    HAS_DRES: tl.constexpr, WEIGHT_OFFSET: tl.constexpr = 0.0,
):
    """The split backward's second kernel: program (column tile, row band) writes dx of its
    tile for every row of the band, and the band's partial dweight / dbias of its columns.

    With c1 and c2 known, dx needs nothing beyond its own columns, so the row is cut
    in column tiles: the partial sums of a tile stay in registers over the whole
    band and are written once, instead of a partial row per row block read and
    written back (what limits the chunked backward). The price is a second read
    of x and dy after the row-sum kernel's: 5 passes over the data instead of 3.
    """
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_mask = cols < N
    band = tl.program_id(1)
    band_start = band * rows_per_band
    band_end = tl.minimum(band_start + rows_per_band, M)
    if HAS_WEIGHT:
        w = _load_weight(W, cols, col_mask, WEIGHT_OFFSET)
    dw_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    db_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    for first in range(band_start, band_end, BLOCK_M):
        rows = (first + tl.arange(0, BLOCK_M)).to(tl.int64)
        row_mask = rows < band_end
        mask = row_mask[:, None] & col_mask[None, :]
        x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean, rstd = _row_stats(MEAN, RSTD, rows, row_mask, BLOCK_M, IS_RMS)
        c1 = tl.load(C1 + rows, mask=row_mask, other=0.0)
        if IS_RMS:
            x_hat = x * rstd[:, None]
        else:
            x_hat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        if HAS_WEIGHT:
            g = dy * w[None, :]
        else:
            g = dy
        if IS_RMS:
            c2 = c1  # unused
        else:
            c2 = tl.load(C2 + rows, mask=row_mask, other=0.0)
        _store_dx(g, x_hat, c1, c2, rstd, rows, cols, mask, DRES, DX, stride_dres, stride_dx, IS_RMS, HAS_DRES)
        if NEED_DW:
            dw_acc += tl.sum(dy * x_hat, axis=0)
        if NEED_DB:
            db_acc += tl.sum(dy, axis=0)
    partial_row = band.to(tl.int64) * N
    if NEED_DW:
        tl.store(DW_PARTIAL + partial_row + cols, dw_acc, mask=col_mask)
    if NEED_DB:
        tl.store(DB_PARTIAL + partial_row + cols, db_acc, mask=col_mask)


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
