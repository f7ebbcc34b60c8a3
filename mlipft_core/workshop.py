"""Workshop mode: many participants on one server, each in a space of their own.

A workshop lives in a workspace folder (``$MLIPFT_WORKSPACE``)::

    <root>/workshop.json            name, tokens, limits, executor, pre-staged files
    <root>/participants/<name>/     one ordinary workspace per participant (selections,
                                    uploads, splits, E0 choices, runs, caches)
    <root>/staged/models/, data/    files the instructor pre-staged (shared, read-only)
    <root>/queue/                   the one dispatcher that serves every participant's runs

Each participant opens the app through a link carrying a random token; the instructor's link
opens the board. Tokens are compared in constant time; a browser without a valid token sees
only the join page. Participants are isolated: their workspace is the only writable place, a
typed path must lie in their workspace, the pre-staged folder or the bundled demo world, and
run ids never leave their ``runs/`` folder.

The workshop is three modules: :mod:`~mlipft_core.workshop_room` (the configuration,
participants, tokens and limits), :mod:`~mlipft_core.workshop_board` (the instructor's board)
and this one, the run rules a participant's runs follow, registered with the run path when it
is imported. Import the workshop from here: every name of the other two is re-exported.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .jobs.policy import OpenPolicy, SubmissionPolicy, register
from .jobs.records import ACTIVE, RunStore
from .workshop_board import (
    FIGURES,
    BoardEntry,
    BoardRun,
    board_runs,
    board_table,
    findings,
    record_figures,
)
from .workshop_room import (
    FILE,
    INSTRUCTOR,
    AccessError,
    Limits,
    Participant,
    Workshop,
    WorkshopError,
    _workshop_root_of,
    create,
    load,
    of_workspace,
)
from .workspace import Workspace

__all__ = ["FIGURES", "FILE", "INSTRUCTOR", "AccessError", "BoardEntry", "BoardRun", "Limits",
           "Participant", "ParticipantRules", "Workshop", "WorkshopError", "WorkshopRules",
           "board_runs", "board_table", "create", "findings", "load", "of_workspace",
           "policy_for", "record_figures"]


# ----------------------------------------------------------------------------- run rules
class ParticipantRules(OpenPolicy):
    """The submission policy of a participant's workspace (and of the instructor's own
    space): at most ``max_active_runs`` runs queued or running, the epoch cap, the run-time
    cap; the runs belong to the participant, one dispatcher in the workshop folder serves
    every participant's runs, and a finished run measures the board's figures.

    The workshop's configuration is read when a limit is first asked for, so that finding
    the dispatcher never depends on it.
    """

    def __init__(self, workspace: Workspace, root: Path) -> None:
        super().__init__(workspace)
        self.root = root
        self.name = workspace.root.name

    @functools.cached_property
    def shop(self) -> Workshop | None:
        return load(self.root)

    def check_submission(self, n_new: int, settings: Sequence[Mapping[str, Any]]) -> None:
        """Refuse runs over the participant's limit of active runs or over the epoch cap."""
        if self.shop is None:
            return
        active = sum(1 for r in RunStore(self.workspace).list() if r.status in ACTIVE)
        lim = self.shop.limits
        if active + n_new > lim.max_active_runs:
            raise WorkshopError(f"the workshop allows {lim.max_active_runs} queued or running "
                                f"runs per participant; you have {active}, and this would add "
                                f"{n_new}. Wait for some to finish or cancel one.",
                                code="run_limit")
        if lim.max_epochs is not None:
            over = [s.get("max_num_epochs") for s in settings
                    if int(s.get("max_num_epochs") or 0) > lim.max_epochs]
            if over:
                raise WorkshopError(f"the workshop caps runs at {lim.max_epochs} epochs "
                                    f"(asked: {max(over)})", code="epoch_cap")

    def owner(self) -> str | None:
        return self.name if self.shop is not None else None

    def time_limit_s(self) -> float | None:
        if self.shop is None or self.shop.limits.max_run_minutes is None:
            return None
        return float(self.shop.limits.max_run_minutes) * 60.0

    def dispatch_root(self) -> Path:
        return self.root

    def after_run(self, folder: Path, model: Path) -> None:
        """Measure the figures the instructor's board shows (:func:`record_figures`)."""
        try:
            record_figures(self.workspace, Path(folder).name, model)
        except Exception as exc:  # noqa: BLE001 - the run is done whatever the board gets
            print(f"the board's figures could not be measured: {exc}", file=sys.stderr)


class WorkshopRules(OpenPolicy):
    """The submission policy of the workshop folder itself: its dispatcher serves every
    participant's runs (fairly, see :class:`~mlipft_core.jobs.local.Dispatcher`)."""

    def served_roots(self) -> list[Path]:
        parts = self.workspace.root / "participants"
        try:
            return [d for d in sorted(parts.iterdir()) if d.is_dir()]
        except OSError:
            return []


@register
def policy_for(ws: Workspace) -> SubmissionPolicy | None:
    """The workshop's submission policy for ``ws`` (registered with the run path when this
    module is imported): :class:`ParticipantRules` in a participant's space,
    :class:`WorkshopRules` in the workshop folder, ``None`` elsewhere (the run path's open
    policy applies)."""
    root = _workshop_root_of(ws)
    if root is not None:
        return ParticipantRules(ws, root)
    if (ws.root / FILE).is_file() and (ws.root / "participants").is_dir():
        return WorkshopRules(ws)
    return None
