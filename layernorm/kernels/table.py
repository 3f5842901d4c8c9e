"""Launch parameters of the norm kernels, chosen by N from a table.

No autotuning on the hot path: a lookup by the row's width N (rounded up to a
power of two, ``block_n``) and the input's element size gives the block shape
and the warps. ``scripts/sweep_launch.py`` measures the candidates on a GPU
and rewrites the literals between the ``BEGIN TABLE`` / ``END TABLE`` marks
(:mod:`layernorm.kernels.table_writer`).

Reading the table: ``TABLE[element_bytes][width] = row``, each row's fields
by name.

- ``FORWARD``: a row of width up to ``width`` is held in registers,
  ``rows_per_program`` rows per program (:class:`ForwardRow`); with
  ``programs_per_sm`` the grid is persistent (that many programs per SM, each
  walking row blocks with the next block's loads in flight). Wider rows than
  the largest key take the chunked path, ``FORWARD_CHUNKED``
  (:class:`ForwardChunkedRow`): the row of the smallest key at least as wide,
  or of the widest key; with ``programs_per_sm`` its grid is persistent too,
  which bounds the rows in flight so that the second pass over a row finds
  it in L2.
- ``BACKWARD`` (:class:`BackwardRow`): the persistent grid has
  ``programs_per_sm`` programs per multiprocessor (fewer when there are fewer
  row blocks; a fraction leaves SMs idle so that the chunked path's partial
  rows stay in L2); ``lean`` (the widest register rows) drops the double
  buffering and the resident weight, a register per element each.
  ``BACKWARD_CHUNKED`` (:class:`BackwardChunkedRow`) likewise, with ``split``:
  the row sums in a kernel of their own, then programs over (column tile of
  ``chunk`` columns, row band), see ``norm_bwd_tiles_kernel``; or with
  ``hold_partials``: the dweight / dbias partial sums held in registers for
  all the program's row blocks (see ``layernorm.kernels.backward_held``),
  for rows up to ``HOLD_MAX_N`` wide (wider ones take the plain chunked
  path); or with ``band_rows``: the paired backward (see
  ``layernorm.kernels.backward_paired``).
- ``FORWARD_EXACT`` / ``BACKWARD_EXACT``: rows for one exact width N that is
  not a power of two (768, 1536, 3072, ...), walked in chunks that tile it
  with no padding (768 as 3 x 256); a register row of 768 columns occupies
  1024 lanes, a quarter of them masked off. The sweep writes such a row only
  where it measured it faster than the padded row; a width without one takes
  the lookup above.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from dataclasses import dataclass
from typing import Iterator, Optional


# The widest rows whose dweight / dbias partial sums a program can hold in registers: 2 x 16384
# floats are 32 registers a thread at 32 warps, 64 at 16.
HOLD_MAX_N = 16384


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
    hold_partials: bool = False  # backward chunked rows: dweight / dbias partial sums held in registers
    unroll: bool = True  # with hold_partials: the second pass over the chunks unrolled
    band_rows: int = 0  # backward chunked rows, when > 0: the paired backward over bands of this many rows


# The rows of the four tables. Each knows the Launch it stands for (``launch``) and the row that
# stands for a swept Launch (``of``, for the table writer).


@dataclass(frozen=True)
class ForwardRow:
    """Rows held in registers; a persistent grid when ``programs_per_sm`` > 0."""

    rows_per_program: int
    num_warps: int
    programs_per_sm: float = 0

    def launch(self, block_n: int) -> Launch:
        return Launch(self.rows_per_program, block_n, self.num_warps, True, self.programs_per_sm)

    @classmethod
    def of(cls, launch: Launch) -> "ForwardRow":
        return cls(launch.block_m, launch.num_warps, launch.programs_per_sm)


@dataclass(frozen=True)
class ForwardChunkedRow:
    """Rows walked in chunks of ``chunk`` columns; a persistent grid when ``programs_per_sm`` > 0."""

    chunk: int
    rows_per_program: int
    num_warps: int
    programs_per_sm: float = 0

    def launch(self, chunk: int) -> Launch:
        return Launch(self.rows_per_program, chunk, self.num_warps, False, self.programs_per_sm)

    @classmethod
    def of(cls, launch: Launch) -> "ForwardChunkedRow":
        return cls(launch.block_n, launch.block_m, launch.num_warps, launch.programs_per_sm)


@dataclass(frozen=True)
class BackwardRow:
    """Rows held in registers, over a persistent grid of ``programs_per_sm`` programs per SM."""

    rows_per_program: int
    num_warps: int
    programs_per_sm: float
    lean: bool = False

    def launch(self, block_n: int) -> Launch:
        return Launch(self.rows_per_program, block_n, self.num_warps, True, self.programs_per_sm, self.lean)

    @classmethod
    def of(cls, launch: Launch) -> "BackwardRow":
        return cls(launch.block_m, launch.num_warps, launch.programs_per_sm, launch.lean)


@dataclass(frozen=True)
class BackwardChunkedRow:
    """Rows walked in chunks of ``chunk`` columns over a persistent grid; or, ``split``, cut in
    column tiles of ``chunk`` columns; ``hold_partials``: the dweight / dbias partial sums held in
    registers rather than in a buffer (rows up to :data:`HOLD_MAX_N` wide), the second pass over a
    row's chunks unrolled unless ``unroll`` is False; ``band_rows`` > 0: the paired backward (row
    programs and column-tile programs side by side over bands of that many rows; a backward that
    wants no parameter gradient takes the plain chunked path)."""

    chunk: int
    rows_per_program: int
    num_warps: int
    programs_per_sm: float
    split: bool = False
    hold_partials: bool = False
    unroll: bool = True
    band_rows: int = 0

    def launch(self, chunk: int) -> Launch:
        return Launch(self.rows_per_program, chunk, self.num_warps, False, self.programs_per_sm, split=self.split,
                      hold_partials=self.hold_partials, unroll=self.unroll, band_rows=self.band_rows)

    @classmethod
    def of(cls, launch: Launch) -> "BackwardChunkedRow":
        return cls(launch.block_n, launch.block_m, launch.num_warps, launch.programs_per_sm, launch.split,
                   launch.hold_partials, launch.unroll, launch.band_rows)


# BEGIN TABLE
SOURCE = 'swept on NVIDIA H100 80GB HBM3 with torch 2.11.0+cu130, triton 3.6.0, 2026-11-22 by scripts/sweep_launch.py'
FORWARD = {
    2: {
        1: ForwardRow(rows_per_program=128, num_warps=4),
        2: ForwardRow(rows_per_program=128, num_warps=4),
        4: ForwardRow(rows_per_program=128, num_warps=4),
        8: ForwardRow(rows_per_program=128, num_warps=4),
        16: ForwardRow(rows_per_program=128, num_warps=4),
        32: ForwardRow(rows_per_program=128, num_warps=4),
        64: ForwardRow(rows_per_program=64, num_warps=4),
        128: ForwardRow(rows_per_program=32, num_warps=4),
        256: ForwardRow(rows_per_program=32, num_warps=16),
        512: ForwardRow(rows_per_program=8, num_warps=8),
        1024: ForwardRow(rows_per_program=16, num_warps=16),
        2048: ForwardRow(rows_per_program=2, num_warps=8),
        4096: ForwardRow(rows_per_program=2, num_warps=16),
        8192: ForwardRow(rows_per_program=1, num_warps=16),
        16384: ForwardRow(rows_per_program=1, num_warps=16),
    },
    4: {
        1: ForwardRow(rows_per_program=128, num_warps=4),
        2: ForwardRow(rows_per_program=128, num_warps=4),
        4: ForwardRow(rows_per_program=128, num_warps=4),
        8: ForwardRow(rows_per_program=128, num_warps=4),
        16: ForwardRow(rows_per_program=128, num_warps=4),
        32: ForwardRow(rows_per_program=128, num_warps=4),
        64: ForwardRow(rows_per_program=64, num_warps=4),
        128: ForwardRow(rows_per_program=32, num_warps=4),
        256: ForwardRow(rows_per_program=16, num_warps=4),
        512: ForwardRow(rows_per_program=8, num_warps=4),
        1024: ForwardRow(rows_per_program=4, num_warps=8),
        2048: ForwardRow(rows_per_program=2, num_warps=8),
        4096: ForwardRow(rows_per_program=1, num_warps=8),
        8192: ForwardRow(rows_per_program=1, num_warps=16),
        16384: ForwardRow(rows_per_program=1, num_warps=32, programs_per_sm=1),
    },
}
FORWARD_CHUNKED = {
    2: {
        8192: ForwardChunkedRow(chunk=4096, rows_per_program=1, num_warps=8),
        16384: ForwardChunkedRow(chunk=8192, rows_per_program=1, num_warps=16),
        65536: ForwardChunkedRow(chunk=8192, rows_per_program=1, num_warps=16),
    },
    4: {
        65536: ForwardChunkedRow(chunk=4096, rows_per_program=1, num_warps=16),
    },
}
BACKWARD = {
    2: {
        1: BackwardRow(rows_per_program=16, num_warps=4, programs_per_sm=4),
        2: BackwardRow(rows_per_program=16, num_warps=4, programs_per_sm=4),
        4: BackwardRow(rows_per_program=16, num_warps=4, programs_per_sm=4),
        8: BackwardRow(rows_per_program=16, num_warps=4, programs_per_sm=4),
        16: BackwardRow(rows_per_program=16, num_warps=4, programs_per_sm=4),
        32: BackwardRow(rows_per_program=16, num_warps=4, programs_per_sm=4),
        64: BackwardRow(rows_per_program=8, num_warps=4, programs_per_sm=6),
        128: BackwardRow(rows_per_program=4, num_warps=4, programs_per_sm=8),
        256: BackwardRow(rows_per_program=16, num_warps=4, programs_per_sm=2),
        512: BackwardRow(rows_per_program=8, num_warps=4, programs_per_sm=2),
        1024: BackwardRow(rows_per_program=4, num_warps=4, programs_per_sm=2),
        2048: BackwardRow(rows_per_program=2, num_warps=8, programs_per_sm=2),
        4096: BackwardRow(rows_per_program=1, num_warps=8, programs_per_sm=2),
        8192: BackwardRow(rows_per_program=1, num_warps=16, programs_per_sm=1),
    },
    4: {
        1: BackwardRow(rows_per_program=16, num_warps=4, programs_per_sm=4),
        2: BackwardRow(rows_per_program=16, num_warps=4, programs_per_sm=4),
        4: BackwardRow(rows_per_program=16, num_warps=4, programs_per_sm=4),
        8: BackwardRow(rows_per_program=16, num_warps=4, programs_per_sm=4),
        16: BackwardRow(rows_per_program=16, num_warps=4, programs_per_sm=4),
        32: BackwardRow(rows_per_program=16, num_warps=4, programs_per_sm=4),
        64: BackwardRow(rows_per_program=8, num_warps=4, programs_per_sm=6),
        128: BackwardRow(rows_per_program=4, num_warps=4, programs_per_sm=8),
        256: BackwardRow(rows_per_program=4, num_warps=4, programs_per_sm=6),
        512: BackwardRow(rows_per_program=2, num_warps=4, programs_per_sm=6),
        1024: BackwardRow(rows_per_program=2, num_warps=8, programs_per_sm=3),
        2048: BackwardRow(rows_per_program=1, num_warps=8, programs_per_sm=2),
        4096: BackwardRow(rows_per_program=1, num_warps=16, programs_per_sm=1),
    },
}
BACKWARD_CHUNKED = {
    2: {
        8192: BackwardChunkedRow(chunk=4096, rows_per_program=2, num_warps=16, programs_per_sm=2),
        16384: BackwardChunkedRow(chunk=4096, rows_per_program=2, num_warps=16, programs_per_sm=1),
        65536: BackwardChunkedRow(chunk=2048, rows_per_program=2, num_warps=8, programs_per_sm=2),
    },
    4: {
        8192: BackwardChunkedRow(chunk=2048, rows_per_program=1, num_warps=16, programs_per_sm=2),
        16384: BackwardChunkedRow(chunk=2048, rows_per_program=1, num_warps=16, programs_per_sm=1),
        65536: BackwardChunkedRow(chunk=2048, rows_per_program=1, num_warps=16, programs_per_sm=0.5),
    },
}
FORWARD_EXACT = {
    2: {},
    4: {},
}
BACKWARD_EXACT = {
    2: {},
    4: {},
}
# END TABLE

# The dweight/dbias reduction: partial rows summed REDUCE_BLOCK_P at a time, a column block
# per program, narrow enough for about two programs per SM (6 programs at N = 768 with 128
# columns would leave the GPU nearly idle for several microseconds).
REDUCE_BLOCK_P = 64
REDUCE_NUM_WARPS = 4


def reduce_block_n(n: int, sm_count: int) -> int:
    """Columns per program of the dweight/dbias reduction."""
    return max(16, min(64, next_power_of_2(max(1, n // (2 * sm_count)))))  # 64 x 64 x 2 accumulators: no spill


def paired_tile_m(block_n: int) -> int:
    """Rows per step of the paired backward's tile programs: 4096 elements a step, two steps of
    x and dy in flight (8192 a step take 184 registers at 2048 x 8 warps on sm_90: one program
    per SM; 4096, 125: two)."""
    return max(1, min(8, 4096 // block_n))


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


def exact_chunk(n: int) -> int:
    """The widest power-of-two chunk (up to 4096 columns) that tiles a row of n columns exactly."""
    return min(4096, n & -n)


def _lookup(register: dict, chunked: dict, exact: Optional[dict], n: int, element_bytes: int) -> Launch:
    if "launch" in _forced:
        return _forced["launch"]
    if exact and not _forced:
        row = exact[_element_key(element_bytes)].get(n)
        if row is not None:
            return row.launch(row.chunk)
    rows = register[_element_key(element_bytes)]
    block_n = next_power_of_2(n)
    max_single = min(max(rows), _forced.get("max_single_block_n", max(rows)))
    if block_n <= max_single:
        launch = rows[block_n].launch(block_n)
    else:
        widths = chunked[_element_key(element_bytes)]
        row = widths[min((w for w in widths if w >= block_n), default=max(widths))]
        launch = row.launch(_forced.get("chunk", row.chunk))
    if "rows_per_program" in _forced:
        launch = dataclasses.replace(launch, block_m=_forced["rows_per_program"])
    return launch


def _tables(backward: bool) -> tuple:
    """(register rows, chunked rows, exact rows) of one pass, read when looked up (a sweep or a
    test may have replaced them)."""
    if backward:
        return BACKWARD, BACKWARD_CHUNKED, BACKWARD_EXACT
    return FORWARD, FORWARD_CHUNKED, FORWARD_EXACT


@functools.lru_cache(maxsize=4096)
def _cached(backward: bool, n: int, element_bytes: int) -> Launch:
    return _lookup(*_tables(backward), n, element_bytes)


def forward_launch(n: int, element_bytes: int) -> Launch:
    """Launch shape of the forward for rows of width ``n``."""
    if _forced:
        return _lookup(*_tables(False), n, element_bytes)
    return _cached(False, n, element_bytes)  # the hot path: one cached call


def backward_launch(n: int, element_bytes: int) -> Launch:
    """Launch shape of the backward for rows of width ``n``."""
    if _forced:
        return _lookup(*_tables(True), n, element_bytes)
    return _cached(True, n, element_bytes)


def padded_launch(n: int, element_bytes: int, backward: bool = False) -> Launch:
    """The launch the power-of-two rows give a width, leaving out its exact row (what an exact
    row must beat)."""
    register, chunked, _ = _tables(backward)
    return _lookup(register, chunked, None, n, element_bytes)
