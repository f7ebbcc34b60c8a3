"""Finding: the E0 choice matters more than the strategy.

Naive fine-tuning with anchored E0s against naive fine-tuning with ``average`` E0s, on the
target and on the pretraining structures (outside the training data's composition family).

Rule: reproduced when ``numbers["pretrain_ratio"]`` (the ``average`` run's pretraining
energy RMSE over the anchored run's) is at least :data:`E0_FACTOR`.
"""

from __future__ import annotations

from typing import Any

from .base import Chart, Evidence, Finding, fmt

KEY = "e0"
TITLE = "E0 choice matters"
CLAIM = ("Correct E0s matter more than the strategy: poor E0s can look fine on held-out "
         "errors but distort energies outside the training data's composition family.")
TEACHING = ("'average' E0s fit the total energies of the training compositions and nothing "
            "else: where the compositions are linearly dependent, the split between "
            "elements is arbitrary. The target test set shares those compositions, so its "
            "errors barely notice. The pretraining structures do not: their interaction "
            "energies, the part the network learns, come out shifted by the wrong E0s. "
            "Anchored E0s take what the data cannot determine from the isolated atoms.")
#: E0s "matter" when the worse choice's error outside the training family is at least this
#: factor above the anchored one's.
E0_FACTOR = 2.0
#: The table's columns.
ELEMENT, ANCHORED, AVERAGE, ISOLATED = ("element", "anchored E0 (eV)", "average E0 (eV)",
                                        "isolated atom (eV)")


def state(ev: Evidence) -> Finding:
    """The finding from the two naive runs (``naive``, ``naive-average-e0``); records their
    errors in the study's ``extra["e0_runs"]``."""
    study = ev.study
    a, v = ev.target_row("naive"), ev.target_row("naive-average-e0")
    anchored, average = study.e0.get("anchored", {}), study.e0.get("average", {})
    iso = study.e0.get("isolated", {})
    table = [{ELEMENT: e, ANCHORED: anchored.get(e), AVERAGE: average.get(e),
              ISOLATED: iso.get(e)} for e in anchored]
    runs = ev.run_ids("naive", "naive-average-e0")
    if a is None or v is None or a.pretrain_energy_rmse_mev_per_atom is None or \
            v.pretrain_energy_rmse_mev_per_atom is None:
        return layout(Finding(0, TITLE, CLAIM, None,
                              "Could not be measured: the naive runs with both E0 choices "
                              "and a pretraining test set are needed.", TEACHING, table, runs,
                              key=KEY), study.extra)
    ratio = v.pretrain_energy_rmse_mev_per_atom / max(a.pretrain_energy_rmse_mev_per_atom, 1e-9)
    t_ratio = (v.target_energy_rmse_mev_per_atom or 0.0) / max(
        a.target_energy_rmse_mev_per_atom or 0.0, 1e-9)
    ok = ratio >= E0_FACTOR
    summary = (f"Naive fine-tuning with anchored E0s: target energy RMSE "
               f"{fmt(a.target_energy_rmse_mev_per_atom, 'meV/atom')}, pretraining interaction-"
               f"energy RMSE {fmt(a.pretrain_energy_rmse_mev_per_atom, 'meV/atom')}. With "
               f"'average' E0s: {fmt(v.target_energy_rmse_mev_per_atom, 'meV/atom')} on the "
               f"target, {fmt(v.pretrain_energy_rmse_mev_per_atom, 'meV/atom')} on the "
               f"pretraining structures ({ratio:.1f}× the anchored run's). "
               + (("Reproduced: the target errors look alike, the energies outside the "
                   "family do not." if t_ratio < 1.5 else
                   f"Reproduced: the wrong E0s cost {t_ratio:.1f}× on the target and more "
                   "outside the family.") if ok else
                  f"Not reproduced here: the difference outside the family is below "
                  f"{E0_FACTOR:g}×."))
    runs_of = {name: {"target_e": r.target_energy_rmse_mev_per_atom,
                      "target_f": r.target_forces_rmse_mev_per_a,
                      "pretrain_e": r.pretrain_energy_rmse_mev_per_atom}
               for name, r in (("anchored", a), ("average", v))}
    study.extra["e0_runs"] = runs_of
    numbers = {f"{name}_{k}": x for name, d in runs_of.items() for k, x in d.items()}
    numbers.update(pretrain_ratio=ratio, target_ratio=t_ratio)
    return layout(Finding(0, TITLE, CLAIM, ok, summary, TEACHING, table, runs, key=KEY,
                          numbers=numbers), study.extra)


def layout(f: Finding, extra: dict[str, Any]) -> Finding:
    """The plot of the two runs' energy errors, from ``extra["e0_runs"]``."""
    e = extra.get("e0_runs")
    f.charts = [] if not e else [Chart(
        "e0", "grouped_bar", "Energy RMSE of naive fine-tuning by E0 choice (log scale)",
        "energy RMSE (meV/atom)",
        {"anchored E0s": {"target": e["anchored"]["target_e"],
                          "pretraining (outside the family)": e["anchored"]["pretrain_e"]},
         "'average' E0s": {"target": e["average"]["target_e"],
                           "pretraining (outside the family)": e["average"]["pretrain_e"]}},
        log=True)]
    return f
