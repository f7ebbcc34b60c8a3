"""Finding: naive fine-tuning loses the short-range repulsion that multihead replay keeps.

Three measures, each on the same inputs for every model:

- the study's own test, a random structure search
  (:func:`~mlipft_core.probes.random_structure_search`): random compact clusters of the
  target's elements relaxed with each model, counting those that *collapse* (two atoms
  closer than :data:`~mlipft_core.probes.SEARCH_COLLAPSE_FACTOR` of their covalent-radii
  sum at any step);
- the short-range probe: held-out compressed structures, how much of the reference's
  repulsive force each model keeps, and its *soft spots*, the structures where it keeps less
  than half;
- the dimer walls of the target's element pairs (:mod:`.walls`).

Rule, fixed before any study was analysed with it; ``numbers["level"]`` says what happened to
naive fine-tuning against the foundation model:

- ``"lost"``: naive fine-tuning collapses in at least :data:`COLLAPSE_MARGIN_PERCENT` points
  of the search's structures more than the foundation model (``numbers["naive_collapse_added"]``);
- ``"softened"``: not lost, but naive fine-tuning adds at least
  :data:`SOFT_SPOT_MARGIN_PERCENT` points of soft spots to the foundation model's
  (``numbers["naive_added"]``), or loses a dimer wall the foundation model has
  (``numbers["walls_lost"]``);
- ``"kept"``: neither.

Reproduced (the study's result) only when the level is ``"lost"`` and multihead replay adds
fewer than :data:`COLLAPSE_MARGIN_PERCENT` points of collapses
(``numbers["replay_collapse_added"]``). A softening is reported as such, not as the study's
result. Without a search (no finished naive and replay runs), the level comes from the probe
and the walls, and the finding is not reproduced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..probes import SEARCH_COLLAPSE_FACTOR, SEARCH_FMAX, SEARCH_STEPS
from . import walls as wl
from .base import Chart, Evidence, Finding, Table, bar_series, display_name, fmt

if TYPE_CHECKING:  # types only
    from ..study import Study

KEY = "repulsion"
TITLE = "Naive loses short-range repulsion that replay keeps"
CLAIM = ("Naive fine-tuning loses the short-range repulsion that multihead replay keeps "
         "(the study's random structure search: atoms collapse into 'holes').")
TEACHING = ("The target data never puts atoms much closer than a bond length, so nothing in "
            "it holds up the foundation model's short-range repulsion. Naive fine-tuning "
            "is free to soften it; replay keeps showing the network compressed "
            "pretraining structures. The study's test relaxes random compact structures and "
            "counts those in which atoms fall together (a collapse into a short-range "
            "'hole'). The softer probe takes compressed structures the foundation model "
            "never saw and asks how much of the reference's repulsive force each model "
            "keeps; a soft spot is a structure where a model keeps less than half of it. A "
            "model can soften without collapsing: its forces still push the atoms apart, "
            "only more weakly. The dimer curves show the same on single pairs.")
#: Soft spots (structures keeping < half the reference's short-range force) that a model may
#: add to the foundation model's, in percent of the probe set, and still keep its repulsion.
SOFT_SPOT_MARGIN_PERCENT = 5.0
#: Collapses in the random structure search that a model may add to the foundation model's,
#: in percent of the searched structures (2 of 40), and still not have lost its repulsion.
COLLAPSE_MARGIN_PERCENT = 5.0
#: The levels of :data:`numbers["level"]`, and how a page names them.
LEVELS = {"lost": "Lost: atoms collapse", "softened": "Softened, no collapse",
          "kept": "Kept"}
#: The probe table's columns.
MODEL, KEPT, SOFT, SOFT_SHARE, ADDED, FORCES = (
    "model", "reference force kept, median (%)", "soft spots (structures)",
    "soft spots (% of structures)", "soft spots added vs foundation (points)",
    "force RMSE (eV/Å)")
#: The search table's columns.
SEARCHED, COLLAPSED, COLLAPSED_SHARE, CLOSEST, FINAL = (
    "structures searched", "collapsed", "collapsed (% of structures)",
    "closest approach, median (× covalent-radii sum)",
    "closest pair after relaxing, median (× covalent-radii sum)")
SEARCH_COLUMNS = [MODEL, SEARCHED, COLLAPSED, COLLAPSED_SHARE, CLOSEST, FINAL]
SEARCH_CAPTION = ("Random structure search: the same random compact clusters of the "
                  "target's elements relaxed with every model (FIRE to "
                  f"{SEARCH_FMAX:g} eV/Å, at most {SEARCH_STEPS} steps). Collapsed: two atoms "
                  f"closer than {SEARCH_COLLAPSE_FACTOR:g} of their covalent-radii sum at "
                  "any step.")
WALLS_CAPTION = ("Walls: energy at 0.5 Å above the curve's minimum, for every pair of the "
                 "target's elements.")


def _replay_of(by: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Multihead replay's target-head row of a per-label mapping."""
    return by.get("multihead-replay [Default]") or next(
        (r for k, r in by.items() if k.startswith("multihead-replay") and "pt_head" not in k),
        None)


