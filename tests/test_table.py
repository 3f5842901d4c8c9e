"""The launch table (layernorm.kernels.table) and its writer (layernorm.kernels.table_writer).

No Triton needed: rows are looked up, swept launches turned into rows, and the
literals between the BEGIN / END TABLE marks rewritten, all in Python. The
kernels on the launches these rows give are tested in tests/test_kernels.py.
"""

import dataclasses
import importlib.util
import sys

import pytest

from layernorm.kernels import table, table_writer
from layernorm.kernels.table import (BackwardChunkedRow, BackwardRow, ForwardChunkedRow, ForwardRow, Launch)

TABLES = ("FORWARD", "FORWARD_CHUNKED", "BACKWARD", "BACKWARD_CHUNKED", "FORWARD_EXACT", "BACKWARD_EXACT")


@pytest.fixture
def fresh_lookups():
    """Lookups cached before a table is patched would answer from the old table."""
    table._cached.cache_clear()
    yield
    table._cached.cache_clear()


def test_every_row_stands_for_its_launch_and_back():
    for name in TABLES:
        for element_bytes, rows in getattr(table, name).items():
            for width, row in rows.items():
                launch = row.launch(row.chunk if hasattr(row, "chunk") else width)
                assert launch.single_chunk == (name in ("FORWARD", "BACKWARD")), (name, width)
                assert type(row).of(launch) == row, (name, element_bytes, width)


def test_rows_give_the_launches_their_fields_name():
    assert ForwardRow(rows_per_program=1, num_warps=32, programs_per_sm=1).launch(16384) == Launch(
        1, 16384, 32, True, 1)
    assert ForwardChunkedRow(chunk=4096, rows_per_program=1, num_warps=8).launch(4096) == Launch(1, 4096, 8, False)
    assert BackwardRow(rows_per_program=2, num_warps=4, programs_per_sm=1, lean=True).launch(64) == Launch(
        2, 64, 4, True, 1, lean=True)
    assert BackwardChunkedRow(chunk=16, rows_per_program=2, num_warps=4, programs_per_sm=0.5, split=True).launch(
        16) == Launch(2, 16, 4, False, 0.5, split=True)
    held = BackwardChunkedRow(chunk=4096, rows_per_program=1, num_warps=16, programs_per_sm=1, hold_partials=True)
    assert held.launch(4096) == Launch(1, 4096, 16, False, 1, hold_partials=True)
    assert BackwardChunkedRow.of(held.launch(4096)) == held
    looped = dataclasses.replace(held, unroll=False)
    assert looped.launch(4096) == Launch(1, 4096, 16, False, 1, hold_partials=True, unroll=False)
    assert BackwardChunkedRow.of(looped.launch(4096)) == looped
    assert table_writer.row_literal(looped).endswith("hold_partials=True, unroll=False)")
    paired = BackwardChunkedRow(chunk=2048, rows_per_program=1, num_warps=8, programs_per_sm=1, band_rows=32)
    assert paired.launch(2048) == Launch(1, 2048, 8, False, 1, band_rows=32)
    assert BackwardChunkedRow.of(paired.launch(2048)) == paired
    assert table_writer.row_literal(paired).endswith("programs_per_sm=1, band_rows=32)")


def test_lookup_takes_the_register_row_of_the_width_else_the_nearest_wider_chunked_row(fresh_lookups):
    assert table.forward_launch(700, 2) == table.FORWARD[2][1024].launch(1024)
    assert table.backward_launch(3, 4) == table.BACKWARD[4][4].launch(4)
    widest = max(table.BACKWARD[2])
    chunked = table.BACKWARD_CHUNKED[2]
    nearest = min(w for w in chunked if w >= 2 * widest)
    assert table.backward_launch(2 * widest, 2) == chunked[nearest].launch(chunked[nearest].chunk)
    assert table.backward_launch(10 * max(chunked), 2) == chunked[max(chunked)].launch(chunked[max(chunked)].chunk)
    with table.forced(max_single_block_n=16, chunk=16, rows_per_program=3):
        launch = table.forward_launch(40, 4)
    assert not launch.single_chunk and launch.block_n == 16 and launch.block_m == 3


def test_split_rows_come_from_the_table(monkeypatch, fresh_lookups):
    """``split`` in a BACKWARD_CHUNKED row turns the split on for the widths it covers."""
    row = BackwardChunkedRow(chunk=16, rows_per_program=2, num_warps=4, programs_per_sm=1, split=True)
    monkeypatch.setitem(table.BACKWARD_CHUNKED, 4, {k: row for k in table.BACKWARD_CHUNKED[4]})
    with table.forced(max_single_block_n=16):
        assert table.backward_launch(40, 4) == Launch(2, 16, 4, False, 1, split=True)
        assert not table.backward_launch(40, 2).split  # the 2-byte rows were left as they are
    assert not table.backward_launch(40, 4).split  # a register row: never split


