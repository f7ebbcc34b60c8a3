"""The SLURM executor: the same prepared run folders, submitted to a cluster with submitit.

Each run becomes a SLURM job that calls :func:`.runner.run_folder` on its folder (the workspace
must be on a file system the compute nodes share, as home and scratch folders are). Runs
submitted together (a sweep) go in as one job array. The job's id is recorded in the run
(``slurm_job_id``, e.g. ``1234`` or ``1234_0`` for an array task); cancelling is ``scancel``.
Progress and results are read from the run folder, as for local runs.

The run's state lives in its folder (the job writes it), so the cluster needs no accounting
database: ``squeue`` only tells whether a job still exists, to notice jobs that ended without
recording their end (killed by the node, time limit hit before the runner could react).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MlipftError
from . import policy
from .records import RunRecord, RunStore, log_tail


class SlurmError(MlipftError):
    """SLURM is not reachable, or refused a job."""

    code = "slurm_error"


@dataclass
class SlurmOptions:
    """Resources asked of SLURM for each run.

    Parameters
    ----------
    partition
        Partition (queue) name; ``None``: the cluster's default.
    time_min
        Wall-time limit per run, minutes.
    cpus
        CPUs per run (also the number of torch threads).
    gpus
        GPUs per run (0: a CPU run).
    mem_gb
        Memory per run, GB; ``None``: the cluster's default.
    extra
        Further ``sbatch`` options, e.g. ``--qos=short --account=proj``.
    """

    partition: str | None = None
    time_min: int = 60
    cpus: int = 2
    gpus: int = 0
    mem_gb: float | None = None
    extra: str = ""
    job_name: str | None = field(default=None, repr=False)

    def check(self) -> SlurmOptions:
        if not isinstance(self.time_min, int) or self.time_min < 1:
            raise SlurmError(f"the SLURM time limit must be at least 1 minute, not "
                             f"{self.time_min!r}")
        if not isinstance(self.cpus, int) or self.cpus < 1:
            raise SlurmError(f"CPUs per SLURM run must be at least 1, not {self.cpus!r}")
        if not isinstance(self.gpus, int) or self.gpus < 0:
            raise SlurmError(f"GPUs per SLURM run must be 0 or more, not {self.gpus!r}")
        if self.mem_gb is not None and (not isinstance(self.mem_gb, (int, float))
                                        or not math.isfinite(self.mem_gb) or self.mem_gb <= 0):
            raise SlurmError(f"memory per SLURM run must be a positive number of GB, not "
                             f"{self.mem_gb!r}")
        if self.partition is not None and not str(self.partition).replace("-", "").replace(
                "_", "").replace(",", "").isalnum():
            raise SlurmError(f"partition {self.partition!r} is not a valid name")
        extra_parameters(self.extra)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SlurmOptions:
        data = dict(data or {})
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


#: sbatch option names (``--qos``, ``--mail-user``, ...)
_OPTION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


#: sbatch options every job of the workbench sets itself, and the option (of ``mlipft``, the
#: runs page's SLURM settings) that chooses them: submitit lets extra options override its
#: own, so one given here would change the job behind the run's back (``--time``: past the
#: run's time limit; ``--signal``: no warning before the limit; ``--nodes``/``--ntasks``: one
#: run folder run several times at once).
_OWN_OPTIONS: dict[str, str | None] = {
    "array": None, "output": None, "error": None, "wrap": None, "open-mode": None,
    "signal": None, "nodes": None, "ntasks": None, "ntasks-per-node": None,
    "job-name": None, "time": "--slurm-time", "cpus-per-task": "--slurm-cpus",
    "partition": "--slurm-partition", "mem": "--slurm-mem", "gpus-per-node": "--slurm-gpus",
    "gpus": "--slurm-gpus",
}


def extra_parameters(extra: str) -> dict[str, Any]:
    """``--key=value`` / ``--flag`` sbatch options as submitit's ``additional_parameters``.

    Every option becomes one ``#SBATCH`` line of the job script, so a name must be an
    sbatch option name (letters, digits, '-') and no value may hold a control character: a
    newline would end the ``#SBATCH`` line and make the rest a command of the job. The
    options the workbench sets itself (:data:`_OWN_OPTIONS`) are refused, with the option
    that chooses them.
    """
    out: dict[str, Any] = {}
    if _CONTROL.search(extra or ""):
        raise SlurmError("extra sbatch options must not contain line breaks or other control "
                         "characters")
    try:
        words = shlex.split(extra or "")
    except ValueError as exc:
        raise SlurmError(f"cannot read the extra sbatch options: {exc}") from None
    i = 0
    while i < len(words):
        w = words[i]
        if not w.startswith("--") or len(w) < 3:
            raise SlurmError(f"extra sbatch options must look like --name=value or --flag, "
                             f"not {w!r}")
        key, sep, value = w[2:].partition("=")
        if not _OPTION_NAME.fullmatch(key):
            raise SlurmError(f"{w!r} is not an sbatch option: a name holds letters, digits and "
                             "'-' only (e.g. --qos=short)")
        if key in _OWN_OPTIONS:
            instead = _OWN_OPTIONS[key]
            raise SlurmError(f"--{key} is set by the workbench and cannot be given here"
                             + (f"; use {instead}" if instead else ""))
        if not sep and i + 1 < len(words) and not words[i + 1].startswith("--"):
            value, i = words[i + 1], i + 1
            sep = "="
        out[key.replace("-", "_")] = value if sep else True
        i += 1
    return out


def available() -> tuple[bool, str]:
    """Whether a SLURM controller answers here, and a one-line explanation."""
    if not shutil.which("sbatch") or not shutil.which("squeue"):
        return False, "the SLURM commands (sbatch, squeue) are not installed on this machine"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"sinfo failed: {exc}"
    if out.returncode != 0:
        return False, f"the SLURM controller does not answer: {out.stderr.strip()[:200]}"
    parts = [ln.split()[0] for ln in out.stdout.splitlines() if ln.strip()]
    return True, "partitions: " + ", ".join(parts)


def partitions() -> list[str]:
    """Partition names (the default one marked with ``*`` by SLURM is unmarked here)."""
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [p.strip().rstrip("*") for p in out.stdout.split() if p.strip()]


def active_jobs() -> dict[str, str] | None:
    """Jobs SLURM still knows (pending, running, completing): id -> state; ``None`` when
    ``squeue`` cannot be asked."""
    if not shutil.which("squeue"):
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    jobs = {}
    for ln in out.stdout.splitlines():
        jid, _, state = ln.strip().partition("|")
        if jid:
            jobs[jid] = state
    return jobs


def job_name(records: list[RunRecord]) -> str:
    """``mlipft-<owner>-<run or sweep>``: the owner of the runs (their ``participant``)
    shows in squeue."""
    who = records[0].participant
    what = records[0].sweep if len(records) > 1 and records[0].sweep else records[0].name
    return "mlipft-" + (f"{who}-" if who else "") + what


class SlurmExecutor:
    """Submits prepared run folders to SLURM through submitit."""

    name = "slurm"

    def submit(self, store: RunStore, records: list[RunRecord]) -> None:
        import submitit

        from .runner import run_folder

        if not records:
            return
        ok, why = available()
        if not ok:
            raise SlurmError(f"cannot submit to SLURM: {why}")
        opts = SlurmOptions.from_dict(records[0].executor_options).check()
        if records[0].time_limit_s:  # the run's own time limit is the job's limit too
            opts.time_min = max(1, min(opts.time_min, int(records[0].time_limit_s // 60) + 1))
        logs = store.workspace.root / "slurm" / "%j"
        ex = submitit.SlurmExecutor(folder=str(logs), max_num_timeout=0)
        setup = [f"export OMP_NUM_THREADS={opts.cpus}", f"export MKL_NUM_THREADS={opts.cpus}",
                 "export PYTHONUNBUFFERED=1"]
        named = policy.child_env().get(policy.ENV_VAR)
        if named:  # the job follows the submission policies of this process
            setup.append(f"export {policy.ENV_VAR}={shlex.quote(named)}")
        params: dict[str, Any] = {
            "time": int(opts.time_min), "cpus_per_task": int(opts.cpus), "nodes": 1,
            "ntasks_per_node": 1, "job_name": opts.job_name or job_name(records),
            "setup": setup, "signal_delay_s": 60, "stderr_to_stdout": True,
            "additional_parameters": extra_parameters(opts.extra)}
        if opts.partition:
            params["partition"] = opts.partition
        if opts.gpus:
            params["gpus_per_node"] = int(opts.gpus)
        if opts.mem_gb:
            params["mem"] = f"{int(round(opts.mem_gb * 1024))}M"
        ex.update_parameters(**params)
        folders = [str(store.folder(r.id)) for r in records]
        try:
            if len(folders) == 1:
                jobs = [ex.submit(run_folder, folders[0])]
            else:
                jobs = ex.map_array(run_folder, folders)
        except Exception as exc:  # submitit raises plain errors with sbatch's message
            raise SlurmError(f"sbatch refused the job: {str(exc).strip()[-400:]}") from None
        for rec, job in zip(records, jobs):
            store.update(rec.id, slurm_job_id=str(job.job_id),
                         executor_options={**rec.executor_options,
                                           "log": str(Path(str(job.paths.stdout)))})

    def cancel(self, store: RunStore, rec: RunRecord) -> None:
        if not rec.slurm_job_id:
            return
        try:
            subprocess.run(["scancel", rec.slurm_job_id], capture_output=True, text=True,
                           timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SlurmError(f"scancel {rec.slurm_job_id} failed: {exc}") from None


def job_log_tail(rec: RunRecord, lines: int = 5) -> str:
    """The end of the SLURM job's own log (submitit's), where the run left none."""
    path = (rec.executor_options or {}).get("log")
    return log_tail(Path(path), lines) if path and os.path.isfile(path) else ""