def state(ev: Evidence) -> Finding:
    """The finding from the random structure search, the short-range probe and the dimer
    walls; records the wall table in the study's ``extra["dimer_walls"]`` and the search's
    table in ``extra["search"]``."""
    study = ev.study
    table = wl.wall_table(ev.walls, ev.pairs)
    study.extra["dimer_walls"] = table
    naive_lost_walls, both, fm_lost = wl.lost_walls(table)
    walls_lost = [p for p in naive_lost_walls if p not in fm_lost]
    runs = ev.run_ids("naive", "multihead-replay")
    walls_text = wl.walls_in_words(table)
    if fm_lost:
        walls_text += (f"The foundation model itself has no wall for {', '.join(fm_lost)}: "
                       "nothing to lose there. ")
    if not ev.has_reference:
        walls_text += ("No reference dimer curves for this foundation model: walls are judged "
                       "against the threshold alone. ")
    by = {r["model"]: r for r in ev.short_range or []}
    fm, naive, replay = by.get("foundation"), by.get("naive"), _replay_of(by)
    searched = {r["model"]: r for r in ev.search or []}
    s_fm, s_naive, s_replay = (searched.get("foundation"), searched.get("naive"),
                               _replay_of(searched))
    collapses = {label: {"structures": r["structures"], "collapsed": r["collapsed"],
                         "median_closest": r.get("median_closest")}
                 for label, r in searched.items()}
    study.extra["search"] = _search_table(ev.search or [])
    numbers: dict[str, Any] = {"walls_lost_and_kept": len(both), "walls_lost": len(walls_lost)}
    probed = bool(fm and naive and replay)
    search_ran = bool(s_fm and s_naive and s_replay)
    if not probed and not search_ran and not wl.measured(table):
        why = ("multihead replay was not among the study's strategies: it needs a replay "
               "file (--replay, or mlipft replay fetch MODEL for an official model)"
               if "multihead-replay" not in study.inputs.strategies else
               "naive fine-tuning and multihead replay must both finish")
        return _finding(None, ev.probe_problem + ev.search_problem + "Could not be measured: "
                        f"{why}.", table, runs, numbers, study.extra, "", collapses)
    text = ev.probe_problem + ev.search_problem
    if search_ran:
        naive_c = s_naive["collapsed_percent"] - s_fm["collapsed_percent"]
        replay_c = s_replay["collapsed_percent"] - s_fm["collapsed_percent"]
        numbers.update(foundation_collapsed=s_fm["collapsed"], naive_collapsed=s_naive["collapsed"],
                       replay_collapsed=s_replay["collapsed"], searched=s_fm["structures"],
                       naive_collapse_added=round(naive_c, 1),
                       replay_collapse_added=round(replay_c, 1))
        text += _search_words(s_fm, s_naive, s_replay, ev.search_elements)
    if probed:
        naive_up = naive["soft_share_percent"] - fm["soft_share_percent"]
        replay_up = replay["soft_share_percent"] - fm["soft_share_percent"]
        numbers.update(foundation_soft=fm["soft_share_percent"],
                       naive_soft=naive["soft_share_percent"],
                       replay_soft=replay["soft_share_percent"],
                       naive_added=round(naive_up, 1), replay_added=round(replay_up, 1))
        text += _probe_words(fm, naive, replay)
    elif not ev.probe_problem:
        text += "No held-out short-range structures were given, so no force probe ran. "
    text += walls_text
    lost = search_ran and numbers["naive_collapse_added"] >= COLLAPSE_MARGIN_PERCENT
    softened = (probed and numbers["naive_added"] >= SOFT_SPOT_MARGIN_PERCENT) or bool(walls_lost)
    level = "lost" if lost else "softened" if softened else "kept"
    numbers["level"] = level
    replay_kept = search_ran and numbers["replay_collapse_added"] < COLLAPSE_MARGIN_PERCENT
    ok = lost and replay_kept
    summary = text + _verdict(level, ok, numbers, search_ran, probed, walls_lost)
    others = [rid for role, rid in study.finals.items()
              if role in study.inputs.strategies and role not in ("naive", "multihead-replay")]
    main = _probe_table(ev.short_range or [], fm) if probed else (
        study.extra["search"] if search_ran else table)
    return _finding(ok, summary, main, runs + (others if (probed or search_ran) else []),
                    numbers, study.extra, level, collapses)


