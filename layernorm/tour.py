"""``layernorm tour``: the first command to run. For now it runs ``check``."""

from __future__ import annotations

import argparse

from . import check


def configure_parser(parser: argparse.ArgumentParser) -> None:
    check.configure_parser(parser)


def run(args: argparse.Namespace) -> int:
    return check.run(args)
