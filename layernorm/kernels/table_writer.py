"""Writing the launch table: swept launches into table rows, and rows into the literals of
:mod:`layernorm.kernels.table`.

``scripts/sweep_launch.py`` measures; this module turns its winners into rows
(:func:`register_rows`, :func:`chunked_rows`, :func:`exact_rows`), formats the tables as
Python literals, one row per line (:func:`table_text`), and replaces the
lines between the ``# BEGIN TABLE`` / ``# END TABLE`` marks of ``table.py``
with them (:func:`rewrite_table`). Importing it imports neither Triton nor
torch.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Tuple, Type

from . import table
from .table import Launch

BEGIN, END = "# BEGIN TABLE\n", "# END TABLE\n"

# Swept results: row width -> (milliseconds, the fastest launch).
Timings = Mapping[int, Tuple[float, Launch]]


def register_rows(current: Mapping[int, object], best: Timings, chunked_times: Timings,
                  row_type: Type) -> Dict[int, object]:
    """The current register rows with each swept width replaced by its winner, cut at the first
    width where the chunked path won (wider rows are chunked from there on)."""
    rows = dict(current)
    for block_n in sorted(best):
        ms, launch = best[block_n]
        if block_n in chunked_times and chunked_times[block_n][0] < ms:
            return {k: v for k, v in rows.items() if k < block_n}
        rows[block_n] = row_type.of(launch)
    return rows


def chunked_rows(current: Mapping[int, object], times: Timings, row_type: Type) -> Dict[int, object]:
    """The current chunked rows with one row per measured width (a lookup takes the nearest wider)."""
    rows = dict(current)
    rows.update({n: row_type.of(launch) for n, (ms, launch) in times.items()})
    return dict(sorted(rows.items()))


def exact_rows(current: Mapping[int, object], padded: Timings, times: Timings, row_type: Type,
               margin: float = 0.03) -> Dict[int, object]:
    """The current exact-width rows, with each measured width's row kept only where its chunks beat
    the padded launch (``padded``) by more than ``margin``: within the timing noise, the table's
    ordinary row stays."""
    rows = dict(current)
    for n, (ms, launch) in times.items():
        if launch.single_chunk or n % launch.block_n:
            raise ValueError(f"an exact row of width {n} needs chunks that tile it, got {launch}")
        rows.pop(n, None)
        if n in padded and ms < padded[n][0] * (1 - margin):
            rows[n] = row_type.of(launch)
    return dict(sorted(rows.items()))


def row_literal(row) -> str:
    """``BackwardRow(rows_per_program=4, num_warps=8, programs_per_sm=3)``: the fields that differ
    from their defaults, by name."""
    fields = [f"{f.name}={getattr(row, f.name)!r}" for f in dataclasses.fields(row)
              if f.default is dataclasses.MISSING or getattr(row, f.name) != f.default]
    return f"{type(row).__name__}({', '.join(fields)})"


def _table_literal(name: str, rows_by_size: Mapping[int, Mapping[int, object]]) -> str:
    lines = [f"{name} = {{"]
    for element_bytes in sorted(rows_by_size):
        if not rows_by_size[element_bytes]:
            lines.append(f"    {element_bytes}: {{}},")
            continue
        lines.append(f"    {element_bytes}: {{")
        for width, row in sorted(rows_by_size[element_bytes].items()):
            lines.append(f"        {width}: {row_literal(row)},")
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def table_text(source: str, forward, forward_chunked, backward, backward_chunked, forward_exact=None,
               backward_exact=None) -> str:
    """The lines between the marks: ``SOURCE`` and the six tables, each
    ``{element_bytes: {row width: row}}`` (no exact rows where none are given)."""
    no_rows = {2: {}, 4: {}}
    return (f"SOURCE = {source!r}\n"
            + _table_literal("FORWARD", forward)
            + _table_literal("FORWARD_CHUNKED", forward_chunked)
            + _table_literal("BACKWARD", backward)
            + _table_literal("BACKWARD_CHUNKED", backward_chunked)
            + _table_literal("FORWARD_EXACT", forward_exact or no_rows)
            + _table_literal("BACKWARD_EXACT", backward_exact or no_rows))


def rewrite_table(text: str, path: str = table.__file__) -> None:
    """Replace the lines between the marks of ``path`` (``table.py``) with ``text``."""
    with open(path) as f:
        body = f.read()
    if body.count(BEGIN) != 1 or body.count(END) != 1:
        raise ValueError(f"{path}: expected one {BEGIN.strip()!r} and one {END.strip()!r} line")
    head, rest = body.split(BEGIN)
    _, tail = rest.split(END)
    with open(path, "w") as f:
        f.write(head + BEGIN + text + END + tail)
