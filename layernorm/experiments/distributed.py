"""Data parallelism: LayerNorm's training does not depend on the number of processes.

Claim (Ba et al., 2016, section 1): batch normalization ties each example's
output to the other examples of its mini-batch. Under data parallelism every
process normalizes with the statistics of its own shard, so the same global
batch trains differently on 1, 2 or 4 processes - unless the statistics are
synchronized across processes (SyncBatchNorm), which costs a collective per
layer per step in the forward pass and another in the backward. Layer
normalization works per example: its training is the same on any number of
processes, with no extra communication.

Here: an MNIST-1D MLP trained with ``DistributedDataParallel`` on 1, 2 and 4
spawned processes (gloo on CPU, NCCL on GPUs), always at a global batch of
64 examples - the same examples in the same order, split evenly across the
processes. For each normalization: the training loss of the global batch at
every step, and the number and time of the collectives.

PyTorch's ``SyncBatchNorm`` runs only on GPUs (on a CPU it raises "expected
input tensor to be on GPU"), so on a CPU ``syncbatchnorm`` is
:class:`CrossProcessBatchNorm1d` below: BatchNorm whose statistics are summed
over all processes with one all_reduce forward and one backward - the same
number of collectives per layer as PyTorch's.

Collectives are counted by wrapping them: DDP's gradient all_reduce through a
communication hook, the normalization's through its own autograd function.
Their time is wall time inside the call, waiting for the other processes
included.

Every model trains with each seed (3 at the default size; a seed sets the
initial weights and the global batches), all in the same spawned processes.
Verdict rule (``judge``): supported when LayerNorm's largest difference from
the 1-process curve, over every seed, stays under 1e-3, and BatchNorm's
smallest (over the seeds) is more than ten times LayerNorm's largest.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ._common import (LABELS, Spread, Timer, finish, make_norm, mnist1d, mlp, plot_spread, progress, pyplot,
                      resolve_size, run_seeds, save_figure, seeds_caption, separated)

NORMS = ("layernorm", "batchnorm", "syncbatchnorm")
GLOBAL_BATCH = 64
# Each process keeps its own BatchNorm running statistics (no broadcast from
# process 0 each step); the keyword was renamed in newer PyTorch.
NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                  if "forward_sync_buffers" in torch.nn.parallel.DistributedDataParallel.__init__.__code__.co_varnames
                  else {"broadcast_buffers": False})

# Spawning 1 + 2 + 4 processes, each importing torch, costs about half a
# minute whatever the steps: the sizes differ in the steps that follow. Quick
# runs half the default's steps; BatchNorm's curves part from the first step.
# The seeds all train in the same processes, so they add steps, not spawns.
CONFIGS = {
    "smoke": {"steps": 20, "mnist1d_samples": 1_000, "seeds": 1},
    "quick": {"steps": 150, "mnist1d_samples": 5_000, "seeds": 1},
    "default": {"steps": 300, "mnist1d_samples": 5_000, "seeds": 3},
}


def config(size: str) -> dict:
    """The run's parameters at ``size`` ("smoke", "quick" or "default")."""
    return dict(CONFIGS[size])


# ---- counted collectives ---------------------------------------------------

COUNTS: dict = defaultdict(lambda: [0, 0.0])  # kind -> [calls, seconds], per process
_all_reduce = dist.all_reduce  # the original, before count_sync_batchnorm wraps it


def counted_all_reduce(tensor: torch.Tensor, kind: str) -> None:
    start = time.perf_counter()
    _all_reduce(tensor)
    if tensor.is_cuda:
        torch.cuda.synchronize()
    COUNTS[kind][0] += 1
    COUNTS[kind][1] += time.perf_counter() - start


def ddp_counting_hook(state, bucket):
    """DDP communication hook: average one gradient bucket, counted."""
    buffer = bucket.buffer()
    counted_all_reduce(buffer, "all_reduce: DDP gradients")
    buffer.div_(dist.get_world_size())
    future = torch.futures.Future()
    future.set_result(buffer)
    return future


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, tensor):
        tensor = tensor.clone()
        counted_all_reduce(tensor, "all_reduce: BatchNorm statistics (forward)")
        return tensor

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        counted_all_reduce(grad, "all_reduce: BatchNorm statistics (backward)")
        return grad


