"""``mlipft study``: the study's comparison of every strategy on a model and data."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from ..launch import run_study
from ._options import AddFn, add_executor_options, slurm_if_chosen
from ._output import emit, trusted

if TYPE_CHECKING:
    from ..study import StudyProgress

#: Stages in which a study is on its way or done (exit status 0).
GOING = ("done", "pilots", "finals", "analysis")

VERDICTS = {True: "reproduced", False: "not reproduced", None: "not measured"}


def add_study(add: AddFn) -> None:
    """``mlipft study``."""
    p = add("study", "the study's comparison on a model and data (default: the demo world): "
                     "learning-rate pilots, every strategy at its tuned rate, the baselines, "
                     "and the six findings")
    p.add_argument("--model", help="foundation model (default: the strong demo model and the "
                                   "demo SN2 data)")
    p.add_argument("--weak-model", help="a weaker foundation model for the FM-quality finding")
    p.add_argument("--train", help="target training extxyz")
    p.add_argument("--valid", help="target validation extxyz")
    p.add_argument("--test", help="target test extxyz")
    p.add_argument("--pretrain", help="held-out pretraining test extxyz (forgetting)")
    p.add_argument("--replay", help="replay file for multihead strategies")
    p.add_argument("--isolated-file", help="isolated-atom energies of the target's reference "
                                           "method (the E0 anchor)")
    p.add_argument("--short-range-test",
                   help="labelled compressed structures held out from pretraining, at the "
                        "foundation model's level of theory (the short-range repulsion probe; "
                        "default with the demo world: its own)")
    p.add_argument("--epochs", type=int, help="epochs of the final runs (default 20)")
    p.add_argument("--pilot-epochs", type=int, help="epochs of each pilot run (default 5)")
    p.add_argument("--lrs", help="pilot learning rates (default: five around each strategy's "
                                 "default)")
    p.add_argument("--small-size", type=int,
                   help="training structures of the scratch-vs-fine-tune pair (default 25)")
    p.add_argument("--strategies", help="strategies to compare (default: all seven)")
    p.add_argument("--foundation-head",
                   help="the head of a multi-head foundation model to fine-tune from; its "
                        "replay set, E0s and zero-shot errors are the study's")
    p.add_argument("--search-structures", type=int,
                   help="random compact structures relaxed with every model in the "
                        "short-range finding's random structure search (default 40)")
    p.add_argument("--no-wait", action="store_true",
                   help="start (or look up) the study and return; run again to resume")
    p.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    add_executor_options(p)
    p.set_defaults(func=cmd_study)


def _report(p: StudyProgress) -> None:
    """Where the study stands, with the time, on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {p.text}", file=sys.stderr, flush=True)


def cmd_study(args: argparse.Namespace) -> int:
    """Run (or resume) the study and print its findings; exit status 1 when it failed."""
    strategies = ([x.strip() for x in args.strategies.split(",") if x.strip()]
                  if args.strategies else None)
    res = run_study(wait=not args.no_wait, report=_report, poll=args.poll, trust=trusted,
                    model=args.model, weak_model=args.weak_model, train=args.train,
                    valid=args.valid, test=args.test, pretrain_test=args.pretrain,
                    replay=args.replay, isolated_file=args.isolated_file,
                    short_range_test=args.short_range_test, epochs=args.epochs,
                    pilot_epochs=args.pilot_epochs, small_size=args.small_size,
                    pilot_lrs=args.lrs, strategies=strategies, executor=args.executor,
                    search_structures=args.search_structures,
                    foundation_head=args.foundation_head,
                    slurm=slurm_if_chosen(args))
    lines = [f"study {res.id}: {res.stage}"]
    for f in res.findings:
        level = f" ({f.level})" if f.level else ""
        lines.append(f"{f.number}. {f.title}: {VERDICTS[f.reproduced]}{level}\n   {f.summary}")
    emit(args, res.to_dict(), "\n".join(lines))
    return 0 if res.stage in GOING else 1
