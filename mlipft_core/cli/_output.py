"""What the commands print: a JSON payload with ``--json``, else text (printed by
:func:`mlipft_core.cli.main` once the command has run), and the pieces several commands
print alike."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ..actions import is_local_model_file
from ..replay import replay_of
from ..workspace import Workspace

if TYPE_CHECKING:
    from ..jobs.progress import Progress
    from ..jobs.records import RunRecord


class Output:
    """What a command prints: JSON ``payload`` with ``--json``, else ``text``."""

    def __init__(self) -> None:
        self.payload: Any = None
        self.text = ""


def emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    """Set what the command prints.

    Parameters
    ----------
    args
        The parsed command line (its ``output``).
    payload
        Printed as JSON with ``--json``.
    text
        Printed otherwise.
    """
    args.output.payload, args.output.text = payload, text


def trusted(model: str) -> bool:
    """Whether the user vouches for a model: a path typed on the command line is a local file
    the user chose, trusted by that act, which is said on stderr.

    Parameters
    ----------
    model
        Registry name or path.

    Returns
    -------
    bool
        ``True`` for the path of a local model file.
    """
    if is_local_model_file(model):
        print(f"note: loading local model file {model} (a pickle; use only files you trust)",
              file=sys.stderr)
        return True
    return False


def number(value: float | None) -> str:
    """A figure with one decimal, ``n/a`` when there is none."""
    return "n/a" if value is None else f"{value:.1f}"


def run_row(rec: RunRecord, prog: Progress | None = None) -> dict[str, Any]:
    """A run as JSON: its record, the settings it was asked for, and its progress.

    Parameters
    ----------
    rec
        The run.
    prog
        Its training progress (``progress`` key), if wanted.

    Returns
    -------
    dict
        The row.
    """
    spec = rec.spec if isinstance(rec.spec, dict) else {}
    settings = spec.get("settings") if isinstance(spec.get("settings"), dict) else {}
    warnings = spec.get("warnings") if isinstance(spec.get("warnings"), list) else []
    d = {"id": rec.id, "status": rec.status, "strategy": rec.strategy, "name": rec.name,
         "kind": rec.kind, "device": rec.device, "executor": rec.executor,
         "slurm_job_id": rec.slurm_job_id, "host": rec.host, "gpu": rec.gpu,
         "created": rec.created, "started": rec.started, "finished": rec.finished,
         "model_path": rec.model_path, "reason": rec.reason, "metrics": rec.metrics,
         "sweep": rec.sweep, "lr": settings.get("lr"), "train_size": spec.get("train_size"),
         "warnings": [str(w) for w in warnings],
         "replay": replay_of(spec, Workspace().runs / rec.id),
         "preset": str(settings.get("preset") or "short budget")}
    if prog is not None:
        d["progress"] = {"epoch": prog.epoch, "max_epochs": prog.max_epochs,
                         "fraction": prog.fraction, "valid": prog.last_valid()}
    return d
