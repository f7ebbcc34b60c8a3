"""Finding: naive fine-tuning loses the short-range repulsion that multihead replay keeps.

Two measures: the short-range probe (held-out compressed structures: how much of the
reference's repulsive force each model keeps, and its *soft spots*, the structures where it
keeps less than half) and the dimer walls of the target's element pairs (:mod:`.walls`).

Rule: reproduced when naive fine-tuning adds at least :data:`SOFT_SPOT_MARGIN_PERCENT`
points of soft spots to the foundation model's (``numbers["naive_added"]``) while multihead
replay adds fewer (``numbers["replay_added"]``), or when naive fine-tuning loses a dimer
wall that multihead replay keeps (``numbers["walls_lost_and_kept"]``, the number of such
pairs). Without a probe, the walls alone decide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import walls as wl
from .base import Chart, Evidence, Finding, Table, bar_series, display_name

if TYPE_CHECKING:  # types only
    from ..study import Study

KEY = "repulsion"
TITLE = "Naive loses short-range repulsion that replay keeps"
CLAIM = ("Naive fine-tuning loses the short-range repulsion that multihead replay keeps "
         "(the study's random structure search: atoms collapse into 'holes').")
TEACHING = ("The target data never puts atoms much closer than a bond length, so nothing in "
            "it holds up the foundation model's short-range repulsion. Naive fine-tuning "
            "is free to soften it; replay keeps showing the network compressed "
            "pretraining structures. The probe takes compressed structures the foundation "
            "model never saw and asks how much of the reference's repulsive force each "
            "model keeps. A soft spot is a structure where a model keeps less than half "
            "of it: there, atoms are pushed apart too weakly and can collapse in MD or "
            "structure search. The dimer curves show the same on single pairs.")
#: Soft spots (structures keeping < half the reference's short-range force) that a model may
#: add to the foundation model's, in percent of the probe set, and still keep its repulsion.
SOFT_SPOT_MARGIN_PERCENT = 5.0
#: The probe table's columns.
MODEL, KEPT, SOFT, SOFT_SHARE, ADDED, FORCES = (
    "model", "reference force kept, median (%)", "soft spots (structures)",
    "soft spots (% of structures)", "soft spots added vs foundation (points)",
    "force RMSE (eV/Å)")
WALLS_CAPTION = ("Walls: energy at 0.5 Å above the curve's minimum, for every pair of the "
                 "target's elements.")


def state(ev: Evidence) -> Finding:
    """The finding from the short-range probe and the dimer walls; records the wall table
    in the study's ``extra["dimer_walls"]``."""
    study = ev.study
    table = wl.wall_table(ev.walls, ev.pairs)
    study.extra["dimer_walls"] = table
    _, both, fm_lost = wl.lost_walls(table)
    runs = ev.run_ids("naive", "multihead-replay")
    walls_text = wl.walls_in_words(table)
    if fm_lost:
        walls_text += (f"The foundation model itself has no wall for {', '.join(fm_lost)}: "
                       "nothing to lose there. ")
    if not ev.has_reference:
        walls_text += ("No reference dimer curves for this foundation model: walls are judged "
                       "against the threshold alone. ")
    by = {r["model"]: r for r in ev.short_range or []}
    fm, naive = by.get("foundation"), by.get("naive")
    replay = by.get("multihead-replay [Default]") or next(
        (r for k, r in by.items() if k.startswith("multihead-replay") and "pt_head" not in k),
        None)
    numbers: dict[str, Any] = {"walls_lost_and_kept": len(both)}
    if not (fm and naive and replay) and not wl.measured(table):
        return _finding(None, ev.probe_problem + "Could not be measured: naive fine-tuning and "
                        "multihead replay must both be among the study's strategies and "
                        "finish.", table, runs, numbers, study.extra)
    if not (fm and naive and replay):
        ok = bool(both)
        summary = (ev.probe_problem + walls_text
                   + ("" if ev.probe_problem else "No held-out short-range structures were "
                      "given, so only the dimer walls were probed. ")
                   + ("Reproduced." if ok else "Not reproduced here: no wall was lost."))
        return _finding(ok, summary, table, runs, numbers, study.extra)
    naive_up = naive["soft_share_percent"] - fm["soft_share_percent"]
    replay_up = replay["soft_share_percent"] - fm["soft_share_percent"]
    naive_loses = naive_up >= SOFT_SPOT_MARGIN_PERCENT
    ok = (naive_loses and replay_up < SOFT_SPOT_MARGIN_PERCENT) or bool(both)
    numbers.update(foundation_soft=fm["soft_share_percent"],
                   naive_soft=naive["soft_share_percent"],
                   replay_soft=replay["soft_share_percent"], naive_added=naive_up,
                   replay_added=replay_up)
    verdict = ("Reproduced: naive fine-tuning softened the short-range repulsion, replay kept "
               "it." if ok else
               "Not reproduced here: " + ("naive fine-tuning kept the short-range repulsion "
                                           "as well." if not naive_loses else
                                           "multihead replay softened it too."))
    summary = _probe_words(fm, naive, replay) + walls_text + verdict
    others = [rid for role, rid in study.finals.items()
              if role in study.inputs.strategies and role not in ("naive", "multihead-replay")]
    return _finding(ok, summary, _probe_table(ev.short_range or [], fm), runs + others,
                    numbers, study.extra)


