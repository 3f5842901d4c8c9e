"""The launch sweep's candidates (scripts/sweep_launch.py), without a GPU: what it would time."""

import importlib.util
import pathlib
import sys

import pytest

pytest.importorskip("triton")  # the script imports the kernels' launch module

from layernorm.kernels import table  # noqa: E402

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "sweep_launch.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("sweep_launch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sweep_launch"] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["sweep_launch"]


def test_exact_candidates_tile_their_width_with_enough_in_flight(sweep):
    for n in sweep.EXACT_WIDTHS:
        assert n & (n - 1), n  # an exact width is not a power of two
        for backward in (False, True):
            candidates = sweep.exact_candidates(n, backward, quick=False)
            assert candidates, (n, backward)
            for c in candidates:
                assert not c.single_chunk and c.block_n == table.exact_chunk(n) and n % c.block_n == 0
                assert 4 <= c.block_m * c.block_n / (c.num_warps * 32) <= 16, c
                assert (c.programs_per_sm > 0) == backward, c  # the backward's grid is persistent
            quick = sweep.exact_candidates(n, backward, quick=True)
            assert 0 < len(quick) <= len(candidates) and set(quick) <= set(candidates)


def test_persistent_chunked_forward_candidates_fit_one_sm(sweep):
    chunked = sweep.forward_candidates(65536, single=False, quick=False)
    persistent = [c for c in chunked if c.programs_per_sm > 0]
    assert persistent and {c.programs_per_sm for c in persistent} == {1, 2}
    assert all(c.num_warps * c.programs_per_sm <= 32 for c in persistent)  # 1024 threads an SM at most
    assert any(c.programs_per_sm == 0 for c in chunked)  # the non-persistent ones stay


def test_within_budget_stops_at_the_deadline(sweep, capsys):
    import time

    assert list(sweep.within_budget([768, 1536], time.time() + 60, "widths")) == [768, 1536]
    assert list(sweep.within_budget([768, 1536], time.time() - 1, "widths")) == []
    assert "768" in capsys.readouterr().out
