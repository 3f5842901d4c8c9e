"""The launch sweep's candidates (scripts/sweep_launch.py), without a GPU: what it would time."""

import importlib.util
import inspect
import os
import pathlib
import sys

import pytest
import torch

pytest.importorskip("triton")  # the script imports the kernels' launch module

from layernorm.kernels import table  # noqa: E402

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "sweep_launch.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("sweep_launch", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["sweep_launch"] = module  # dataclasses look their module up while the file runs
    # The script imports the kernels: decorated for the interpreter where the harness runs them so
    # (Triton reads the variable as it decorates), not compiled for the rest of this process.
    saved = os.environ.get("TRITON_INTERPRET")
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["sweep_launch"]
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


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


def test_paired_backward_candidates_are_offered_for_the_widest_rows_only(sweep):
    def paired(n):
        return [c for c in sweep.backward_candidates(n, single=False, quick=False) if c.band_rows]

    assert not paired(8192)  # register rows and the held partial sums cover it
    for n in (16384, 65536):
        found = paired(n)
        assert {c.band_rows for c in found} == {16, 32, 64} and {c.block_n for c in found} == {2048, 4096}
        assert all(c.block_m == 1 and c.programs_per_sm == 1 and not (c.split or c.hold_partials) for c in found)


def test_within_budget_stops_at_the_deadline(sweep, capsys):
    import time

    assert list(sweep.within_budget([768, 1536], time.time() + 60, "widths")) == [768, 1536]
    assert list(sweep.within_budget([768, 1536], time.time() - 1, "widths")) == []
    assert "768" in capsys.readouterr().out


@pytest.fixture
def fake_gpu(sweep, monkeypatch):
    """Timings without a GPU: a launch's "time" is a function of its shape; inputs are stand-ins."""
    import torch

    def ms_of(launch):
        if launch.block_m == 3 or launch.num_warps == 32:
            raise RuntimeError("out of resources")  # a shape the compiler refuses
        # register rows cost 1.0; chunked ones 0.5 with 8 rows per program, 2.0 otherwise
        return 1.0 if launch.single_chunk else (0.5 if launch.block_m == 8 else 2.0)

    monkeypatch.setattr(sweep, "inputs", lambda m, n, dtype: (None, None, None, None))
    monkeypatch.setattr(sweep, "time_forward", lambda cand, x, w, b, quick: (ms_of(cand), "stats"))
    monkeypatch.setattr(sweep, "time_backward", lambda cand, x, w, b, dy, stats, quick: ms_of(cand))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    return ms_of


def test_time_candidates_logs_each_timing_and_each_refused_shape(sweep, fake_gpu):
    log = []
    cands = [table.Launch(8, 256, 8, False), table.Launch(3, 256, 8, False), table.Launch(2, 1024, 8, True)]
    timed = sweep.time_candidates(cands, fake_gpu, {"pass": "forward", "n": 768}, log)
    assert timed == [(0.5, cands[0]), (1.0, cands[2])]
    assert [("ms" in r, "error" in r, r["n"], r["launch"]["block_m"]) for r in log] == [
        (True, False, 768, 8), (False, True, 768, 3), (True, False, 768, 2)]


def test_exact_sweep_writes_the_rows_that_beat_the_padded_launch(sweep, fake_gpu):
    log = []
    forward, backward = sweep.sweep_exact(2, False, log, deadline=float("inf"))
    for rows, row_type in ((forward, table.ForwardChunkedRow), (backward, table.BackwardChunkedRow)):
        # where an 8-row candidate exists it runs at 0.5 against the padded 1.0: that row is written
        for n in sweep.EXACT_WIDTHS:
            eights = [c for c in sweep.exact_candidates(n, row_type is table.BackwardChunkedRow, False)
                      if c.block_m == 8]
            if eights:
                assert rows[n] == row_type.of(eights[0]), n
            else:
                assert n not in rows, n  # 2.0 against 1.0: the padded launch stays
    assert all(r.get("exact") and r["element_bytes"] == 2 for r in log)
    assert {r["pass"] for r in log} == {"forward", "backward"}


def test_power_of_two_sweep_keeps_the_fastest_launch_of_each_width(sweep, fake_gpu):
    log = []
    forward, forward_chunked, backward, backward_chunked = sweep.sweep(2, True, log, deadline=float("inf"))
    # every register candidate costs 1.0 here: the first one the compiler takes is kept (min is stable)
    for n in (256, 1024, 4096):
        ran = [c for c in sweep.forward_candidates(n, True, True) if c.num_warps != 32 and c.block_m != 3]
        assert forward[n] == table.ForwardRow.of(ran[0]), n
        ran = [c for c in sweep.backward_candidates(n, True, True) if c.num_warps != 32 and c.block_m != 3]
        assert backward[n] == table.BackwardRow.of(ran[0]), n
    # at 65536 only the chunked path runs (2.0 each): its first runnable candidate is the row
    ran = [c for c in sweep.forward_candidates(65536, False, True) if c.num_warps != 32]
    assert forward_chunked[65536] == table.ForwardChunkedRow.of(ran[0])
    assert any("error" in r for r in log)  # the 32-warp candidates were refused and logged
    assert all(("ms" in r) != ("error" in r) for r in log)


