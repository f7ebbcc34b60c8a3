"""The instructor's side of a workshop: create it, stage files, read the board, serve it.

The workshop lives in the current workspace (``$MLIPFT_WORKSPACE``); see
:mod:`mlipft_core.workshop` for what a workshop is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import workshop
from .registry import get_spec, model_path
from .serve import serve_app, workshop_port
from .workshop import BoardEntry, BoardRun, Limits, Workshop, WorkshopError
from .workspace import Workspace

#: Told the workshop and the port just before its server starts.
AnnounceFn = Callable[[Workshop, int], None]

#: File endings staged as models; any other file is staged as data.
MODEL_SUFFIXES = (".model", ".pt")


def create_workshop(participants: int | None = None, names: Sequence[str] | None = None, *,
                    name: str = "workshop", base_url: str = "http://localhost:8501",
                    max_runs: int = 4, max_epochs: int | None = 50,
                    max_minutes: float | None = 30.0, upload_limit_mb: float = 50.0,
                    executor: str | None = None, slurm: dict[str, Any] | None = None,
                    stage_models: Sequence[str] = (),
                    stage_data: Sequence[str] = ()) -> Workshop:
    """Set up a workshop in the current workspace.

    Parameters
    ----------
    participants
        Number of participants (named ``p01``, ``p02``, ...), unless ``names`` are given.
    names
        Participant names.
    name
        Workshop name.
    base_url
        The address participants open, e.g. ``http://gpu-server:8501``.
    max_runs, max_epochs, max_minutes, upload_limit_mb
        Limits per participant: queued + running runs, epochs and minutes per run, upload
        size.
    executor, slurm
        Executor of every participant's runs (default: local), and SLURM options (``None``
        values left out).
    stage_models, stage_data
        Model and data files to pre-stage; a registry name among the models makes that model
        and its replay set ready in mace's cache (:func:`prepare_official`).

    Returns
    -------
    Workshop
        The new workshop.

    Raises
    ------
    WorkshopError
        Neither participants nor names, bad limits or files.
    WorkspaceError
        A workspace that cannot be written.
    """
    root = Workspace().root
    Workspace(root).check_writable()
    limits = Limits(max_active_runs=max_runs, max_epochs=max_epochs,
                    max_run_minutes=max_minutes, upload_limit_mb=upload_limit_mb)
    if names is None and participants is None:
        raise WorkshopError("give --participants N (or --names a,b,c)")
    prepare_official([m for m in stage_models if get_spec(m) is not None])
    stage_models = [m for m in stage_models if get_spec(m) is None]
    return workshop.create(root, list(names) if names else participants, name=name,
                           base_url=base_url, limits=limits, executor=executor or "local",
                           slurm={k: v for k, v in (slurm or {}).items() if v is not None},
                           stage={"models": list(stage_models), "data": list(stage_data)})


def workshop_summary(shop: Workshop) -> dict[str, Any]:
    """A workshop's links, workspaces, limits and staged files.

    Parameters
    ----------
    shop
        The workshop.

    Returns
    -------
    dict
        ``name``, ``workspace``, ``instructor_url``, ``participants`` (``name``, ``url``,
        ``workspace``), ``limits``, ``executor``, ``staged`` (``models``, ``data``).
    """
    return {"name": shop.name, "workspace": str(shop.root),
            "instructor_url": shop.url(shop.instructor_token),
            "participants": [{"name": p.name, "url": shop.url(p.token),
                              "workspace": str(shop.workspace_of(p.name).root)}
                             for p in shop.participants],
            "limits": shop.limits.__dict__, "executor": shop.executor,
            "staged": {"models": [str(p) for p in shop.staged_models()],
                       "data": [str(p) for p in shop.staged_data()]}}


def current_workshop() -> Workshop:
    """The workshop of the current workspace.

    Returns
    -------
    Workshop
        The workshop.

    Raises
    ------
    WorkshopError
        There is none.
    """
    root = Workspace().root
    shop = workshop.load(root)
    if shop is None:
        raise WorkshopError(f"no workshop in {root}: create one with "
                            "'mlipft workshop create --participants N'")
    return shop


def stage_files(files: Sequence[str]) -> list[Path]:
    """Copy files into the workshop's shared, read-only staging folder.

    Parameters
    ----------
    files
        Model files (``.model``, ``.pt``) and datasets; a registry name instead makes that
        model and its replay set ready in mace's cache (:func:`prepare_official`).

    Returns
    -------
    list of Path
        The staged copies.
    """
    Workspace().check_writable()
    shop = current_workshop()
    named = prepare_official([p for p in files if get_spec(p) is not None])
    return named + [shop.stage(p, "models" if p.endswith(MODEL_SUFFIXES) else "data")
                    for p in files if get_spec(p) is None]


def prepare_official(names: Sequence[str]) -> list[Path]:
    """Registry models made ready for every participant at once: each model in mace's cache
    (downloaded through mace's own loader where it is missing) and the replay set mace offers
    for it (:func:`~mlipft_core.replay_sets.fetch`); the files. Offline, the error names the
    missing file and where a copy goes."""
    from .replay_sets import fetch as fetch_replay
    from .replay_sets import replay_set_for

    out: list[Path] = []
    for name in names:
        out.append(model_path(name, trusted=True))
        if replay_set_for(name) is not None:
            out.append(fetch_replay(name))
    return out


@dataclass
class Board:
    """The instructor's board: every participant's runs, the table by strategy, findings."""

    shop: Workshop
    runs: list[BoardRun]
    table: list[BoardEntry]
    findings: list[str]

    def to_dict(self) -> dict[str, Any]:
        """The board as JSON: ``workshop``, ``participants``, ``runs``, ``table``,
        ``findings``."""
        return {"workshop": self.shop.name,
                "participants": [p.name for p in self.shop.participants],
                "runs": [r.to_dict() for r in self.runs],
                "table": [e.to_dict() for e in self.table], "findings": self.findings}


def board() -> Board:
    """The board of the current workspace's workshop.

    Returns
    -------
    Board
        Runs, table and findings.
    """
    shop = current_workshop()
    runs = workshop.board_runs(shop)
    return Board(shop, runs, workshop.board_table(runs), workshop.findings(runs))


def serve_workshop(port: int | None = None, address: str = "0.0.0.0", *,
                   announce: AnnounceFn | None = None) -> int:
    """Serve the app to the workshop's participants until it is stopped.

    Parameters
    ----------
    port
        Port to serve on (default: the port of the workshop's address, else 8501).
    address
        Address to serve on.
    announce
        Told the workshop and the port just before the server starts.

    Returns
    -------
    int
        Streamlit's exit status.
    """
    shop = current_workshop()
    port = workshop_port(shop.base_url, port)
    if announce is not None:
        announce(shop, port)
    return serve_app(port, address=address, max_upload_mb=shop.limits.upload_limit_mb,
                     workspace=shop.root)
