"""The queue of runs: submitting prepared runs to their executor, reading, cancelling, waiting.

A submission asks the workspace's submission policy once (:mod:`.policy`), prepares its runs
(:mod:`.prepare`) and hands them to their executor together (:func:`launch`: on SLURM one
job array). Reading (:func:`list_runs`, :func:`get_run`) has no side effects: a run whose
runner or job is gone is *shown* as failed; :func:`settle` records it (:mod:`.liveness`).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import MlipftError
from ..strategies import RunSpec
from ..workspace import Workspace, atomic_write_text, read_json
from .liveness import settle, slurm_jobs_for, view
from .local import ensure_dispatcher
from .policy import SubmissionPolicy, check_submission
from .prepare import prepare
from .progress import Progress, read_progress
from .records import FINAL, RunRecord, RunStore
from .settings import executor_choice, get_executor, run_device
from .slurm import SlurmOptions

__all__ = ["cancel", "delete", "get_run", "keep_sweeps_going", "launch", "list_runs",
           "md_progress", "prepare_all", "progress", "settle", "submit", "submit_md", "view",
           "wait", "withdraw"]


def launch(ws: Workspace, records: list[RunRecord], store: RunStore | None = None
           ) -> list[RunRecord]:
    """Hand prepared runs to their executors (grouped, so a SLURM sweep is one array); a
    group its executor refuses is recorded as failed with the reason, which is raised.
    ``store``: the workspace's run store, when the caller has it already."""
    store = store or RunStore(ws)
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        key = (r.executor, repr(sorted(r.executor_options.items())))
        groups.setdefault(key, []).append(r)
    for (name, _), recs in groups.items():
        try:
            get_executor(name).submit(store, recs)
        except Exception as exc:
            for r in recs:
                store.transition(r.id, ("queued",), status="failed", finished=time.time(),
                                 reason=f"could not be submitted: {exc}")
            if isinstance(exc, MlipftError):
                raise
            raise MlipftError(f"{len(recs)} run(s) could not be submitted to the {name} "
                              f"executor: {exc}") from exc
    return [store.read(r.id) for r in records]


def submit(spec: RunSpec, *, workspace: Workspace | None = None, sweep: str | None = None,
           trusted: bool = True, e0_values: dict[str, float] | None = None,
           executor: str | None = None, slurm: SlurmOptions | dict[str, Any] | None = None,
           policy: SubmissionPolicy | None = None) -> RunRecord:
    """Prepare one run and hand it to its executor. Raises StrategyError for bad input, and
    what the submission policy (default: the workspace's) raises for a run it refuses."""
    ws = workspace or Workspace()
    admitted = check_submission(ws, [spec], policy)
    store = RunStore(ws)
    rec = prepare(spec, workspace=ws, sweep=sweep, trusted=trusted, e0_values=e0_values,
                  executor=executor, slurm=slurm, admission=admitted, store=store)
    return launch(ws, [rec], store)[0]


def withdraw(ws: Workspace, records: list[RunRecord]) -> None:
    """Take back runs prepared for a launch that failed before it was handed over: a queued
    one is removed, one a dispatcher already claimed is cancelled."""
    store = RunStore(ws)
    for r in records:
        if store.transition(r.id, ("queued",), status="cancelled", finished=time.time(),
                            reason="the launch it belonged to failed") is not None:
            shutil.rmtree(store.folder(r.id), ignore_errors=True)
        else:
            try:
                cancel(r.id, ws)
            except MlipftError:
                pass


def prepare_all(ws: Workspace, todo: list[tuple[RunSpec, dict[str, Any]]]
                ) -> list[RunRecord]:
    """:func:`~mlipft_core.jobs.prepare.prepare` every ``(spec, options)`` (``train_size``
    among the options is recorded in the run's spec); when one fails, the runs already
    prepared are withdrawn, so a launch queues all of its runs or none."""
    recs: list[RunRecord] = []
    try:
        for spec, options in todo:
            train_size = options.pop("train_size", None)
            rec = prepare(spec, workspace=ws, **options)
            if train_size is not None:
                rec = RunStore(ws).update(rec.id, spec={**rec.spec, "train_size": train_size})
            recs.append(rec)
    except BaseException:
        withdraw(ws, recs)
        raise
    return recs


