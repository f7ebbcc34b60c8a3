"""``mlipft demo paths``: where the bundled demo world's files and models are."""

from __future__ import annotations

import argparse

from ..demo import demo_paths
from ._options import AddFn
from ._output import emit


def add_demo(add: AddFn) -> None:
    """``mlipft demo paths``."""
    p = add("demo", "the bundled demo world")
    p.add_argument("what", choices=["paths"])
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """The demo files and models, by name."""
    paths = demo_paths()
    emit(args, paths, "\n".join(f"{k}: {v}" for k, v in paths.items()))
    return 0
