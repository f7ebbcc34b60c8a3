"""The dimer walls of the short-range finding: one row per element pair, and the sentence
that tells them.

A wall is a dimer curve's energy at its shortest distance (0.5 Å) above its minimum
(:func:`~mlipft_core.probes.repulsive_wall`); below
:data:`~mlipft_core.probes.WALL_THRESHOLD_EV` a pair has no repulsion to lose.
"""

from __future__ import annotations

from typing import Any

from ..probes import WALL_THRESHOLD_EV

#: The model heads the table compares, by their label in the analysis, and how its columns
#: name them.
COMPARED = (("foundation", "foundation"), ("naive", "naive"),
            ("multihead-replay [Default]", "multihead replay, target head"))
PAIR, REFERENCE = "pair", "reference wall (eV)"
NAIVE_CHANGE, REPLAY_CHANGE = "naive change vs foundation (%)", "replay change vs foundation (%)"
#: The verdict columns (``"kept"``, ``"lost"``, ``"no wall in reference"``) by model.
FOUNDATION, NAIVE, REPLAY = (shown for _, shown in COMPARED)
#: The columns of the dimer-wall table, in reading order.
WALL_COLUMNS = [PAIR, REFERENCE, "foundation wall (eV)", "naive wall (eV)", NAIVE_CHANGE,
                "multihead replay, target head wall (eV)", REPLAY_CHANGE, FOUNDATION, NAIVE,
                REPLAY]


def wall_column(shown: str) -> str:
    """The column of a model's wall height (eV)."""
    return f"{shown} wall (eV)"


def wall_table(walls: dict[str, dict[str, Any]], pairs: list[str]) -> list[dict[str, Any]]:
    """One row per element pair: the reference, foundation, naive and replay walls, and the
    change of naive's and replay's relative to the foundation model's (none where the
    foundation model has no wall)."""
    table = []
    for pair in pairs:
        w = walls.get(pair, {})
        row: dict[str, Any] = {PAIR: pair, REFERENCE: next((v.get("reference_wall_ev")
                                                           for v in w.values()), None)}
        for name, shown in COMPARED:
            if name in w:
                row[wall_column(shown)] = w[name]["wall_ev"]
                row[shown] = w[name]["verdict"]
        table.append(row)

    def change(row: dict, who: str) -> float | None:
        base, w = row.get(wall_column(FOUNDATION)), row.get(wall_column(who))
        if base is None or w is None or base < WALL_THRESHOLD_EV:
            return None
        return round(100.0 * (w - base) / base, 1)

    for row in table:
        row[NAIVE_CHANGE] = change(row, NAIVE)
        row[REPLAY_CHANGE] = change(row, REPLAY)
    return [{k: r.get(k) for k in WALL_COLUMNS if any(k in x for x in table)} for r in table]


def lost_walls(table: list[dict[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """The pairs naive fine-tuning lost, those of them multihead replay kept (and the
    foundation model had), and the pairs the foundation model itself has no wall for."""
    naive_lost = [r[PAIR] for r in table if r.get(NAIVE) == "lost"]
    replay_kept = {r[PAIR] for r in table if r.get(REPLAY) == "kept"}
    fm_lost = [r[PAIR] for r in table if r.get(FOUNDATION) != "kept"]
    both = [p for p in naive_lost if p in replay_kept and p not in fm_lost]
    return naive_lost, both, fm_lost


def measured(table: list[dict[str, Any]]) -> bool:
    """Whether both naive fine-tuning's and multihead replay's walls were measured."""
    return any(NAIVE in r for r in table) and any(REPLAY in r for r in table)


def most_changed(table: list[dict[str, Any]], pairs: list[str]) -> str:
    """The pair whose wall naive fine-tuning lowered most (else the first of ``pairs``)."""
    worn = sorted((r for r in table if r.get(NAIVE_CHANGE) is not None),
                  key=lambda r: r[NAIVE_CHANGE])
    return worn[0][PAIR] if worn and worn[0][PAIR] in pairs else pairs[0]


def changes_in_words(changes: list[tuple[str, float]]) -> str:
    """How one model changed the walls it is compared on, from ``(pair, percent)`` pairs
    (percent: its wall relative to the foundation model's), e.g. ``"raised every wall by
    3.7–22.5% (most: C-F)"`` or ``"lowered 1 of 3 walls, by 12.0% (C-F), and raised 2 by up
    to 5.0% (H-H)"``. A change that rounds to 0.0% counts as unchanged."""
    up = sorted(((p, c) for p, c in changes if round(c, 1) > 0), key=lambda x: -x[1])
    down = sorted(((p, c) for p, c in changes if round(c, 1) < 0), key=lambda x: x[1])
    n, same = len(changes), len(changes) - len(up) - len(down)
    if n == 1:
        pair, c = changes[0]
        return (f"raised the {pair} wall by {c:.1f}%" if up else
                f"lowered the {pair} wall by {-c:.1f}%" if down else
                f"left the {pair} wall unchanged")
    if not up and not down:
        return "left every wall unchanged"
    for verb, group, other in (("raised", up, down), ("lowered", down, up)):
        if group and not other and not same:  # every wall the same way
            lo, hi = f"{abs(group[-1][1]):.1f}", f"{abs(group[0][1]):.1f}"
            return (f"{verb} every wall by {lo}%" if lo == hi else
                    f"{verb} every wall by {lo}–{hi}% (most: {group[0][0]})")
    parts = []
    for verb, group in (("lowered", down), ("raised", up)):
        if group:
            pair, c = group[0]
            size = f"by {abs(c):.1f}% ({pair})" if len(group) == 1 else \
                f"by up to {abs(c):.1f}% ({pair})"
            parts.append(f"{verb} {len(group)} of {n} walls, {size}" if not parts else
                         f"{verb} {len(group)} {size}")
    if same:
        parts.append(f"left {same} unchanged")
    return ", and ".join(parts) if len(parts) == 2 else f"{parts[0]}, {parts[1]} and {parts[2]}"


def walls_in_words(table: list[dict[str, Any]]) -> str:
    """The short-range finding's sentence on the dimer walls, from the wall table it
    describes (:func:`wall_table`): the pairs naive fine-tuning lost (and which of them
    multihead replay kept), or else how each of the two changed the walls relative to the
    foundation model's (the table's change columns)."""
    naive_lost, both, _ = lost_walls(table)
    if naive_lost:
        return (f"Dimer walls: naive fine-tuning lost {', '.join(naive_lost)}"
                + (f", of which multihead replay kept {', '.join(both)}. " if both else ". "))
    said = []
    for who, col in (("naive fine-tuning", NAIVE_CHANGE), ("multihead replay", REPLAY_CHANGE)):
        changes = [(r[PAIR], float(r[col])) for r in table if r.get(col) is not None]
        if changes:
            said.append(f"{who} {changes_in_words(changes)}")
    if not said:
        return "Dimer walls: no pair lost its wall. "
    return ("Dimer walls: no pair lost its wall; relative to the foundation model's, "
            + "; ".join(said) + ". ")
