"""``mlipft app``: serve the workbench's Streamlit app."""

from __future__ import annotations

import argparse

from ..serve import serve_app
from ._options import AddFn


def add_app(add: AddFn) -> None:
    """``mlipft app [--port P]``."""
    p = add("app", "serve the workbench app (Streamlit)")
    p.add_argument("--port", type=int, help="port to serve on (default: 8501)")
    p.set_defaults(func=cmd_app)


def cmd_app(args: argparse.Namespace) -> int:
    """Serve the app on the current workspace; Streamlit's exit status."""
    return serve_app(args.port)
