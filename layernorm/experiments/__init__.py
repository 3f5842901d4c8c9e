"""Experiments: one file per claim of layer normalization.

=================  ==========================================================
``small-batch``    LayerNorm trains at batch sizes where BatchNorm cannot.
``running-stats``  BatchNorm's output depends on train/eval mode and on the
                   batch; LayerNorm's does not.
``rnn``            An LSTM with layer normalization converges faster.
``distributed``    LayerNorm's training does not depend on the number of
                   data-parallel processes; BatchNorm's does (unless synced).
``transformer``    Where the LayerNorm sits decides whether a small GPT needs
                   a learning-rate warm-up: pre-LN trains without one at a
                   high learning rate, post-LN needs it.
=================  ==========================================================

Each is run as ``layernorm experiment NAME`` and writes ``metrics.csv``,
``summary.json`` and PNG plots into ``--out`` (default ``runs/NAME``), then
prints one line starting ``VERDICT``. Three sizes: ``--smoke`` (seconds, for
tests: no evidence), ``--quick`` (a minute or two each, what ``layernorm tour``
runs) and the default (the documented runs of docs/experiments.md). Each
experiment module's ``config(size)`` returns its parameters at a size,
``seeds`` among them: how many seeds a run trains when ``--seeds`` does not
say (3 at the default size, so that a difference can be told from noise; 1 at
the smoke and quick sizes, whose verdicts say so).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from dataclasses import dataclass
from typing import Dict, Mapping, Optional


@dataclass(frozen=True)
class Experiment:
    module: str  # the module in this package (its ``run`` and ``config``)
    key_plot: str  # the plot that shows the claim best (the one ``layernorm tour``'s summary shows)
    seconds: Mapping[str, int]  # seconds per size on 2 CPU cores (docs/experiments.md): the tour's estimate


EXPERIMENTS: Dict[str, Experiment] = {
    "small-batch": Experiment("small_batch", "accuracy_vs_batch_size.png",
                              {"smoke": 10, "quick": 48, "default": 1340}),
    "running-stats": Experiment("running_stats", "running_stats.png", {"smoke": 2, "quick": 21, "default": 135}),
    "rnn": Experiment("rnn", "learning_curves.png", {"smoke": 3, "quick": 62, "default": 895}),
    "distributed": Experiment("distributed", "loss_difference.png", {"smoke": 33, "quick": 61, "default": 270}),
    "transformer": Experiment("transformer", "loss_curves.png", {"smoke": 2, "quick": 133, "default": 455}),
}


def experiment_module(name: str):
    """The module of experiment ``name`` (its ``run`` and ``config``)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f".{EXPERIMENTS[name].module}", __name__)


def run_experiment(name: str, out: Path, size: str = "default", device: Optional[str] = None,
                   seed: int = 0, data: Optional[Path] = None, seeds: Optional[int] = None) -> Dict[str, object]:
    """Run one experiment; return its summary (``summary["verdict"]`` is the verdict line).

    ``size`` is "smoke", "quick" or "default". ``seeds`` is how many seeds, ``seed``, ``seed + 1``, ...; left out, the
    size's own count (``config(size)["seeds"]``).
    """
    import torch

    from ._common import resolve_device, resolve_size, seed_everything

    module = experiment_module(name)
    size = resolve_size(size)  # an unknown size fails here, before any work
    if seeds is not None and seeds < 1:
        raise ValueError(f"seeds={seeds}: at least one seed is needed")
    device = resolve_device(device)
    # torch's global settings change for the run and come back after it
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    # These models are small: one thread is as fast as several, and sums keep one order.
    torch.set_num_threads(1)
    try:
        seed_everything(seed)
        return module.run(out=Path(out), device=device, seed=seed, data=data, size=size, seeds=seeds)
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", choices=list(EXPERIMENTS),
                        help="which experiment: " + ", ".join(EXPERIMENTS))
    size = parser.add_mutually_exclusive_group()  # argparse rejects --smoke with --quick
    size.add_argument("--smoke", action="store_true", help="a tiny run for tests (seconds; its verdict is no evidence)")
    size.add_argument("--quick", action="store_true",
                      help="a quick run (one seed, a minute or two on 2 CPU cores; what `layernorm tour` runs)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present, else cpu)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/NAME)")
    parser.add_argument("--seed", type=int, default=0, help="the first random seed (default: 0)")
    parser.add_argument("--seeds", type=_positive_int, default=None, metavar="N",
                        help="train every arm with N seeds (--seed, --seed + 1, ...); the verdict is judged on "
                             "their spread (default: 3, or 1 with --smoke and --quick)")
    parser.add_argument("--data", type=Path, default=None,
                        help="rnn, transformer: a UTF-8 text file to model instead of the standard-library docstrings")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: at least one seed is needed")
    return value


def size_from_args(args: argparse.Namespace) -> str:
    """The size asked for on the command line: --smoke, --quick or neither."""
    if args.smoke:
        return "smoke"
    return "quick" if args.quick else "default"


def run(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else Path("runs") / args.name
    if args.data is not None and not args.data.is_file():
        print(f"--data {args.data}: no such file")
        return 2
    from ._common import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as error:
        print(f"layernorm experiment {args.name}: {error}")
        return 2
    run_experiment(args.name, out, size=size_from_args(args), device=device, seed=args.seed, data=args.data,
                   seeds=args.seeds)
    return 0
