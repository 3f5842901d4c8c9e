"""The kernels on DTensors: rows sharded over batch or sequence dims, two CPU processes (gloo),
the kernels in Triton's interpreter; on a GPU machine (``-m gpu``) one process per GPU (NCCL),
the kernels compiled. Outputs and every gradient must equal PyTorch's op on the whole tensors;
the weight's gradient is the sum over every rank's rows."""

import datetime
import importlib.util
import socket

import pytest
import torch

# find_spec, not import: which mode Triton runs in is the harness's choice (conftest.py).
if importlib.util.find_spec("triton") is None:
    pytest.skip("triton is not installed", allow_module_level=True)
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("needs torch.distributed with gloo", allow_module_level=True)

CPU_WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, kind: str, backend: str, world: int, errors) -> None:
    import torch.nn.functional as F
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    import layernorm

    device = "cuda" if backend == "nccl" else "cpu"
    if device == "cuda":
        torch.cuda.set_device(rank)
    # A bounded timeout: a rank that failed must not leave the other waiting for CI's limit.
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        mesh = init_device_mesh(device, (world,))
        g = torch.Generator().manual_seed(0)  # the same full tensors on every rank
        n = 24
        x, r, dy = (torch.randn(4, 6, n, generator=g).to(device) for _ in range(3))
        w, b = (torch.randn(n, generator=g) + 1).to(device), torch.randn(n, generator=g).to(device)
        shard = Shard(1) if kind == "sequence" else Shard(0)  # sequence or batch parallel rows

        def run(x, r, w, b, dy, fn):
            leaves = [t.detach().clone().requires_grad_() for t in (x, r, w, b)]
            out = fn(*leaves)
            outs = out if isinstance(out, tuple) else (out,)
            torch.autograd.backward(outs, [dy] * len(outs))
            return [o.detach() for o in outs], [t.grad for t in leaves]

        def ours(x, r, w, b):
            if kind == "add":
                return layernorm.add_layer_norm(x, r, (n,), w, b, 1e-5, impl="triton")
            return layernorm.layer_norm(x, (n,), w, b, 1e-5, impl="triton")

        def torchs(x, r, w, b):
            if kind == "add":
                s = x + r
                return F.layer_norm(s, (n,), w, b, 1e-5), s
            return F.layer_norm(x, (n,), w, b, 1e-5)

        placed = [distribute_tensor(t, mesh, [shard]) for t in (x, r)]
        params = [distribute_tensor(t, mesh, [Replicate()]) for t in (w, b)]
        got_out, got_grads = run(*placed, *params, distribute_tensor(dy, mesh, [shard]), ours)
        want_out, want_grads = run(x, r, w, b, dy, torchs)
        for name, g_, e in zip(["y", "r'"], got_out, want_out):
            assert type(g_).__name__ == "DTensor", f"{name} is a {type(g_).__name__}"
            torch.testing.assert_close(g_.full_tensor(), e, atol=1e-5, rtol=1e-5, msg=name)
        for name, g_, e in zip(["dx", "dresidual", "dweight", "dbias"], got_grads, want_grads):
            if e is None:
                continue
            torch.testing.assert_close(g_.full_tensor(), e, atol=1e-4, rtol=1e-5, msg=name)
        # Every rank done before any tears the group down: a rank that leaves while its peer's gloo
        # threads still talk to it aborts the peer ("terminate called without an active exception").
        dist.barrier()
    except Exception as exc:  # reported to the parent: a child's assertion does not fail pytest
        errors.put(f"rank {rank}: {type(exc).__name__}: {exc}")
        raise
    finally:
        dist.destroy_process_group()


def _spawn(kind: str, backend: str, world: int) -> None:
    import torch.multiprocessing as mp

    errors = mp.get_context("spawn").SimpleQueue()
    try:
        mp.spawn(_worker, args=(_free_port(), kind, backend, world, errors), nprocs=world, join=True)
    except Exception:
        messages = []
        while not errors.empty():
            messages.append(errors.get())
        pytest.fail("\n".join(messages) or "a rank failed")


@pytest.mark.parametrize("kind", ["batch", "sequence", "add"])
def test_kernels_on_sharded_rows_match_torch(kind, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the children import Triton fresh, interpreted
    _spawn(kind, "gloo", CPU_WORLD)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["batch", "sequence", "add"])
def test_compiled_kernels_on_sharded_rows_match_torch_over_nccl(kind, monkeypatch):
    """One rank per GPU (NCCL refuses two ranks on one device): on a one-GPU machine the mesh has
    one rank, which still runs the DTensor dispatch, NCCL's collectives and the compiled kernels."""
    if not torch.cuda.is_available() or not dist.is_nccl_available():
        pytest.skip("needs CUDA and NCCL")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    _spawn(kind, "nccl", torch.cuda.device_count())
