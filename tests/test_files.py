"""layernorm.cli.files: results written whole or not at all."""

import os

import pytest

from layernorm.cli.files import write_atomic


def test_text_and_bytes_replace_the_whole_file(tmp_path):
    path = tmp_path / "deeper" / "report.md"  # missing folders are made
    write_atomic(path, "é first\n" * 100)
    write_atomic(path, "second")
    assert path.read_text(encoding="utf-8") == "second"
    write_atomic(str(path), b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]  # no temporary file left


def test_a_write_cut_short_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_atomic(path, "old")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "new, but never finished")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # nor its temporary file