def submit_md(models: dict[str, str], structure: str | Path, settings, *, index: int = 0,
              head: str | None = None, workspace: Workspace | None = None,
              executor: str | None = None,
              slurm: SlurmOptions | dict[str, Any] | None = None,
              policy: SubmissionPolicy | None = None) -> list[RunRecord]:
    """Queue the same MD (an :class:`~mlipft_core.md.MDSettings`) for several models.

    ``models`` maps a display name to a model file, or to ``(file, head)`` for a given head of
    a multihead model (default: ``head``); one MD run per entry, one group.
    """
    from ..md import MDError  # the MD machinery (ase's integrators): only for MD runs

    settings.check()
    ws = workspace or Workspace()
    store = RunStore(ws)
    admitted = check_submission(ws, len(models), policy)
    exec_name, exec_opts = executor_choice(ws, executor, slurm)
    structure = str(Path(structure).expanduser().resolve())
    if not Path(structure).is_file():
        raise MDError(f"structure file not found: {structure}")
    group = time.strftime("md-%Y%m%d-%H%M%S")
    device = run_device(exec_name, exec_opts)
    out = []
    for name, entry in models.items():
        path, run_head = (entry if isinstance(entry, (tuple, list)) else (entry, head))
        rid = store.new_id("md")
        folder = store.folder(rid)
        folder.mkdir(parents=True, exist_ok=False)
        atomic_write_text(folder / "md.json", json.dumps(
            {"model": str(Path(path).resolve()), "structure": structure, "index": index,
             "head": run_head, "settings": settings.to_dict()}, indent=2))
        rec = RunRecord(id=rid, name=str(name), strategy="md", kind="md", device=device,
                        spec={"model": str(path), "structure": structure, "index": index,
                              "head": run_head, "settings": settings.to_dict()}, sweep=group,
                        executor=exec_name, executor_options=exec_opts,
                        participant=admitted.owner, time_limit_s=admitted.time_limit_s)
        out.append(store.create(rec))
    return launch(ws, out)


def md_progress(record: RunRecord, workspace: Workspace | None = None) -> float:
    """Fraction of an MD run's steps done."""
    p = read_json(RunStore(workspace).folder(record.id) / "progress.json") or {}
    if not isinstance(p, dict) or not p.get("steps"):
        return 0.0
    try:
        return min(1.0, float(p.get("step", 0)) / float(p["steps"]))
    except (TypeError, ValueError):
        return 0.0


def keep_sweeps_going(sweeps: Iterable[str], workspace: Workspace | None = None) -> None:
    """For the active runs of these sweeps: record the end of those whose runner or job is
    gone, and start the local dispatcher when one of them waits for it (after a restart)."""
    ws = workspace or Workspace()
    store = RunStore(ws)
    wanted = set(sweeps)
    for rec in store.list():
        if (rec.readable and rec.sweep in wanted and rec.status not in FINAL
                and settle(store, rec).status == "queued" and rec.executor == "local"):
            ensure_dispatcher(ws.root)


def list_runs(workspace: Workspace | None = None) -> list[RunRecord]:
    """Every run, oldest first, as it truly stands; unreadable folders with status
    ``unreadable`` and the reason. Starts nothing and writes nothing."""
    store = RunStore(workspace)
    records = store.list()
    jobs = slurm_jobs_for(records)
    return [view(r, store, jobs) if r.readable else r for r in records]


def get_run(run_id: str, workspace: Workspace | None = None) -> RunRecord:
    """One run as it truly stands (see :func:`list_runs`)."""
    store = RunStore(workspace)
    rec = store.read(run_id)
    return view(rec, store, slurm_jobs_for([rec]))


def progress(record: RunRecord, workspace: Workspace | None = None) -> Progress:
    """Where a training run stands (epochs, losses, validation errors)."""
    if not record.readable:
        return Progress(max_epochs=None)
    return read_progress(RunStore(workspace).folder(record.id), record.max_epochs)


def cancel(run_id: str, workspace: Workspace | None = None) -> RunRecord:
    """Cancel a queued or running run (a finished one is left as it is)."""
    ws = workspace or Workspace()
    store = RunStore(ws)
    rec = store.read(run_id)
    if rec.status in FINAL:
        return rec
    ex = get_executor(rec.executor)
    if store.transition(run_id, ("queued",), status="cancelled", finished=time.time(),
                        reason="cancelled before it started") is not None:
        if rec.executor == "slurm":
            ex.cancel(store, rec)  # the job must not start (if it does, its claim fails)
        return store.read(run_id)
    live = view(rec, store, slurm_jobs_for([rec]))
    if live.status == "failed":  # its runner is gone: record that, nothing to signal
        return settle(store, rec)
    atomic_write_text(store.folder(run_id) / "cancel", time.strftime("%Y-%m-%d %H:%M:%S\n"))
    ex.cancel(store, rec)
    return store.read(run_id)


def delete(run_id: str, workspace: Workspace | None = None) -> None:
    """Remove a finished (or unreadable) run's folder."""
    RunStore(workspace).delete(run_id)


def wait(run_id: str, workspace: Workspace | None = None, timeout: float | None = None,
         poll: float = 0.5) -> RunRecord:
    """Block until the run is done, failed or cancelled (starting the local dispatcher if a
    local run waits for one, and recording the end of a run whose runner is gone)."""
    ws = workspace or Workspace()
    store = RunStore(ws)
    deadline = None if timeout is None else time.time() + timeout
    started = False
    while True:
        rec = settle(store, store.read(run_id))
        if rec.status in FINAL:
            return rec
        if rec.executor == "local" and rec.status == "queued" and not started:
            ensure_dispatcher(ws.root)
            started = True
        if deadline is not None and time.time() > deadline:
            raise MlipftError(f"run {run_id} still {rec.status} after {timeout:.0f} s")
        time.sleep(poll)
