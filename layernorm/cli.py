"""The ``layernorm`` command line: one subcommand per job.

Each subcommand lives in its own module, which provides
``configure_parser(parser)`` and ``run(args) -> exit status``; the module is
imported only when its subcommand runs, so ``layernorm check`` does not pay for
matplotlib or Triton.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "check": ("layernorm.check", "check every implementation on every device against the float64 reference"),
    "bench": ("layernorm.bench", "benchmark the GPU kernels against their peers (GB/s, %% of the copy ceiling)"),
    "experiment": ("layernorm.experiments", "run one experiment that tests a claim of layer normalization"),
    "tour": ("layernorm.tour", "check, benchmark and run every experiment, then write a report"),
}


def _module_for(name: str):
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
    args = build_parser(argv).parse_args(argv)
    return int(_module_for(args.command).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
