"""Launch parameters of the norm kernels, chosen by N from a table.

No autotuning on the hot path: a lookup by the row's width N (rounded up to a
power of two, ``block_n``) and the input's element size gives the block shape
and the warps. ``scripts/sweep_launch.py`` measures the candidates on a GPU
and rewrites the literals between the ``BEGIN TABLE`` / ``END TABLE`` marks.

Reading the table:

- ``FORWARD[element_bytes][block_n] = (rows_per_program, num_warps[,
  programs_per_sm])``: a row of width up to ``block_n`` is held in registers,
  ``rows_per_program`` rows per program; with a third field the grid is
  persistent (that many programs per SM, each walking row blocks with the
  next block's loads in flight). Wider rows than the largest key take the chunked path,
  ``FORWARD_CHUNKED[element_bytes][block_n] = (chunk, rows_per_program,
  num_warps)``: the row of the smallest ``block_n`` key at least as wide, or
  of the widest key.
- ``BACKWARD[element_bytes][block_n] = (rows_per_program, num_warps,
  programs_per_sm[, lean])``: the persistent grid has ``programs_per_sm`` programs per
  multiprocessor (fewer when there are fewer row blocks; a fraction leaves
  SMs idle so that the chunked path's partial rows stay in L2); ``lean``
  (the widest register rows) drops the double buffering and the resident
  weight, a register per element each. ``BACKWARD_CHUNKED`` likewise with
  the chunk first, and an optional last field ``split``: the row sums in a
  kernel of their own, then programs over (column tile of ``chunk`` columns,
  row band), see ``norm_bwd_tiles_kernel``.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Iterator, Optional

# BEGIN TABLE
SOURCE = 'swept on NVIDIA H100 80GB HBM3 with torch 2.11.0+cu130, triton 3.6.0, 2026-11-22 by scripts/sweep_launch.py'
FORWARD = {2: {1: (128, 4),
     2: (128, 4),
     4: (128, 4),
     8: (128, 4),
     16: (128, 4),
     32: (128, 4),
     64: (64, 4),
     128: (32, 4),
     256: (32, 16),
     512: (8, 8),
     1024: (16, 16),
     2048: (2, 8),
     4096: (2, 16),
     8192: (1, 16),
     16384: (1, 16)},
 4: {1: (128, 4),
     2: (128, 4),
     4: (128, 4),
     8: (128, 4),
     16: (128, 4),
     32: (128, 4),
     64: (64, 4),
     128: (32, 4),
     256: (16, 4),
     512: (8, 4),
     1024: (4, 8),
     2048: (2, 8),
     4096: (1, 8),
     8192: (1, 16),
     16384: (1, 32, 1)}}
FORWARD_CHUNKED = {2: {8192: (4096, 1, 8), 16384: (8192, 1, 16), 65536: (8192, 1, 16)}, 4: {65536: (4096, 1, 16)}}
BACKWARD = {2: {1: (16, 4, 4),
     2: (16, 4, 4),
     4: (16, 4, 4),
     8: (16, 4, 4),
     16: (16, 4, 4),
     32: (16, 4, 4),
     64: (8, 4, 6),
     128: (4, 4, 8),
     256: (16, 4, 2),
     512: (8, 4, 2),
     1024: (4, 4, 2),
     2048: (2, 8, 2),
     4096: (1, 8, 2),
     8192: (1, 16, 1)},
 4: {1: (16, 4, 4),
     2: (16, 4, 4),
     4: (16, 4, 4),
     8: (16, 4, 4),
     16: (16, 4, 4),
     32: (16, 4, 4),
     64: (8, 4, 6),
     128: (4, 4, 8),
     256: (4, 4, 6),
     512: (2, 4, 6),
     1024: (2, 8, 3),
     2048: (1, 8, 2),
     4096: (1, 16, 1)}}
BACKWARD_CHUNKED = {2: {8192: (4096, 2, 16, 2), 16384: (4096, 2, 16, 1), 65536: (2048, 2, 8, 2)},
 4: {8192: (2048, 1, 16, 2), 16384: (2048, 1, 16, 1), 65536: (2048, 1, 16, 0.5)}}
# END TABLE

# The dweight/dbias reduction: partial rows summed REDUCE_BLOCK_P at a time, a column block
# per program, narrow enough for about two programs per SM (6 programs at N = 768 with 128
# columns would leave the GPU nearly idle for several microseconds).
REDUCE_BLOCK_P = 64
REDUCE_NUM_WARPS = 4


def reduce_block_n(n: int, sm_count: int) -> int:
    """Columns per program of the dweight/dbias reduction."""
    return max(16, min(64, next_power_of_2(max(1, n // (2 * sm_count)))))  # 64 x 64 x 2 accumulators: no spill


@dataclass(frozen=True)
class Launch:
    """One kernel launch's shape: ``block_m`` rows of ``block_n`` columns per step."""

    block_m: int
    block_n: int
    num_warps: int
    single_chunk: bool
    programs_per_sm: float = 0  # the backward's persistent grid; a forward's when > 0
    lean: bool = False  # backward register rows: no double buffering, weight reloaded per block
    split: bool = False  # backward chunked rows: row sums first, then column tiles (block_n wide)


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


