"""Fine-tuning and MD runs: prepare, execute on an executor, watch, cancel, delete.

A run is a folder ``runs/<id>/`` in the workspace, and that folder is the single truth:
``run.json`` (the record and its state), ``config.yaml`` (the exact ``mace_run_train``
configuration), ``command.sh`` (the same run as a command line), the foundation copy carrying
the chosen E0s, ``train.log`` and mace's own ``results/``, ``logs/``, ``checkpoints/`` and
model files. A run is *prepared* once (:func:`prepare`) and then handed to an *executor*:

- ``local`` (:mod:`.local`): runs on this machine, CPU slots and one slot per visible GPU;
- ``slurm`` (:mod:`.slurm`): one SLURM job per run (a job array per sweep), via submitit.

Both start the same :mod:`.runner` on the folder, which claims the run before its process
starts and records its end. Reading runs (:func:`list_runs`, :func:`get_run`) has no side
effects: a run whose runner or job is gone is *shown* as failed; :func:`settle` records it.

The package is laid out along a run's way:

- :mod:`.policy`: the rules of a workspace's runs (who may queue what, who owns a run, which
  dispatcher serves it), asked once per submission;
- :mod:`.settings`: the executors and the workspace's run settings;
- :mod:`.prepare`: a run spec made into a run folder;
- :mod:`.sweeps`: launches of several runs, planned and checked whole;
- :mod:`.queue`: submitting, reading, cancelling and waiting for runs;
- :mod:`.records` (with :mod:`.run_record`), :mod:`.liveness`, :mod:`.progress`,
  :mod:`.provenance`: the record of a run, whether it still goes, how far it is, the model
  files it used;
- :mod:`.local`, :mod:`.slurm`, :mod:`.runner`: the executors and the process that runs a run.

This module only gathers the names callers use.
"""

from __future__ import annotations

from typing import Any

from ..errors import MlipftError
from . import provenance
from .liveness import settle, view
from .local import LocalExecutor, ensure_dispatcher
from .policy import Admission, OpenPolicy, SubmissionPolicy, check_submission, policy_for
from .prepare import (
    TrainingDataError,
    check_batch_fits,
    isolated_atoms_warning,
    mace_train_count,
    preflight,
    prepare,
    train_file_for_mace,
)
from .progress import Progress, read_progress
from .queue import (
    cancel,
    delete,
    get_run,
    keep_sweeps_going,
    list_runs,
    md_progress,
    progress,
    submit,
    submit_md,
    wait,
)
from .records import (
    ACTIVE,
    EXECUTORS,
    FINAL,
    InvalidRunNameError,
    RunNotFoundError,
    RunRecord,
    RunStore,
    UnreadableRunError,
    check_name,
    runner_alive,
)
from .settings import DEFAULT_SETTINGS, Executor, get_executor, load_settings, save_settings
from .slurm import SlurmError, SlurmExecutor, SlurmOptions
from .sweeps import (
    SweepPlan,
    expand_sweep,
    parse_list,
    submit_plan,
    submit_size_sweep,
    submit_sweep,
)


def __getattr__(name: str) -> Any:
    """``resolve_e0s`` (:func:`mlipft_core.e0_for_runs.resolve_e0s`), imported when first
    asked for: the E0 machinery (numpy, ase, the model code) is not needed to dispatch or run
    prepared runs, which import this package."""
    if name == "resolve_e0s":
        from ..e0_for_runs import resolve_e0s

        return resolve_e0s
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# resolve_e0s comes from __getattr__
__all__ = ["ACTIVE", "Admission", "DEFAULT_SETTINGS", "EXECUTORS", "FINAL", "Executor",  # noqa: F822
           "InvalidRunNameError", "LocalExecutor", "MlipftError", "OpenPolicy", "Progress",
           "RunNotFoundError", "RunRecord", "RunStore", "SlurmError", "SlurmExecutor",
           "SlurmOptions", "SubmissionPolicy", "SweepPlan", "TrainingDataError",
           "UnreadableRunError", "cancel", "check_batch_fits", "check_name",
           "check_submission", "delete", "ensure_dispatcher", "expand_sweep", "get_executor",
           "get_run", "isolated_atoms_warning", "keep_sweeps_going", "list_runs",
           "load_settings", "mace_train_count", "md_progress", "parse_list", "policy_for",
           "preflight", "prepare", "progress", "provenance", "read_progress", "resolve_e0s",
           "runner_alive", "save_settings", "settle", "submit", "submit_md", "submit_plan",
           "submit_size_sweep", "submit_sweep", "train_file_for_mace", "view", "wait"]
