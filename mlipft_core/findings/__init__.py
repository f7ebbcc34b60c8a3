"""The study's findings, one module each, in the order :data:`FINDINGS` lists them.

Every finding module has:

- ``KEY``: its stable name (``"e0"``, ``"scratch"``, ...), by which pages and scripts find it;
- ``state(ev: Evidence) -> Finding``: the finding from what the analysis measured, with its
  verdict (``reproduced``), the ``numbers`` it is computed from, its table, summary,
  teaching and runs; its module docstring states the rule of the verdict;
- ``layout(f: Finding, extra: dict) -> Finding``: the finding's plots and further tables, from
  its own table and the study's ``extra`` (``state`` ends with it; a finding stored before
  findings had keys is laid out again with it when read).

Adding a finding is adding one module with these three names and listing it at the end of
:data:`FINDINGS`: the analysis states it, ``mlipft study`` prints it and the Study page
draws it (its table, then its :class:`Chart` objects by kind) with no other change. Its
``number`` is its place in the list.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from . import close, e0, foundation, repulsion, retention, scratch
from .base import (
    Chart,
    Evidence,
    Finding,
    Table,
    display_name,
    head_name,
    role_title,
    strategy_title,
)
from .walls import WALL_COLUMNS, wall_table, walls_in_words

#: The findings in the study's order; a finding's ``number`` is its place here.
FINDINGS: tuple[ModuleType, ...] = (e0, scratch, retention, close, foundation, repulsion)

__all__ = ["FINDINGS", "Chart", "Evidence", "Finding", "Table", "WALL_COLUMNS", "by_key",
           "display_name", "head_name", "read", "role_title", "state_all", "strategy_title",
           "wall_table", "walls_in_words"]


def by_key(key: str) -> ModuleType:
    """The module of the finding ``key``; KeyError for an unknown one."""
    for kind in FINDINGS:
        if key == kind.KEY:
            return kind
    raise KeyError(key)


def state_all(ev: Evidence) -> list[Finding]:
    """Every finding of :data:`FINDINGS` from what the analysis measured, numbered in order."""
    out = []
    for number, kind in enumerate(FINDINGS, 1):
        f = kind.state(ev)
        f.number = number
        out.append(f)
    return out


def read(d: dict[str, Any], extra: dict[str, Any]) -> Finding:
    """A finding as stored in ``study.json``. One stored before findings had keys is known by
    its number, and laid out again from its table and the study's ``extra``."""
    f = Finding.from_dict(d)
    if not f.key and 1 <= f.number <= len(FINDINGS):
        kind = FINDINGS[f.number - 1]
        f.key = kind.KEY
        kind.layout(f, extra)
    return f