def _verdict(level: str, ok: bool, n: dict[str, Any], search_ran: bool, probed: bool,
             walls_lost: list[str]) -> str:
    """The last sentence: the level in words, from the numbers it rests on."""
    if level == "lost":
        return ("Reproduced: naive fine-tuning lost the short-range repulsion (atoms collapse) "
                "and multihead replay kept it." if ok else
                "Not reproduced here: naive fine-tuning lost the short-range repulsion, but "
                "multihead replay collapsed as well.")
    if not search_ran:
        why = ("no random structure search ran (naive fine-tuning and multihead replay must "
               "both finish)")
    else:
        why = (f"naive fine-tuning's collapses exceeded the foundation model's by "
               f"{n['naive_collapse_added']:.1f} points of the searched structures, under the "
               f"{COLLAPSE_MARGIN_PERCENT:g} points that count as lost")
    if level == "softened":
        how = []
        if probed and n["naive_added"] >= SOFT_SPOT_MARGIN_PERCENT:
            how.append(f"naive fine-tuning added {n['naive_added']:.1f} points of soft spots "
                       f"(multihead replay {n['replay_added']:+.1f})")
        if walls_lost:
            how.append(f"naive fine-tuning lost the dimer wall of {', '.join(walls_lost)}")
        return (f"Softened, not lost: {' and '.join(how)}, but {why}. The study's collapse is "
                "not seen here; the forces still push atoms apart, more weakly.")
    return (f"Kept: {why}, and it added no soft spots or lost walls beyond the margins. Not "
            "reproduced here.")


def from_measurements(study: Study, walls: dict[str, dict[str, Any]], pairs: list[str],
                      has_reference: bool, short_range: list[dict[str, Any]] | None = None,
                      probe_problem: str = "", search: list[dict[str, Any]] | None = None,
                      search_elements: list[str] | None = None) -> Finding:
    """The finding of ``study`` from these measurements alone (see :class:`Evidence`)."""
    return state(Evidence(study, [], walls, pairs, has_reference, short_range, probe_problem,
                          search=search, search_elements=search_elements or []))


def _finding(ok: bool | None, summary: str, table: list[dict[str, Any]], runs: list[str],
             numbers: dict[str, Any], extra: dict[str, Any], level: str,
             collapses: dict[str, dict[str, Any]]) -> Finding:
    return layout(Finding(0, TITLE, CLAIM, ok, summary, TEACHING, table, runs, key=KEY,
                          numbers=numbers, level=level, collapses=collapses), extra)


