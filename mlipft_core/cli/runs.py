"""``mlipft train``, ``tune``, ``runs``, ``cancel`` and ``settings``: queuing fine-tuning
runs and learning-rate pilots, following and cancelling runs, and the run settings."""

from __future__ import annotations

import argparse
import sys

from .. import jobs
from ..jobs.records import FINAL, RunRecord
from ..launch import run_settings, runs_with_progress, submit_training, tune_learning_rate
from ..strategies import STRATEGIES
from ..tune import TuneResult
from ._options import (
    AddFn,
    add_executor_options,
    add_training_options,
    slurm_if_chosen,
    slurm_options,
    training_options,
)
from ._output import emit, number, run_row, trusted


def add_train(add: AddFn) -> None:
    """``mlipft train``."""
    p = add("train", "queue fine-tuning runs (one, or a sweep)")
    p.add_argument("--strategy", required=True,
                   help="strategy, or several separated by commas: " + ", ".join(STRATEGIES))
    add_training_options(p)
    p.add_argument("--lr", type=float, help="learning rate (default: the strategy's)")
    p.add_argument("--lrs", help="learning rates to sweep, e.g. 1e-3,3e-3,1e-2")
    p.add_argument("--seeds", help="seeds to sweep, e.g. 0,1,2")
    p.add_argument("--sizes", help="training-set sizes for a learning curve, e.g. 10,30,100")
    p.add_argument("--name", help="run name (default: the strategy)")
    p.add_argument("--wait", action="store_true", help="return when the runs have ended")
    add_executor_options(p)
    p.set_defaults(func=cmd_train)


def add_tune(add: AddFn) -> None:
    """``mlipft tune``."""
    p = add("tune", "learning-rate pilot: a short sweep on the data, and the best value")
    p.add_argument("--strategy", required=True, help="one of " + ", ".join(STRATEGIES))
    add_training_options(p)
    p.add_argument("--lrs", help="learning rates to try (default: five around the strategy's "
                                 "default, e.g. 1e-4,3e-4,1e-3,3e-3,1e-2 for naive)")
    p.set_defaults(func=cmd_tune)
    add_executor_options(p)


def add_runs(add: AddFn) -> None:
    """``mlipft runs``."""
    add("runs", "list runs with status, where they run, and metrics").set_defaults(func=cmd_runs)


def add_cancel(add: AddFn) -> None:
    """``mlipft cancel RUN``."""
    p = add("cancel", "cancel a queued or running run")
    p.add_argument("run", help="run id")
    p.set_defaults(func=cmd_cancel)


def add_settings(add: AddFn) -> None:
    """``mlipft settings``."""
    p = add("settings", "show or change the workspace's run settings (default executor, "
                        "local CPU slots, SLURM options)")
    p.add_argument("--cpu-slots", type=int, help="local CPU runs at once")
    add_executor_options(p, default_help="set the default executor")
    p.set_defaults(func=cmd_settings)


def _run_line(rec: RunRecord) -> str:
    """A queued or ended run in one line: status, where it runs, its model or its reason."""
    where = rec.executor + (f" job {rec.slurm_job_id}" if rec.slurm_job_id else "")
    return f"{rec.id}: {rec.status} ({where})" + (
        f" -> {rec.model_path}" if rec.model_path else f": {rec.reason}" if rec.reason
        else "")


def cmd_train(args: argparse.Namespace) -> int:
    """Queue the runs; exit status 1 when one of them failed."""
    recs = submit_training(training_options(args), args.strategy, lrs=args.lrs,
                           seeds=args.seeds, sizes=args.sizes, name=args.name,
                           executor=args.executor, slurm=slurm_if_chosen(args),
                           wait=args.wait, trust=trusted)
    rows = [run_row(r) for r in recs]
    warned = list(dict.fromkeys(w for row in rows for w in row["warnings"]))
    emit(args, rows[0] if len(rows) == 1 else rows,
         "\n".join([_run_line(r) for r in recs] + [f"warning: {w}" for w in warned]))
    return 0 if all(r.status != "failed" for r in recs) else 1


def cmd_tune(args: argparse.Namespace) -> int:
    """Run a learning-rate pilot to its end and print every value tried."""
    def report(res: TuneResult) -> None:
        if not args.json:
            done = sum(p.status in FINAL for p in res.results)
            print(f"pilot {res.sweep}: {done}/{len(res.results)} runs ended", file=sys.stderr)

    res = tune_learning_rate(training_options(args), args.strategy, lrs=args.lrs,
                             executor=args.executor, slurm=slurm_if_chosen(args),
                             progress=report, poll=5.0, trust=trusted)
    text = "\n".join([f"learning-rate pilot of {res.strategy} ({res.epochs} epochs, sweep "
                      f"{res.sweep})", f"{'lr':>10s} {'valid F (meV/Å)':>16s} "
                      f"{'valid E (meV/atom)':>19s}  status"]
                     + [f"{p.lr:10.2g} {number(p.valid_forces_rmse_mev_per_a):>16s} "
                        f"{number(p.valid_energy_rmse_mev_per_atom):>19s}  {p.status}"
                        + ("  <- best" if p.lr == res.best_lr else "") for p in res.results]
                     + [f"best learning rate: {res.best_lr:g}"])
    emit(args, res.to_dict(), text)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """Every run with its status, where it runs and its strategy."""
    rows = [run_row(r, prog) for r, prog in runs_with_progress()]
    text = "\n".join(f"{r['id']:45s} {r['status']:10s} {r['executor']:5s} "
                     f"{r['slurm_job_id'] or '':9s} {r['strategy']}"
                     + (f"  ({r['reason']})" if r["status"] == "unreadable" else "")
                     for r in rows) or "no runs"
    emit(args, rows, text)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel a queued or running run."""
    rec = jobs.cancel(args.run)
    emit(args, run_row(rec), f"{rec.id}: {rec.status}")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    """Show the run settings, changed where options are given."""
    cur = run_settings(executor=args.executor, cpu_slots=args.cpu_slots,
                       slurm=slurm_options(args))
    text = (f"default executor: {cur['executor']}\n"
            f"local CPU slots: {cur['local']['cpu_slots'] or 'automatic'}\n"
            f"SLURM: {cur['slurm_status']}\nSLURM options: "
            + ", ".join(f"{k}={v}" for k, v in cur["slurm"].items() if v not in (None, "")))
    emit(args, cur, text)
    return 0