def test_lean_rows_come_from_the_table(monkeypatch, fresh_lookups):
    """``lean`` in a BACKWARD row turns lean on for that width, and only for it."""
    monkeypatch.setitem(table.BACKWARD, 2, {**table.BACKWARD[2], 64: BackwardRow(2, 4, 1, lean=True)})
    assert table.backward_launch(50, 2) == Launch(2, 64, 4, True, 1, lean=True)
    assert not table.backward_launch(100, 2).lean


def test_sweep_rows_read_back_as_the_launches_swept(monkeypatch, fresh_lookups):
    """What the sweep writes into the table, the lookup reads back unchanged: register rows (lean
    or not), chunked rows (split, paired or neither), forward rows (persistent or not)."""
    bwd_register = {64: (1.0, Launch(2, 64, 4, True, 2)), 128: (1.0, Launch(1, 128, 8, True, 1, lean=True))}
    bwd_chunked = {8192: (1.0, Launch(4, 512, 8, False, 4, split=True)), 16384: (1.0, Launch(2, 2048, 8, False, 2)),
                   65536: (1.0, Launch(1, 2048, 16, False, 1, band_rows=32))}
    fwd_register = {64: (1.0, Launch(4, 64, 4, True)), 128: (1.0, Launch(1, 128, 8, True, 1))}
    fwd_chunked = {8192: (1.0, Launch(1, 4096, 8, False)), 65536: (1.0, Launch(1, 8192, 16, False, 1))}
    tables = {
        "BACKWARD": {2: table_writer.register_rows({}, bwd_register, {}, BackwardRow)},
        "BACKWARD_CHUNKED": {2: table_writer.chunked_rows({}, bwd_chunked, BackwardChunkedRow)},
        "FORWARD": {2: table_writer.register_rows({}, fwd_register, {}, ForwardRow)},
        "FORWARD_CHUNKED": {2: table_writer.chunked_rows({}, fwd_chunked, ForwardChunkedRow)},
    }
    for name, value in tables.items():
        monkeypatch.setattr(table, name, value)
    for n, (_, swept) in bwd_register.items():
        assert table.backward_launch(n, 2) == swept
    for n, (_, swept) in fwd_register.items():
        assert table.forward_launch(n, 2) == swept
    assert table.backward_launch(5000, 2) == bwd_chunked[8192][1]  # the nearest wider chunked row
    assert table.backward_launch(65536, 2) == bwd_chunked[65536][1]
    assert table.forward_launch(5000, 2) == fwd_chunked[8192][1]
    assert table.forward_launch(65536, 2) == fwd_chunked[65536][1]  # persistent


def test_exact_rows_tile_widths_that_are_not_powers_of_two():
    for name in ("FORWARD_EXACT", "BACKWARD_EXACT"):
        for element_bytes, rows in getattr(table, name).items():
            for width, row in rows.items():
                assert width & (width - 1), (name, width)  # a power of two needs no exact row
                assert width % row.chunk == 0 and row.chunk & (row.chunk - 1) == 0, (name, width, row)
    assert [table.exact_chunk(n) for n in (768, 1536, 3072, 5120, 6144, 12288, 96, 1)] == [
        256, 512, 1024, 1024, 2048, 4096, 32, 1]


def test_an_exact_row_serves_its_width_only(monkeypatch, fresh_lookups):
    """An exact row takes over its own width; its neighbours, the padded lookup and any forced
    setting keep the power-of-two rows."""
    row = BackwardChunkedRow(chunk=256, rows_per_program=8, num_warps=8, programs_per_sm=2)
    monkeypatch.setitem(table.BACKWARD_EXACT, 2, {768: row})
    padded = table.FORWARD[2][1024].launch(1024)
    assert table.backward_launch(768, 2) == Launch(8, 256, 8, False, 2)
    assert table.backward_launch(768, 4) == table.BACKWARD[4][1024].launch(1024)  # 4-byte rows: none
    assert table.backward_launch(769, 2) == table.BACKWARD[2][1024].launch(1024)
    assert table.padded_launch(768, 2, backward=True) == table.BACKWARD[2][1024].launch(1024)
    assert table.forward_launch(768, 2) == padded
    with table.forced(programs=3):
        assert table.backward_launch(768, 2).single_chunk


