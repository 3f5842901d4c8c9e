"""The ``layernorm`` command line: one subcommand per job.

Each subcommand lives in its own module, which provides
``configure_parser(parser)`` and ``run(args) -> exit status``; the module is
imported only when its subcommand runs, so ``layernorm check`` does not pay for
matplotlib or Triton.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Optional, Sequence

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "check": ("layernorm.cli.check", "check every implementation on every device against the float64 reference"),
    "bench": ("layernorm.cli.bench", "benchmark the GPU kernels against their peers (GB/s, %% of the copy ceiling)"),
    "experiment": ("layernorm.experiments", "run one experiment that tests a claim of layer normalization"),
    "tour": ("layernorm.cli.tour", "check, benchmark and run every experiment, then write a report"),
}


# Subcommands that need the `experiments` extra (training, data, plots, progress bars); the
# library itself needs torch only.
EXPERIMENT_PACKAGES = ("numpy", "matplotlib", "mnist1d", "tqdm")
NEEDS_EXPERIMENTS = ("experiment", "tour")


class MissingExtra(Exception):
    """A subcommand's optional packages are not installed."""


def _check_extras(name: str) -> None:
    if name not in NEEDS_EXPERIMENTS:
        return
    missing = [p for p in EXPERIMENT_PACKAGES if importlib.util.find_spec(p) is None]
    if missing:
        raise MissingExtra(
            f"layernorm {name} needs the experiments extra; missing: {', '.join(missing)}. "
            "Install it with: pip install 'layernorm[experiments]' (from a clone: bash scripts/install.sh)")


def _module_for(name: str):
    _check_extras(name)
    return importlib.import_module(SUBCOMMANDS[name][0])


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layernorm", description="Layer Normalization for PyTorch.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:  # only the subcommand that runs imports its module
            _module_for(name).configure_parser(p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser(argv).parse_args(argv)
        module = _module_for(args.command)
    except MissingExtra as missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