def test_jobs_are_every_launch_the_sweep_times(sweep, fake_gpu, monkeypatch):
    """What precompiling compiles ahead (sweep.jobs) is what the sweep then launches: each
    candidate, pass, width and row count timed, and nothing else."""
    timed = set()
    monkeypatch.setattr(sweep, "inputs", lambda m, n, dtype: ((dtype, m, n), None, None, None))

    def forward(cand, x, w, b, quick):
        timed.add((False, *x, cand))
        return fake_gpu(cand), "stats"

    def backward(cand, x, w, b, dy, stats, quick):
        timed.add((True, *x, cand))
        return fake_gpu(cand)

    monkeypatch.setattr(sweep, "time_forward", forward)
    monkeypatch.setattr(sweep, "time_backward", backward)
    for element_bytes in (2, 4):
        sweep.sweep(element_bytes, False, [], deadline=float("inf"))
        padded = {(n, sweep.table.padded_launch(n, element_bytes, backward=b)) for n in sweep.EXACT_WIDTHS
                  for b in (False, True)}
        sweep.sweep_exact(element_bytes, False, [], deadline=float("inf"))
        planned = {(j.backward, j.dtype, j.m, j.n, j.shape) for j in sweep.jobs(element_bytes, quick=False)}
        got = {t for t in timed if t[1] == sweep.DTYPES[element_bytes]}
        assert planned <= got  # every launch compiled ahead is timed
        # and the only ones timed but not compiled ahead: the padded launches the exact rows are
        # measured against, which come from the rows just swept
        assert {(t[3], t[4]) for t in got - planned} <= padded


def test_widths_limit_what_is_compiled_and_timed(sweep, fake_gpu, monkeypatch):
    """--widths: only those widths are compiled ahead and timed; the table keeps its other rows."""
    monkeypatch.setattr(sweep, "ONLY_WIDTHS", {65536, 768})
    assert sweep.width_order() == [65536] and sweep.exact_widths() == [768]
    assert {j.n for j in sweep.jobs(2, quick=True)} == {65536, 768}
    log = []
    forward, forward_chunked, backward, backward_chunked = sweep.sweep(2, True, log, deadline=float("inf"))
    assert {r["n"] for r in log} == {65536}
    assert forward == table.FORWARD[2] and backward == table.BACKWARD[2]  # no register width swept
    assert set(backward_chunked) == set(table.BACKWARD_CHUNKED[2]) | {65536}


def test_a_candidate_with_wrong_gradients_is_refused(sweep):
    """The sweep checks each backward candidate's gradients against PyTorch's before timing it."""
    g = torch.Generator().manual_seed(5)
    x = (0.5 * torch.randn(64, 48, generator=g) - 2.3).bfloat16()
    w, b = (torch.randn(48, generator=g).bfloat16() for _ in range(2))
    dy = torch.randn(64, 48, generator=g).bfloat16()
    expected = sweep.expected_grads(x, w, b, dy)
    xd = x.double().requires_grad_()
    wd, bd = (t.double().requires_grad_() for t in (w, b))
    torch.nn.functional.layer_norm(xd, (48,), wd, bd).backward(dy.double())
    right = tuple(t.grad.to(torch.bfloat16) for t in (xd, wd, bd))  # rounded as a bf16 kernel's are
    sweep.check_backward("right", right, expected)
    for i in range(3):
        wrong = list(right)
        wrong[i] = wrong[i] * 1.1
        with pytest.raises(RuntimeError, match="relative error"):
            sweep.check_backward("wrong", wrong, expected)
    nan = (right[0].clone().fill_(float("nan")), right[1], right[2])
    with pytest.raises(RuntimeError, match="wrong dx"):
        sweep.check_backward("nan", nan, expected)
    assert sweep.expected_grads(x, w, b, dy) is expected  # kept while the width is swept


@pytest.mark.parametrize("launch,kernel,flags", [
    (table.Launch(1, 4096, 16, True, 1), "norm_bwd_kernel", {"SINGLE_CHUNK": True}),
    (table.Launch(8, 1024, 8, False, 4, split=True), "norm_bwd_tiles_kernel", {}),
    (table.Launch(1, 2048, 8, False, 1, band_rows=32), "norm_bwd_paired_kernel", {"TILE_M": 2}),
    (table.Launch(1, 4096, 16, False, 1, hold_partials=True, unroll=False), "norm_bwd_kernel",
     {"HOLD_PARTIALS": True, "NUM_CHUNKS": 4, "UNROLL": False}),
], ids=["register", "split", "paired", "held loop"])
def test_the_register_report_compiles_the_kernel_each_backward_path_launches(sweep, monkeypatch, launch, kernel,
                                                                            flags, capsys):
    """``--registers`` compiles, for a backward row, the kernel and flags its launches use."""
    from layernorm.kernels import norm, offline

    compiled = []
    monkeypatch.setattr(offline, "compiled_resources",
                        lambda k, consts, *_: compiled.append((k, consts)) or (64, 0))
    sweep._report_row("backward", 16384, launch, "layer", "bf16")
    ((got, consts),) = compiled
    assert got is getattr(norm, kernel)
    assert flags.items() <= consts.items() and consts["BLOCK_N"] == launch.block_n
    assert set(consts) <= set(inspect.signature(got.fn).parameters)  # flags the kernel has, only
    assert "16384" in capsys.readouterr().out