def _search_table(search: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per searched model head."""
    return [{MODEL: display_name(r["model"]), SEARCHED: r["structures"],
             COLLAPSED: r["collapsed"], COLLAPSED_SHARE: r["collapsed_percent"],
             CLOSEST: r.get("median_closest"), FINAL: r.get("median_final")} for r in search]


def _search_words(fm: dict[str, Any], naive: dict[str, Any], replay: dict[str, Any],
                  elements: list[str]) -> str:
    """The search's sentence: the structures and what collapsed under each of three models."""
    def of(r: dict) -> str:
        return f"{r['collapsed']} of {r['structures']}"

    return (f"Random structure search (the study's test): {fm['structures']} random compact "
            f"clusters of {', '.join(elements) or 'the target elements'} relaxed with each "
            f"model; a collapse is a pair closer than {SEARCH_COLLAPSE_FACTOR:g} of its "
            f"covalent-radii sum at any step. Collapsed: foundation model {of(fm)}, naive "
            f"fine-tuning {of(naive)}, multihead replay (target head) {of(replay)}; closest "
            f"approach (median) {fmt(fm.get('median_closest'), digits=2)}, "
            f"{fmt(naive.get('median_closest'), digits=2)} and "
            f"{fmt(replay.get('median_closest'), digits=2)} of the covalent-radii sum. ")


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
    search = extra.get("search") or []
    f.tables = ([Table("search", SEARCH_CAPTION, search, SEARCH_COLUMNS,
                       {CLOSEST: 2, FINAL: 2})] if search and f.table is not search else [])
    f.tables += [Table("walls", WALLS_CAPTION, walls,
                       [c for c in wl.WALL_COLUMNS if any(c in r for r in walls)])
                 ] if dimers and probed and extra.get("dimer_walls") else []
    return f


def budget_note(table: dict[str, Any]) -> str:
    """What the demo world shows at each training budget (``bench/collapse_budget.py``'s
    table, bundled as ``sample_data/collapse_budgets.json``), in words computed from it."""
    rows = table.get("rows") or []
    fm = next((r for r in rows if r["strategy"] == "foundation"), None)
    naive = [r for r in rows if r["strategy"] == "naive"]
    if fm is None or not naive:
        return ""

    def of(preset: str) -> list[dict[str, Any]]:
        return sorted((r for r in naive if r["preset"] == preset), key=lambda r: r["epochs"])

    def epochs(rs: list[dict[str, Any]]) -> str:
        return ", ".join(str(r["epochs"]) for r in rs)

    short, study = of("short budget"), of("study protocol")
    replay = [r for r in rows if r["strategy"] == "multihead-replay"]
    tried = [f"naive fine-tuning for {epochs(short)} epochs with the short-budget settings"
             ] if short else []
    if study:
        tried.append(f"{epochs(study)} epochs with the study protocol")
    if replay:
        tried.append(f"multihead replay for {epochs(replay)} epochs")
    collapsed = [r for r in rows if r["collapsed"]]
    n = fm["structures"]
    text = f"On this demo world, with {'; '.join(tried)}: "
    text += ("no model collapsed in the random structure search "
             f"(0 of {n} structures each). " if not collapsed else
             "collapses in the random structure search: " + ", ".join(
                 f"{r['model']} {r['collapsed']} of {r['structures']}" for r in collapsed) + ". ")

    def soft(rs: list[dict[str, Any]]) -> str:
        return ", ".join(f"{r['soft_share_percent']:.0f}%" for r in rs)

    if short:
        text += (f"With the short-budget settings naive fine-tuning had {soft(short)} soft "
                 f"spots after {epochs(short)} epochs (the foundation model "
                 f"{fm['soft_share_percent']:.0f}%), keeping a median "
                 + ", ".join(f"{r['median_force_kept_percent']:.0f}%" for r in short)
                 + " of the reference's short-range force. ")
    if study:
        text += (f"With the study protocol it had {soft(study)} soft spots after "
                 f"{epochs(study)} epochs. ")
    if short and study:
        a, b = short[-1], study[-1]
        if a.get("valid_forces_rmse_mev_per_a") and b.get("valid_forces_rmse_mev_per_a"):
            text += (f"Validation force RMSE at the end: {a['valid_forces_rmse_mev_per_a']:.1f} "
                     f"meV/Å after {a['epochs']} epochs (short budget), "
                     f"{b['valid_forces_rmse_mev_per_a']:.1f} meV/Å after {b['epochs']} "
                     "(study protocol). ")
    if not collapsed:
        softened = [r for r in short
                    if r["soft_share_percent"] - fm["soft_share_percent"]
                    >= SOFT_SPOT_MARGIN_PERCENT]
        kept = study and all(r["soft_share_percent"] - fm["soft_share_percent"]
                             < SOFT_SPOT_MARGIN_PERCENT for r in study)
        text += "No budget tried reproduces the study's collapse here"
        text += (": with the short-budget settings naive fine-tuning softens the short-range "
                 "repulsion without collapsing" if softened else "")
        text += (", and with the study protocol it keeps it." if kept else ".")
    return text.strip()