def from_measurements(study: Study, walls: dict[str, dict[str, Any]], pairs: list[str],
                      has_reference: bool, short_range: list[dict[str, Any]] | None = None,
                      probe_problem: str = "") -> Finding:
    """The finding of ``study`` from these measurements alone (see :class:`Evidence`)."""
    return state(Evidence(study, [], walls, pairs, has_reference, short_range, probe_problem))


def _finding(ok: bool | None, summary: str, table: list[dict[str, Any]], runs: list[str],
             numbers: dict[str, Any], extra: dict[str, Any]) -> Finding:
    return layout(Finding(0, TITLE, CLAIM, ok, summary, TEACHING, table, runs, key=KEY,
                          numbers=numbers), extra)


def _probe_table(short_range: list[dict[str, Any]], fm: dict[str, Any]
                 ) -> list[dict[str, Any]]:
    """One row per probed model head."""
    return [{MODEL: display_name(r["model"]), KEPT: round(100 * r["median_force_kept"], 1),
             SOFT: r["soft_spots"], SOFT_SHARE: r["soft_share_percent"],
             ADDED: round(r["soft_share_percent"] - fm["soft_share_percent"], 1),
             FORCES: r["forces_rmse_ev_per_a"]} for r in short_range]


def _probe_words(fm: dict[str, Any], naive: dict[str, Any], replay: dict[str, Any]) -> str:
    """The probe's sentence: the structures, and what each of the three models keeps."""
    def share(r: dict) -> str:
        return (f"keeps a median {100 * r['median_force_kept']:.0f}% of the reference's "
                f"short-range force, with {r['soft_spots']} soft spots "
                f"({r['soft_share_percent']:.0f}%)")

    left_out = [f"{n} with elements not every model covers" if k == "n_left_out" else
                f"{n} with reference forces too small to probe"
                for k in ("n_left_out", "n_weak_forces") if (n := fm.get(k) or 0)]
    return (f"On {fm['n_structures']} compressed structures held out from pretraining"
            + (f" (leaving out {' and '.join(left_out)})" if left_out else "")
            + f", the foundation model {share(fm)}. After naive fine-tuning the model "
              f"{share(naive)}; multihead replay (target head) {share(replay)}. ")


def layout(f: Finding, extra: dict[str, Any]) -> Finding:
    """The soft spots as bars (when the probe ran), the dimer curves of every pair
    (``extra["dimers"]``), first the pair naive fine-tuning changed most, and the wall
    table under them when the finding's own table is the probe's."""
    probed = SOFT_SHARE in (f.columns or [])
    walls = extra.get("dimer_walls") or f.table
    f.charts = [Chart("soft_spots", "bar", "Soft spots on held-out compressed structures",
                      "structures where the model keeps less than half the reference's "
                      "repulsive force (%)", bar_series(f.table, MODEL, SOFT_SHARE))
                ] if probed else []
    dimers = extra.get("dimers") or {}
    if dimers:
        series = {pair: {display_name(k, plot=True): list(v) for k, v in lines.items()}
                  for pair, lines in dimers.items()}
        f.charts.append(Chart("dimer", "dimers", "{panel} dimer", series=series,
                              pick="Element pair", first=wl.most_changed(walls, list(dimers)),
                              below_table=True))
    f.tables = [Table("walls", WALLS_CAPTION, walls,
                      [c for c in wl.WALL_COLUMNS if any(c in r for r in walls)])
                ] if dimers and probed and extra.get("dimer_walls") else []
    return f
