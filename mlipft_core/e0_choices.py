"""Which E0 method the data supports (the verdict), and the E0 choices saved in a workspace.

A saved choice is ``e0/<method>-<hash>.json`` (with a mace JSON file beside it) and is named
by its id; the workspace's state remembers the selected one. A damaged choice file is never
fatal: a page says why (:func:`choice_problem`), a run refuses one named explicitly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import atomic_numbers

from .e0_fit import (
    ANCHOR_ISOLATED,
    ANCHOR_NONE,
    E0Error,
    E0Result,
    _unanchored_warning,
    format_energy_per_atom,
    is_choice_id,
    level_offset_ev_per_atom,
    levels_differ,
)
from .workspace import (
    Workspace,
    atomic_write_json,
    damaged_notice,
    note,
    read_json_checked,
    set_aside_if_damaged,
)


@dataclass
class Verdict:
    """The method the data supports best, how sure that is, and why."""

    best: str | None
    level: str          # "success" | "warning" | "info"
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess(results: Mapping[str, E0Result]) -> Verdict:
    """:func:`verdict` with a level: a success only when the best method is anchored.

    A rank-deficient fit without isolated-atom energies is a warning, whatever its residual:
    it fits this composition family and is arbitrary outside it.
    """
    best, notes = verdict(results)
    if best is None:
        return Verdict(None, "info", notes)
    r = results[best]
    if not r.anchored:
        return Verdict(best, "warning", notes)
    return Verdict(best, "success" if best == "estimated" else "info", notes)


def verdict(results: Mapping[str, E0Result]) -> tuple[str | None, list[str]]:
    """Which method the data supports, and why, in plain language."""
    notes: list[str] = []
    scored = {m: r.offset_rmse_after_mev_per_atom for m, r in results.items()
              if r.offset_rmse_after_mev_per_atom is not None}
    if not scored:
        return None, ["Choose a foundation model to compare methods on the data."]
    best = min(scored, key=scored.get)
    f = results.get("foundation")
    if f is not None and f.offset_before is not None:
        mean = level_offset_ev_per_atom(f.offset_before)
        if levels_differ(mean):
            notes.append(f"The reference data and the foundation model disagree by "
                         f"{format_energy_per_atom(mean)} on average: different levels of theory "
                         "(or a different energy zero). The foundation E0s are wrong for "
                         "this data.")
        else:
            notes.append("The data and the foundation model agree on absolute energies to "
                         f"{abs(mean or 0.0) * 1000:.0f} meV/atom: the foundation E0s are "
                         "usable.")
    est = results.get("estimated")
    if best != "estimated" and est is not None and \
            scored.get("estimated", np.inf) <= scored[best] * 1.05 + 1.0:
        best = "estimated"  # as good as the best, and keeps the model's energy decomposition
    notes.append(f"'{best}' leaves the smallest offset: "
                 f"{scored[best]:.1f} meV/atom RMSE after the E0s.")
    if best == "estimated":
        notes.append("Model-aware re-estimation keeps the foundation model's split of energy "
                     "into E0s and interaction energy; the study behind this workbench found "
                     "it essential.")
    r = results[best]
    if r.diagnostics is not None and r.diagnostics.rank_deficient:
        if r.anchor == ANCHOR_ISOLATED:
            notes.append(f"The data cannot separate the E0s of "
                         f"{', '.join(r.diagnostics.undetermined)} "
                         f"({r.diagnostics.reason}); "
                         "the undetermined part comes from the isolated-atom energies of the "
                         "reference method, so the E0s stay physical outside this family.")
        else:
            notes.append(_unanchored_warning(r.diagnostics, r.anchor or ANCHOR_NONE, []))
    return best, notes


# ----------------------------------------------------------------------------- saving
def save_choice(workspace: Workspace, result: E0Result, *, model: str | None, head: str | None,
                data: str | None) -> dict[str, Any]:
    """Save an E0 choice in the workspace (``e0/<method>-<hash>.json`` + a mace JSON file)."""
    payload = {"method": result.method, "e0": result.e0, "model": model, "head": head,
               "data": data, "mace_argument": result.mace_argument(),
               "offset_rmse_after_mev_per_atom": result.offset_rmse_after_mev_per_atom}
    cid = result.method + "-" + hashlib.sha256(
        json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    folder = workspace.root / "e0"
    mace_json = folder / f"{cid}.mace.json"
    atomic_write_json(mace_json, {str(z): v for z, v in result.e0_by_z.items()})
    payload.update(id=cid, mace_json=str(mace_json))
    set_aside_if_damaged(folder / f"{cid}.json")
    atomic_write_json(folder / f"{cid}.json", payload)
    workspace.set(e0_choice=cid)
    return payload


def choice_file(workspace: Workspace, cid: str) -> Path:
    """Where the saved E0 choice ``cid`` is kept."""
    return workspace.root / "e0" / f"{cid}.json"


def _choice_problem(data: dict[str, Any]) -> str | None:
    """Why a parsed saved E0 choice cannot be used (completing "<file> ..."), or ``None``."""
    e0 = data.get("e0")
    if not isinstance(e0, dict) or not e0:
        return "holds no E0 values"
    for el, v in e0.items():
        if el not in atomic_numbers or el == "X":
            return f"names {el!r}, which is not an element"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            return f"gives {v!r} for {el}, not a finite number"
    for key in ("data", "model", "head", "mace_json", "method", "id"):
        if data.get(key) is not None and not isinstance(data[key], str):
            return f"has a {key!r} that is not text"
    return None


def read_choice(workspace: Workspace, cid: str | None = None
                ) -> tuple[dict[str, Any] | None, str | None]:
    """A saved E0 choice (the selected one when ``cid`` is None) and, when it cannot be
    used, why.

    Returns
    -------
    tuple
        ``(choice, None)``; ``(None, None)`` when none is selected or ``cid`` is no saved
        choice's id or there is no such file; ``(None, problem)`` when the file is damaged
        (not UTF-8, not JSON, not an object, values that are not numbers for elements).
    """
    cid = cid or workspace.get("e0_choice")
    if not is_choice_id(cid):
        return None, None
    path = choice_file(workspace, cid.strip())
    data, problem = read_json_checked(path, dict, "a saved E0 choice")
    if problem is None and data is not None:
        why = _choice_problem(data)
        problem = None if why is None else f"{path.name} {why}"
    return (None, problem) if problem is not None else (data, None)


def choice_problem(workspace: Workspace, cid: str | None = None) -> str | None:
    """A one-line message when the saved E0 choice (the selected one when ``cid`` is None)
    is damaged, else ``None``: what a page shows."""
    cid = cid or workspace.get("e0_choice")
    problem = read_choice(workspace, cid)[1]
    if problem is None:
        return None
    return damaged_notice(choice_file(workspace, str(cid).strip()), problem,
                          "runs use the estimated E0s until an E0 choice is saved again",
                          rewritten=False)


def load_choice(workspace: Workspace, cid: str | None = None) -> dict[str, Any] | None:
    """A saved E0 choice (the selected one when ``cid`` is None).

    A damaged selected choice counts as none (runs use the default E0s) and is said
    (:func:`~mlipft_core.workspace.note`; :func:`choice_problem` for a page). A damaged
    choice named by ``cid`` raises :class:`E0Error` saying what is wrong with it: the caller
    asked for exactly that choice.
    """
    data, problem = read_choice(workspace, cid)
    if problem is None:
        return data
    if cid is not None:
        path = choice_file(workspace, cid.strip())
        raise E0Error(f"the saved E0 choice {cid.strip()} cannot be used: {path}"
                      f"{problem.removeprefix(path.name)}; fit and save the E0s again (E0s "
                      "page), or give another E0 method", code="damaged_e0_choice")
    note(choice_problem(workspace))
    return None
