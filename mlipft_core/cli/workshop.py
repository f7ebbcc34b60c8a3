"""``mlipft workshop``: many participants on one server: create, stage files, serve, board."""

from __future__ import annotations

import argparse
import sys

from ..workshop import Workshop
from ..workshop_admin import board, create_workshop, serve_workshop, stage_files, workshop_summary
from ._options import AddFn, add_executor_options, slurm_options
from ._output import emit

ACTIONS = ["create", "stage", "serve", "board"]


def add_workshop(add: AddFn) -> None:
    """``mlipft workshop ACTION``."""
    p = add("workshop", "many participants on one server: create, stage files, serve, board")
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("files", nargs="*", help="for 'stage': model (.model) or data (.xyz) files")
    p.add_argument("--participants", type=int, help="number of participants (create)")
    p.add_argument("--names", help="participant names instead of p01, p02, ... (create)")
    p.add_argument("--name", help="workshop name (create)")
    p.add_argument("--url", default="http://localhost:8501",
                   help="the address participants open, e.g. http://gpu-server:8501 (create)")
    p.add_argument("--max-runs", type=int, default=4,
                   help="queued + running runs per participant (create)")
    p.add_argument("--max-epochs", type=int, default=50, help="epoch cap per run (create)")
    p.add_argument("--max-minutes", type=float, default=30.0,
                   help="wall-time cap per run, minutes (create)")
    p.add_argument("--upload-limit-mb", type=float, default=50.0, help="upload size limit")
    p.add_argument("--stage-model", action="append", help="pre-stage a model file (create)")
    p.add_argument("--stage-data", action="append", help="pre-stage a dataset (create)")
    p.add_argument("--port", type=int, help="port to serve on (serve)")
    p.add_argument("--address", default="0.0.0.0", help="address to serve on (serve)")
    add_executor_options(p, default_help="executor of every participant's runs (create)")
    p.set_defaults(func=cmd_workshop)


def _create(args: argparse.Namespace) -> int:
    """The new workshop's links: instructor and participants."""
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    shop = create_workshop(args.participants, names, name=args.name or "workshop",
                           base_url=args.url, max_runs=args.max_runs,
                           max_epochs=args.max_epochs, max_minutes=args.max_minutes,
                           upload_limit_mb=args.upload_limit_mb, executor=args.executor,
                           slurm=slurm_options(args), stage_models=args.stage_model or (),
                           stage_data=args.stage_data or ())
    payload = workshop_summary(shop)
    text = (f"workshop {shop.name} in {shop.root}\ninstructor: {payload['instructor_url']}\n"
            + "\n".join(f"{p['name']}: {p['url']}" for p in payload["participants"]))
    emit(args, payload, text)
    return 0


def _stage(args: argparse.Namespace) -> int:
    """The staged copies."""
    staged = [str(p) for p in stage_files(args.files)]
    emit(args, {"staged": staged}, "\n".join(staged))
    return 0


def _board(args: argparse.Namespace) -> int:
    """Every participant's runs, one line each."""
    b = board()
    text = "\n".join(f"{r.participant:10s} {r.strategy:20s} {r.status:10s} "
                     f"F {r.target_forces_rmse_mev_per_a or float('nan'):8.1f} meV/Å  "
                     f"forgetting {r.forgetting_ratio or float('nan'):.2f}" for r in b.runs)
    emit(args, b.to_dict(), text or "no runs yet")
    return 0


def _announce(shop: Workshop, port: int) -> None:
    print(f"serving workshop {shop.name} on port {port}; instructor link: "
          f"{shop.url(shop.instructor_token)}", file=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    """Serve the app to the participants until it is stopped."""
    return serve_workshop(args.port, args.address, announce=_announce)


def cmd_workshop(args: argparse.Namespace) -> int:
    """One workshop action."""
    return {"create": _create, "stage": _stage, "board": _board, "serve": _serve}[
        args.action](args)
