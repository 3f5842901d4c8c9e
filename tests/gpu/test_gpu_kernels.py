"""The Triton kernels on a CUDA GPU at real sizes (``pytest -m gpu tests/gpu``).

What tests/test_kernels.py checks through the interpreter, here compiled and
at the sizes that take each launch-table row and the chunked path (up to
N = 262144), plus what only a GPU shows: dweight/dbias bitwise repeatable
across runs, CUDA graph capture and replay, ``torch.compile(fullgraph=True)``
with Inductor. Every buffer the kernels are handed is NaN-filled first.

Tolerance rule: error against float64 at most twice PyTorch's own error in
the dtype (on the same GPU), plus half a unit of roundoff.
"""

import functools
import os

import pytest
import torch
import torch.nn.functional as F

from helpers import params as cpu_params
from helpers import random_like_activations, relative_error as error
from kernel_check import DTYPES, KINDS, atol, check, leaves, ours

# tests/gpu is marked gpu and skipped where no GPU is (conftest.py)
if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("TRITON_INTERPRET=1 would interpret the kernels; unset it for the GPU tests", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("poisoned_buffers")
activations = functools.partial(random_like_activations, device="cuda")
params = functools.partial(cpu_params, device="cuda")


# N: 1, odd, prime, powers of two, transformer widths, each register row of the table, the
# chunked path (up to 262144). Every width in bf16; every dtype and the fused add on a subset,
# which keeps the number of kernel compilations (the bulk of the time) down.
WIDTHS = [1, 7, 127, 768, 1000, 2048, 4099, 8192, 12289, 16384, 32768, 65536, 262144]
CASES = (
    [(kind, n, torch.bfloat16) for kind in ("layer", "rms") for n in WIDTHS]
    + [(kind, n, dtype) for kind in ("layer", "rms") for n in (7, 768, 4099, 65536)
       for dtype in (torch.float32, torch.float16)]
    + [(kind, n, dtype) for kind in ("add_layer", "add_rms") for n in (1, 768, 4099, 65536) for dtype in DTYPES]
)


@pytest.mark.parametrize("kind,n,dtype", CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_widths_dtypes_kinds(kind, n, dtype):
    m = max(3, min(4096, (1 << 22) // n))
    x = activations(m, n, dtype=dtype, seed=n)
    w, b = params(n, dtype)
    residual = activations(m, n, dtype=dtype, seed=n + 1, offset=0.0) if kind.startswith("add") else None
    check(kind, x, (n,), w, b, residual=residual)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("n", [768, 4096, 65536])
@pytest.mark.parametrize("kind", KINDS)
def test_float32_weights_on_half_input(kind, n, dtype):
    x = activations(256, n, dtype=dtype)
    w, b = params(n, torch.float32)
    residual = activations(256, n, dtype=dtype, seed=5, offset=0.0) if kind.startswith("add") else None
    check(kind, x, (n,), w, b, residual=residual)


@pytest.mark.parametrize("n", [1000, 65536])
def test_optional_parameters_strides_and_shapes(n):
    x = activations(64, n, dtype=torch.bfloat16)
    w, b = params(n, torch.bfloat16)
    for kind in ("layer", "rms"):
        check(kind, x, (n,), None, None)
        check(kind, x, (n,), w, None)
    check("layer", x, (n,), None, b)
    wide = activations(64, n + 96, dtype=torch.bfloat16)[:, 32:32 + n]
    check("layer", wide, (n,), w, b)
    check("add_layer", wide, (n,), w, b, residual=activations(64, n + 8, dtype=torch.bfloat16, seed=2)[:, :n])
    w4, b4 = (t.view(4, n // 4) for t in params(n, torch.float32))
    check("layer", activations(2, 3, 4, n // 4, dtype=torch.float32), (4, n // 4), w4, b4)
    check("layer", activations(4, n // 4, dtype=torch.float32), (4, n // 4), w4, b4)  # one row, 2-D


@pytest.mark.parametrize("kind", KINDS)
def test_empty_batch(kind):
    x = activations(0, 4096, dtype=torch.bfloat16)
    w, b = params(4096, torch.bfloat16)
    out, grads = check(kind, x, (4096,), w, b, residual=x.clone() if kind.startswith("add") else None)
    assert out[0].shape == (0, 4096) and torch.count_nonzero(grads[2]) == 0  # dweight of no rows


@pytest.mark.parametrize("n", [4096, 65536])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_large_offsets(dtype, n):
    x = activations(64, n, dtype=dtype, offset=1e4, scale=1.0)
    w, b = params(n, dtype)
    check("layer", x, (n,), w, b)


@pytest.mark.parametrize("kind", ["add_layer", "add_rms"])
def test_residual_in_float32(kind):
    x = activations(512, 4096, dtype=torch.bfloat16, offset=0.0)
    residual = activations(512, 4096, dtype=torch.bfloat16, seed=4)
    w, b = params(4096, torch.bfloat16)
    out, _ = check(kind, x, (4096,), w, b, residual=residual, residual_in_fp32=True)
    assert out[1].dtype == torch.float32


@pytest.mark.parametrize("n", [768, 4096, 65536])
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_parameter_gradients_are_bitwise_repeatable(kind, n):
    from layernorm.kernels import ops

    m = (1 << 24) // n
    x = activations(m, n, dtype=torch.bfloat16)
    dy = activations(m, n, dtype=torch.bfloat16, seed=9, offset=0.0, scale=1.0)
    w, b = params(n, torch.float32)
    runs = []
    for _ in range(3):
        ww, bb = leaves(w, b)
        y = ops.triton_layer_norm(x, (n,), ww, bb, 1e-5) if kind == "layer" else ops.triton_rms_norm(x, (n,), ww, 1e-5)
        y.backward(dy)
        runs.append([t.grad for t in (ww, bb) if t.grad is not None])
    for later in runs[1:]:
        assert all(torch.equal(a, c) for a, c in zip(runs[0], later))


@pytest.mark.parametrize("kind", KINDS)
def test_cuda_graph_capture_and_replay(kind):
    from layernorm.kernels import ops

    n = 4096
    x, res = leaves(activations(256, n, dtype=torch.bfloat16), activations(256, n, dtype=torch.bfloat16, seed=3))
    w, b = leaves(*params(n, torch.float32))
    dy = activations(256, n, dtype=torch.bfloat16, seed=4, offset=0.0, scale=1.0)

    def step():
        if kind == "layer":
            y = ops.triton_layer_norm(x, (n,), w, b, 1e-5)
            return y, torch.autograd.grad(y, (x, w, b), dy)
        if kind == "rms":
            y = ops.triton_rms_norm(x, (n,), w, 1e-5)
            return y, torch.autograd.grad(y, (x, w), dy)
        if kind == "add_layer":
            y, r = ops.triton_add_layer_norm(x, res, (n,), w, b, 1e-5)
            return y, torch.autograd.grad((y, r), (x, res, w, b), (dy, dy))
        y, r = ops.triton_add_rms_norm(x, res, (n,), w, 1e-5)
        return y, torch.autograd.grad((y, r), (x, res, w), (dy, dy))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()  # compile the kernels outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y, static_grads = step()
    with torch.no_grad():
        x.copy_(activations(256, n, dtype=torch.bfloat16, seed=11))
        res.copy_(activations(256, n, dtype=torch.bfloat16, seed=12))
    graph.replay()
    torch.cuda.synchronize()
    eager_y, eager_grads = step()
    assert torch.equal(static_y, eager_y)
    for a, c in zip(static_grads, eager_grads):
        assert torch.equal(a, c)


def test_torch_compile_fullgraph_with_inductor():
    import layernorm

    n = 1024
    x = activations(64, n, dtype=torch.bfloat16)
    res = activations(64, n, dtype=torch.bfloat16, seed=2)
    w, b = params(n, torch.float32)

    def block(x, res, w, b):
        y, r = layernorm.add_layer_norm(x, res, n, w, b, impl="triton")
        z = layernorm.rms_norm(torch.nn.functional.gelu(y), n, w, impl="triton")
        return (z.float() * r.float()).sum()

    compiled = torch.compile(block, fullgraph=True)
    results = []
    for fn in (block, compiled):
        args = leaves(x, res, w, b)
        loss = fn(*args)
        results.append([loss, *torch.autograd.grad(loss, args)])
    for eager, comp in zip(*results):
        torch.testing.assert_close(comp.float(), eager.float(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_torch_impl_takes_float32_parameters_on_half_input(dtype):
    """impl="torch" on CUDA: PyTorch's kernel refuses the mix, our dispatch promotes it."""
    import layernorm

    x = activations(64, 1024, dtype=dtype)
    w = activations(1024, seed=1, offset=1.0)
    b = activations(1024, seed=2, offset=0.0)
    y = layernorm.layer_norm(x, 1024, w, b, impl="torch")
    want = F.layer_norm(x.double(), (1024,), w.double(), b.double())
    assert y.dtype == dtype
    assert error(y, want) <= 2 * atol(dtype, "cuda")


@pytest.mark.parametrize("n", [8192, 12289, 16384])
@pytest.mark.parametrize("kind", ["layer", "rms", "add_layer"])
def test_lean_register_backward_at_its_widths(kind, n):
    """The sweep's lean register rows (1 row, 32 warps, no double buffering) at real widths."""
    from layernorm.kernels import table

    m = 600  # several row blocks per program on 132 SMs
    x = activations(m, n, dtype=torch.bfloat16, seed=n + 1)
    w, b = params(n, torch.float32)
    residual = activations(m, n, dtype=torch.bfloat16, seed=n + 2, offset=0.0) if kind.startswith("add") else None
    block_n = 1 << (n - 1).bit_length()
    with table.forced(launch=table.Launch(1, block_n, 32, True, 1, lean=True)):
        check(kind, x, (n,), w, b, residual=residual)


@pytest.mark.parametrize("n", [16384, 65536, 100003])
@pytest.mark.parametrize("kind", ["layer", "rms", "add_layer"])
def test_split_backward_at_wide_rows(kind, n):
    """The split backward (row sums, then column tiles x row bands), a sweep candidate for wide rows."""
    from layernorm.kernels import table

    m = 300
    x = activations(m, n, dtype=torch.bfloat16, seed=n + 3)
    w, b = params(n, torch.float32)
    residual = activations(m, n, dtype=torch.bfloat16, seed=n + 4, offset=0.0) if kind.startswith("add") else None
    with table.forced(launch=table.Launch(8, 1024, 8, False, 4, split=True)):
        check(kind, x, (n,), w, b, residual=residual)


@pytest.mark.parametrize("n", [8192, 12289, 16384])
@pytest.mark.parametrize("kind", ["layer", "rms", "add_layer"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_chunked_backward_holding_its_partial_sums_at_its_widths(kind, n, dtype):
    """The chunked backward with its partial sums in registers (a sweep candidate up to 16384
    columns): 4096-column chunks, 12289 in 4 of them with the last one nearly empty."""
    from layernorm.kernels import table

    m = 600  # several row blocks per program on 132 SMs
    x = activations(m, n, dtype=dtype, seed=n + 5)
    w, b = params(n, torch.float32)
    residual = activations(m, n, dtype=dtype, seed=n + 6, offset=0.0) if kind.startswith("add") else None
    with table.forced(launch=table.Launch(1, 4096, 16, False, 1, hold_partials=True)):
        check(kind, x, (n,), w, b, residual=residual)


@pytest.mark.parametrize("kind", KINDS)
def test_direct_launch_gives_what_tritons_path_gives(kind, monkeypatch):
    """The cached-compiled-kernel launch against Triton's own, bitwise, on every launch of a
    forward + backward (each key launched twice, so the second call takes the direct path),
    with strided, unaligned inputs too."""
    from layernorm.kernels import direct

    n = 1000
    x = activations(65, n + 1, dtype=torch.bfloat16)[:64, 1:]  # strided rows, 2 bytes off 16-byte alignment
    w, b = params(n, torch.float32)
    r = activations(64, n, dtype=torch.bfloat16, seed=5)
    dy = activations(64, n, dtype=torch.bfloat16, seed=6, offset=0.0, scale=1.0)

    def run():
        a = leaves(x, r, w, b)
        y, s = ours(kind, a[0], a[1], (n,), a[2], a[3], 1e-5, False)
        outs = [y] + ([s] if s is not None else [])
        torch.autograd.backward(outs, [dy] * len(outs))
        return [t.detach() for t in outs] + [t.grad for t in a if t is not None and t.grad is not None]

    monkeypatch.setattr(direct, "ENABLED", False)
    expected = run()
    monkeypatch.setattr(direct, "ENABLED", True)
    for _ in range(2):
        got = run()
        assert all(torch.equal(g, e) for g, e in zip(got, expected))


@pytest.mark.parametrize("n", [1024, 4096, 20000])  # register rows, and chunked ones
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_round_before_weight_rounds_where_llama_does(dtype, n):
    """rms_norm(round_before_weight=True) against Llama's own expression, element by element (the
    interpreter cannot show it for bfloat16: it truncates where the GPU rounds to nearest)."""
    import layernorm

    x = activations(256, n, dtype=dtype)
    w = (1.0 + 0.3 * activations(n, dtype=torch.float64, seed=4, offset=0.0, scale=1.0)).to(dtype)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
    theirs = w * h.to(dtype)
    ours = layernorm.rms_norm(x, (n,), w, 1e-6, impl="triton", round_before_weight=True)
    once = layernorm.rms_norm(x, (n,), w, 1e-6, impl="triton")
    differ = (ours != theirs).float().mean().item()
    assert differ <= 0.02, f"{differ:.1%} of elements differ from Llama's order"
    assert (once != theirs).float().mean().item() > 4 * differ


@pytest.mark.parametrize("n", [16384, 65533])
@pytest.mark.parametrize("kind", ["layer", "rms", "add_layer"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_paired_backward_at_its_widths(kind, n, dtype):
    """The paired backward (a sweep candidate for the widest rows): 2048-column chunks and tiles,
    bands of 32 rows, the last one short; 65533 columns leave the last tile ragged."""
    from layernorm.kernels import table

    m = 100
    x = activations(m, n, dtype=dtype, seed=n + 7)
    w, b = params(n, torch.float32)
    residual = activations(m, n, dtype=dtype, seed=n + 8, offset=0.0) if kind.startswith("add") else None
    with table.forced(launch=table.Launch(1, 2048, 8, False, 1, band_rows=32)):
        check(kind, x, (n,), w, b, residual=residual)
