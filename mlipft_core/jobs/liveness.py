"""Whether an active run is really going: a run whose runner or SLURM job is gone is over.

Reading (:func:`view`) only *shows* such a run as failed, with the reason; :func:`settle`
records it. The dispatcher settles the local runs whose runner died; the listing, waiting
and cancelling settle what they meet.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import replace

from ..errors import MlipftError
from .records import ACTIVE, FINAL, RunRecord, RunStore, log_tail, runner_alive
from .slurm import active_jobs, job_log_tail

__all__ = ["gone_reason", "settle", "slurm_jobs_for", "view"]


def gone_reason(rec: RunRecord, slurm_jobs: dict[str, str] | None) -> str | None:
    """Why an active run is in truth over (its runner or job is gone), or ``None``.

    ``slurm_jobs`` are the jobs SLURM still knows (``None``: SLURM cannot be asked)."""
    if rec.status not in ACTIVE:
        return None
    if rec.executor == "local":
        if rec.status == "running" and runner_alive(rec) is False:
            return ("the run's process ended without recording a result (killed, or the "
                    "machine restarted)")
        return None
    if slurm_jobs is None or not rec.slurm_job_id:
        return None  # SLURM cannot be asked, or the job is being submitted
    if rec.slurm_job_id in slurm_jobs:
        return None
    if rec.status == "running" and runner_alive(rec):
        return None
    tail = job_log_tail(rec, 3)
    last = tail.splitlines()[-1].strip() if tail else ""
    return (f"SLURM job {rec.slurm_job_id} ended without recording a result"
            + (f": {last[:300]}" if last else ""))


def slurm_jobs_for(records: Iterable[RunRecord]) -> dict[str, str] | None:
    """The jobs SLURM knows, when one of ``records`` is an active SLURM run (else ``{}``,
    without asking SLURM)."""
    if any(r.executor == "slurm" and r.status in ACTIVE for r in records):
        return active_jobs()
    return {}


def view(rec: RunRecord, store: RunStore, slurm_jobs: dict[str, str] | None = None
         ) -> RunRecord:
    """The record as it truly stands: an active run whose runner or job is gone is shown
    as failed with the reason (nothing is written; :func:`settle` records it)."""
    reason = gone_reason(rec, slurm_jobs)
    if reason is None:
        return rec
    try:  # it may have recorded its end meanwhile
        fresh = store.read(rec.id)
    except MlipftError:
        return rec
    if fresh.status in FINAL:
        return fresh
    return replace(fresh, status="failed", reason=reason)


def settle(store: RunStore, rec: RunRecord, slurm_jobs: dict[str, str] | None = None
           ) -> RunRecord:
    """Record the end of an active run whose runner or job is gone; return the record."""
    if slurm_jobs is None and rec.executor == "slurm":
        slurm_jobs = slurm_jobs_for([rec])
    seen = view(rec, store, slurm_jobs)
    if seen.status == "failed" and rec.status in ACTIVE:
        done = store.transition(rec.id, (rec.status,), status="failed", finished=time.time(),
                                reason=seen.reason,
                                log_tail=log_tail(store.folder(rec.id) / "train.log"))
        return done or store.read(rec.id)
    return seen
