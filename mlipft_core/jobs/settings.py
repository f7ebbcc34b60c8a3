"""Where runs execute: the executors, and the workspace's run settings that choose among them.

The run settings (``settings.json`` in the workspace) name the default executor, the local
CPU slots and the SLURM options; :func:`executor_choice` combines them with what a
submission asks for.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

from ..errors import MlipftError
from ..workspace import Workspace, atomic_write_json, set_aside_if_damaged
from .local import LocalExecutor, read_settings
from .records import EXECUTORS, RunRecord, RunStore
from .slurm import SlurmError, SlurmExecutor, SlurmOptions

__all__ = ["DEFAULT_SETTINGS", "Executor", "executor_choice", "get_executor",
           "load_settings", "run_device", "save_settings"]


class Executor(Protocol):
    """Where prepared runs execute."""

    name: str

    def submit(self, store: RunStore, records: list[RunRecord]) -> None: ...

    def cancel(self, store: RunStore, rec: RunRecord) -> None: ...


_EXECUTORS: dict[str, Executor] = {"local": LocalExecutor(), "slurm": SlurmExecutor()}


def get_executor(name: str) -> Executor:
    """The executor called ``name``, or :class:`~mlipft_core.errors.MlipftError`."""
    try:
        return _EXECUTORS[name]
    except KeyError:
        raise MlipftError(f"unknown executor {name!r}; choose from "
                          f"{', '.join(EXECUTORS)}", code="unknown_executor") from None


DEFAULT_SETTINGS: dict[str, Any] = {"executor": "local", "local": {"cpu_slots": None},
                                    "slurm": SlurmOptions().to_dict()}


def load_settings(workspace: Workspace | None = None) -> dict[str, Any]:
    """The workspace's run settings (``settings.json``): default executor, local slots,
    SLURM options. Unreadable or unknown values fall back to the defaults."""
    ws = workspace or Workspace()
    return _settings_from(read_settings(ws.root))  # a damaged file is said and left aside


def _default_executor(raw: dict[str, Any]) -> str:
    """The default executor the raw settings name (``local`` for an unknown one)."""
    return raw["executor"] if raw.get("executor") in EXECUTORS else DEFAULT_SETTINGS["executor"]


def _settings_from(raw: dict[str, Any]) -> dict[str, Any]:
    """The run settings from the raw content of ``settings.json``, checked."""
    out = copy.deepcopy(DEFAULT_SETTINGS)
    out["executor"] = _default_executor(raw)
    local = raw.get("local") if isinstance(raw.get("local"), dict) else {}
    if isinstance(local.get("cpu_slots"), int) and local["cpu_slots"] >= 1:
        out["local"]["cpu_slots"] = local["cpu_slots"]
    slurm = raw.get("slurm") if isinstance(raw.get("slurm"), dict) else {}
    try:
        out["slurm"] = SlurmOptions.from_dict({**out["slurm"], **slurm}).check().to_dict()
    except (SlurmError, TypeError):
        pass
    return out


def save_settings(workspace: Workspace | None = None, *, executor: str | None = None,
                  cpu_slots: int | None = None, slurm: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Change the workspace's run settings (checked) and return them."""
    ws = workspace or Workspace()
    cur = load_settings(ws)
    if executor is not None:
        get_executor(executor)
        cur["executor"] = executor
    if cpu_slots is not None:
        if not isinstance(cpu_slots, int) or cpu_slots < 1:
            raise MlipftError(f"CPU slots must be at least 1, not {cpu_slots!r}")
        cur["local"]["cpu_slots"] = cpu_slots
    if slurm is not None:
        cur["slurm"] = SlurmOptions.from_dict({**cur["slurm"], **slurm}).check().to_dict()
    set_aside_if_damaged(ws.root / "settings.json")
    atomic_write_json(ws.root / "settings.json", cur)
    return cur


def executor_choice(ws: Workspace, executor: str | None,
                    slurm: SlurmOptions | dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """The executor a submission uses (``executor``, else the workspace's default) and its
    checked options: for SLURM the workspace's options with ``slurm`` over them, else ``{}``
    (the SLURM options are then not read)."""
    raw = read_settings(ws.root)  # a damaged file is said and left aside
    name = executor or _default_executor(raw)
    get_executor(name)
    if name != "slurm":
        return name, {}
    base = _settings_from(raw)["slurm"]
    given = slurm.to_dict() if isinstance(slurm, SlurmOptions) else dict(slurm or {})
    opts = SlurmOptions.from_dict({**base, **{k: v for k, v in given.items() if v is not None}})
    return name, opts.check().to_dict()


def run_device(exec_name: str, exec_opts: dict[str, Any]) -> str:
    """The device of a run that names none: a GPU when a SLURM run asks for one, on this
    machine the default device of the machine."""
    if exec_name == "slurm":
        return "cuda" if exec_opts.get("gpus") else "cpu"
    from ..evaluate import default_device  # the prediction machinery: only for MD runs

    return default_device()