def test_exact_rows_are_written_only_where_they_beat_the_padded_launch():
    current = {1536: ForwardChunkedRow(512, 2, 4), 3072: ForwardChunkedRow(1024, 1, 8)}
    padded = {768: (10.0, Launch(16, 1024, 16, True)), 1536: (10.0, Launch(2, 2048, 8, True)),
              5120: (10.0, Launch(1, 8192, 16, True))}
    times = {768: (9.0, Launch(8, 256, 8, False)),  # 10% faster: written
             1536: (9.8, Launch(4, 512, 8, False)),  # 2%: within the margin, its old row dropped
             5120: (10.5, Launch(2, 1024, 8, False))}  # slower
    rows = table_writer.exact_rows(current, padded, times, ForwardChunkedRow)
    assert rows == {768: ForwardChunkedRow(256, 8, 8), 3072: ForwardChunkedRow(1024, 1, 8)}
    with pytest.raises(ValueError, match="tile"):
        table_writer.exact_rows({}, padded, {768: (1.0, Launch(8, 512, 8, False))}, ForwardChunkedRow)


def test_register_rows_stop_where_the_chunked_path_wins():
    current = {w: BackwardRow(1, 4, 2) for w in (64, 128, 256, 512)}
    best = {128: (2.0, Launch(2, 128, 8, True, 3)), 256: (5.0, Launch(1, 256, 8, True, 1))}
    rows = table_writer.register_rows(current, best, {256: (4.0, Launch(1, 64, 4, False, 1))}, BackwardRow)
    assert rows == {64: BackwardRow(1, 4, 2), 128: BackwardRow(2, 8, 3)}


def test_row_literal_names_the_fields_that_differ_from_their_defaults():
    assert table_writer.row_literal(ForwardRow(16, 8)) == "ForwardRow(rows_per_program=16, num_warps=8)"
    assert table_writer.row_literal(BackwardChunkedRow(2048, 1, 16, 0.5, True)) == (
        "BackwardChunkedRow(chunk=2048, rows_per_program=1, num_warps=16, programs_per_sm=0.5, split=True)")


def test_table_literal_is_what_the_writer_writes():
    """The lines between the marks are the writer's own: rewriting the current table changes nothing."""
    text = table_writer.table_text(table.SOURCE, *(getattr(table, name) for name in TABLES))
    with open(table.__file__) as f:
        body = f.read()
    assert table_writer.BEGIN + text + table_writer.END in body


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def test_rewrite_replaces_the_lines_between_the_marks_only(tmp_path):
    path = tmp_path / "table.py"
    with open(table.__file__) as f:
        original = f.read()
    path.write_text(original)
    forward = {2: {1: ForwardRow(7, 2)}, 4: {1: ForwardRow(9, 4, programs_per_sm=2)}}
    backward_chunked = {2: {8192: BackwardChunkedRow(512, 4, 8, 4, split=True)}}
    forward_exact = {2: {768: ForwardChunkedRow(256, 8, 8)}, 4: {}}
    text = table_writer.table_text("a test", forward, table.FORWARD_CHUNKED, table.BACKWARD, backward_chunked,
                                   forward_exact)
    table_writer.rewrite_table(text, str(path))
    rewritten = _load(path, "rewritten_table")
    assert rewritten.SOURCE == "a test"
    assert rewritten.FORWARD == {2: {1: rewritten.ForwardRow(7, 2)}, 4: {1: rewritten.ForwardRow(9, 4, 2)}}
    assert rewritten.BACKWARD_CHUNKED == {2: {8192: rewritten.BackwardChunkedRow(512, 4, 8, 4, True)}}
    assert rewritten.forward_launch(1, 4) == rewritten.Launch(9, 1, 4, True, 2)
    assert rewritten.FORWARD_EXACT == {2: {768: rewritten.ForwardChunkedRow(256, 8, 8)}, 4: {}}
    assert rewritten.BACKWARD_EXACT == {2: {}, 4: {}}
    assert rewritten.forward_launch(768, 2) == rewritten.Launch(8, 256, 8, False)
    before, after = path.read_text().split(table_writer.BEGIN), original.split(table_writer.BEGIN)
    assert before[0] == after[0] and before[1].split(table_writer.END)[1] == after[1].split(table_writer.END)[1]


def test_rewrite_refuses_a_file_without_its_marks(tmp_path):
    path = tmp_path / "table.py"
    path.write_text("FORWARD = {}\n")
    with pytest.raises(ValueError, match="BEGIN TABLE"):
        table_writer.rewrite_table("FORWARD = {}\n", str(path))
    assert path.read_text() == "FORWARD = {}\n"