class CrossProcessBatchNorm1d(torch.nn.BatchNorm1d):
    r"""BatchNorm1d over the union of every process's batch (SyncBatchNorm for CPUs).

    Each process sums :math:`x - K`, :math:`(x - K)^2` and its count; one
    all_reduce adds them up. :math:`K` is the running mean, identical on every
    process because the statistics are: shifting by it keeps the one-pass
    variance :math:`\mathrm{E}[(x-K)^2] - (\mathrm{E}[x-K])^2` precise.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        shift = self.running_mean.detach()
        d = x - shift
        local = torch.cat([d.sum(0), (d * d).sum(0), x.new_full((1,), x.shape[0])])
        total = _AllReduceSum.apply(local)
        n = total[-1]
        mean_d, mean_d2 = total[:self.num_features] / n, total[self.num_features:-1] / n
        var = mean_d2 - mean_d * mean_d
        mean = shift + mean_d
        with torch.no_grad():  # the running statistics, as BatchNorm1d keeps them
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * n / (n - 1), self.momentum)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        return y * self.weight + self.bias


def count_sync_batchnorm() -> None:
    """On GPUs the synced norm is torch.nn.SyncBatchNorm, which calls these
    collectives from Python: wrap them to count (and time) the calls."""
    for name in ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_single"):
        original = getattr(dist, name, None)
        if original is None:  # the names differ between PyTorch versions
            continue

        def wrapped(*args, _original=original, _kind=f"{name}: SyncBatchNorm", **kwargs):
            start = time.perf_counter()
            work = _original(*args, **kwargs)
            torch.cuda.synchronize()
            COUNTS[_kind][0] += 1
            COUNTS[_kind][1] += time.perf_counter() - start
            return work

        setattr(dist, name, wrapped)


def make_norm_distributed(kind: str, width: int) -> torch.nn.Module:
    if kind != "syncbatchnorm":
        return make_norm(kind, width)
    return CrossProcessBatchNorm1d(width)


# ---- one process -----------------------------------------------------------


def train_one(norm: str, data, cfg: dict, device: torch.device, seed: int) -> dict:
    """Train one model on this process's shards; return losses and counts."""
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(seed)  # the same initial weights on every process
    model = mlp(norm, make=make_norm_distributed)
    if norm == "syncbatchnorm" and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, **NO_BUFFER_SYNC)
    ddp.register_comm_hook(None, ddp_counting_hook)
    opt = torch.optim.Adam(ddp.parameters(), lr=cfg["lr"])
    x, y = data["x"].to(device), data["y"].to(device)
    order = torch.Generator().manual_seed(seed)  # the same global batches on every process
    shard = GLOBAL_BATCH // world
    COUNTS.clear()
    losses = torch.zeros(cfg["steps"], device=device)
    dist.barrier()
    start = time.perf_counter()
    steps = range(cfg["steps"])
    for step in progress(steps, desc=f"{norm} x{world} seed {seed}") if rank == 0 else steps:
        idx = torch.randint(len(x), (GLOBAL_BATCH,), generator=order)[rank * shard:(rank + 1) * shard].to(device)
        loss = F.cross_entropy(ddp(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[step] = loss.detach() / world  # summed over processes below: the global batch's loss
    seconds = time.perf_counter() - start
    _all_reduce(losses)  # for the log only; not counted
    model.eval()
    with torch.no_grad():
        test_loss = F.cross_entropy(model(data["x_test"].to(device)), data["y_test"].to(device)).item()
    return {"losses": losses.tolist(), "seconds": seconds, "test_loss_rank0": test_loss,
            "collectives": {k: list(v) for k, v in COUNTS.items()}}


def worker(rank: int, world: int, port: int, data, cfg: dict, result_path: str) -> None:
    torch.set_num_threads(1)
    cuda = cfg["device"].startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    device = torch.device(f"cuda:{rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
        count_sync_batchnorm()
    try:
        results = {seed: {norm: train_one(norm, data, cfg, device, seed) for norm in NORMS}
                   for seed in cfg["seeds"]}
        if rank == 0:
            torch.save(results, result_path)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(world: int, data, cfg: dict) -> dict:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "results.pt")
        mp.start_processes(worker, args=(world, free_port(), data, cfg, path), nprocs=world,
                           start_method="spawn", join=True)
        return torch.load(path)


# ---- the experiment --------------------------------------------------------


def largest_so_far(a: Sequence[float], b: Sequence[float]) -> list:
    """The largest ``|a - b|`` up to each step; 0 is kept at 1e-9 for a log scale."""
    worst, so_far = [], 1e-9
    for u, v in zip(a, b):
        so_far = max(so_far, abs(u - v))
        worst.append(so_far)
    return worst


def plot(results: dict, worlds, seeds: Sequence[int], out: Path, synced: str) -> None:
    """results[world][seed][norm]: what each process count trained, seed by seed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(NORMS), figsize=(15, 4), sharey=True)
    for ax, norm in zip(axes, NORMS):
        for world in worlds:
            curves = [results[world][s][norm]["losses"] for s in seeds]
            steps = range(1, len(curves[0]) + 1)
            plot_spread(ax, steps, [Spread(at_step) for at_step in zip(*curves)],
                        f"{world} process{'es' if world > 1 else ''}", lw=1)
        ax.set_title(synced if norm == "syncbatchnorm" else LABELS[norm])
        ax.set_xlabel("step (global batch 64)")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("training loss")
    fig.suptitle(f"DistributedDataParallel: the loss curve on 1, 2 and 4 processes ({seeds_caption(seeds)})")
    save_figure(fig, out / "loss_curves.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for norm in NORMS:
        for world in worlds[1:]:
            worst = [largest_so_far(results[world][s][norm]["losses"], results[worlds[0]][s][norm]["losses"])
                     for s in seeds]
            plot_spread(ax, range(1, len(worst[0]) + 1), [Spread(at_step) for at_step in zip(*worst)],
                        f"{LABELS[norm]}, {world} processes", lw=1.5, color=f"C{NORMS.index(norm)}",
                        ls="-" if world == worlds[-1] else ":")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("largest |loss - loss on 1 process| so far")
    ax.set_title(f"How far each curve moves from the 1-process curve\n({seeds_caption(seeds)})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, out / "loss_difference.png")


def judge(gap: Dict[str, Spread], mean_gap: Dict[str, Spread], calls: Dict[str, float],
          coll_ms: Dict[str, float], step_ms: Dict[str, float], processes: int, steps: int) -> Tuple[bool, str]:
    """The verdict rule, on the seeds' spread: (supported?, the verdict line).

    ``gap[norm]``: seed by seed, the largest ``|loss - loss on 1 process|`` at
    ``processes`` processes; the other figures are means over the seeds."""
    holds = (max(gap["layernorm"].values) < 1e-3
             and separated(gap["batchnorm"].values, [10 * v for v in gap["layernorm"].values]))
    verdict = (
        f"{'supported' if holds else 'refuted'}: |training loss - loss on 1 process| at {processes} processes, "
        f"largest over {steps} steps: LayerNorm {gap['layernorm'].text('.1e')}, BatchNorm "
        f"{gap['batchnorm'].text('.1e')}, synced BatchNorm {gap['syncbatchnorm'].text('.1e')} (mean over the steps "
        f"{mean_gap['layernorm'].text('.1e')} / {mean_gap['batchnorm'].text('.1e')} / "
        f"{mean_gap['syncbatchnorm'].text('.1e')}); collectives per step: LayerNorm {calls['layernorm']:.0f} "
        f"({coll_ms['layernorm']:.2f} ms), synced BatchNorm {calls['syncbatchnorm']:.0f} "
        f"({coll_ms['syncbatchnorm']:.2f} ms); step time {step_ms['layernorm']:.1f} vs "
        f"{step_ms['syncbatchnorm']:.1f} ms"
    )
    return holds, verdict


def run(out: Path, size: str = "default", device: str = "cpu", seed: int = 0, data: Optional[Path] = None,
        seeds: Optional[int] = None) -> dict:
    timer = Timer()
    size = resolve_size(size)
    sized = config(size)
    seeds = run_seeds(seed, seeds, sized)
    dataset = mnist1d(sized["mnist1d_samples"])
    worlds = [1, 2, 4]
    if device.startswith("cuda"):
        if torch.cuda.device_count() < 2:  # NCCL needs a GPU per process
            print("distributed: fewer than 2 GPUs, so the processes run on the CPU (gloo)")
            device = "cpu"
        worlds = [w for w in worlds if device == "cpu" or w <= torch.cuda.device_count()]
    cfg = {"steps": sized["steps"], "lr": 2e-3, "seeds": seeds, "device": device}
    results = {}
    for world in worlds:
        print(f"spawning {world} process{'es' if world > 1 else ''} ...", flush=True)
        results[world] = spawn(world, dataset, cfg)

    rows = []
    for world in worlds:
        for s in seeds:
            for norm in NORMS:
                for step, loss in enumerate(results[world][s][norm]["losses"], 1):
                    rows.append({"seed": s, "norm": norm, "processes": world, "step": step, "train_loss": loss})

    def over_seeds(world: int, norm: str, key: str) -> float:  # a mean over the seeds, per step
        return sum(key(results[world][s][norm]) for s in seeds) / len(seeds) / cfg["steps"]

    collective_rows = []
    for world in worlds:
        for norm in NORMS:
            kinds = sorted({k for s in seeds for k in results[world][s][norm]["collectives"]})
            for kind in kinds:
                collective_rows.append({
                    "norm": norm, "processes": world, "collective": kind,
                    "calls_per_step": over_seeds(world, norm, lambda r: r["collectives"].get(kind, [0, 0])[0]),
                    "ms_per_step": 1e3 * over_seeds(world, norm, lambda r: r["collectives"].get(kind, [0, 0])[1])})
    synced = "SyncBatchNorm (torch)" if device.startswith("cuda") else "synced BatchNorm (ours: one all_reduce)"
    plot(results, worlds, seeds, out, synced)

    def differences(world: int, norm: str, s: int) -> list:
        return [abs(a - b) for a, b in zip(results[world][s][norm]["losses"], results[1][s][norm]["losses"])]

    gap = {n: {w: Spread(max(differences(w, n, s)) for s in seeds) for w in worlds} for n in NORMS}
    mean_gap = {n: {w: Spread(sum(differences(w, n, s)) / cfg["steps"] for s in seeds) for w in worlds}
                for n in NORMS}
    step_ms = {n: {w: 1e3 * over_seeds(w, n, lambda r: r["seconds"]) for w in worlds} for n in NORMS}
    calls = {n: {w: over_seeds(w, n, lambda r: sum(c for c, _ in r["collectives"].values())) for w in worlds}
             for n in NORMS}
    coll_ms = {n: {w: 1e3 * over_seeds(w, n, lambda r: sum(t for _, t in r["collectives"].values()))
                   for w in worlds} for n in NORMS}
    last = worlds[-1]
    holds, verdict = judge({n: gap[n][last] for n in NORMS}, {n: mean_gap[n][last] for n in NORMS},
                           {n: calls[n][last] for n in NORMS}, {n: coll_ms[n][last] for n in NORMS},
                           {n: step_ms[n][last] for n in NORMS}, last, cfg["steps"])
    summary = {
        "claim": "LayerNorm's loss curve does not depend on the number of processes; BatchNorm's does unless synced",
        "supported": holds,
        "seeds": seeds,
        "processes": worlds,
        "global_batch": GLOBAL_BATCH,
        "max_loss_difference_from_1_process": {n: {w: v.as_dict() for w, v in gap[n].items()} for n in NORMS},
        "mean_loss_difference_from_1_process": {n: {w: v.as_dict() for w, v in mean_gap[n].items()} for n in NORMS},
        "collectives_per_step": calls,
        "collective_ms_per_step": coll_ms,
        "step_ms": step_ms,
        "final_train_loss": {n: {w: Spread(results[w][s][n]["losses"][-1] for s in seeds).as_dict() for w in worlds}
                             for n in NORMS},
        "test_loss_rank0": {n: {w: Spread(results[w][s][n]["test_loss_rank0"] for s in seeds).as_dict()
                                for w in worlds} for n in NORMS},
        "collectives": collective_rows,
        "syncbatchnorm": "torch.nn.SyncBatchNorm" if device.startswith("cuda") else
                         "CrossProcessBatchNorm1d (torch.nn.SyncBatchNorm raises on CPU tensors)",
        "backend": "nccl" if device.startswith("cuda") else "gloo",
    }
    return finish("distributed", out, rows, summary, verdict,
                  {"smoke": size == "smoke", "size": size, "device": device, "seed": seed, **cfg}, timer)