# Tests force the chunked path on small rows, or a grid size, through `forced`.
_forced: dict = {}


@contextlib.contextmanager
def forced(*, max_single_block_n: Optional[int] = None, chunk: Optional[int] = None,
           rows_per_program: Optional[int] = None, programs: Optional[int] = None,
           launch: Optional["Launch"] = None) -> Iterator[None]:
    """Override the table inside a ``with`` block (tests, the sweep); ``launch`` replaces it whole."""
    saved = dict(_forced)
    _forced.update({k: v for k, v in dict(max_single_block_n=max_single_block_n, chunk=chunk,
                                          rows_per_program=rows_per_program, programs=programs,
                                          launch=launch).items()
                    if v is not None})
    try:
        yield
    finally:
        _forced.clear()
        _forced.update(saved)


def forced_programs() -> Optional[int]:
    return _forced.get("programs")


def _element_key(element_bytes: int) -> int:
    return 2 if element_bytes <= 2 else 4


def _lookup(single: dict, chunked: dict, n: int, element_bytes: int, backward: bool) -> Launch:
    if "launch" in _forced:
        return _forced["launch"]
    rows = single[_element_key(element_bytes)]
    block_n = next_power_of_2(n)
    max_single = min(max(rows), _forced.get("max_single_block_n", max(rows)))
    if block_n <= max_single:
        params = rows[block_n]
        launch = Launch(params[0], block_n, params[1], True, params[2] if len(params) > 2 else 0,
                        bool(params[3]) if len(params) > 3 else False)
    else:
        widths = chunked[_element_key(element_bytes)]
        params = widths[min((w for w in widths if w >= block_n), default=max(widths))]
        chunk = _forced.get("chunk", params[0])
        launch = Launch(params[1], chunk, params[2], False, params[3] if backward else 0,
                        split=backward and len(params) > 4 and bool(params[4]))
    if "rows_per_program" in _forced:
        launch = Launch(_forced["rows_per_program"], launch.block_n, launch.num_warps,
                        launch.single_chunk, launch.programs_per_sm, launch.lean, launch.split)
    return launch


@functools.lru_cache(maxsize=4096)
def _cached(backward: bool, n: int, element_bytes: int) -> Launch:
    if backward:
        return _lookup(BACKWARD, BACKWARD_CHUNKED, n, element_bytes, backward=True)
    return _lookup(FORWARD, FORWARD_CHUNKED, n, element_bytes, backward=False)


def forward_launch(n: int, element_bytes: int) -> Launch:
    """Launch shape of the forward for rows of width ``n``."""
    if _forced:
        return _lookup(FORWARD, FORWARD_CHUNKED, n, element_bytes, backward=False)
    return _cached(False, n, element_bytes)


def backward_launch(n: int, element_bytes: int) -> Launch:
    """Launch shape of the backward for rows of width ``n``."""
    if _forced:
        return _lookup(BACKWARD, BACKWARD_CHUNKED, n, element_bytes, backward=True)
    return _cached(True, n, element_bytes)
