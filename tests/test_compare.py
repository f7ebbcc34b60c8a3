"""Comparison engine: prediction cache, per-head evaluation, forgetting ratio, dimer curves."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from ase import Atoms
from ase.data import covalent_radii
from ase.io import read, write

from conftest import assert_done, mlipft_cmd
from mlipft_core import analysis, jobs, probes
from mlipft_core import compare as cmp
from mlipft_core.analysis import ModelHead, repulsion
from mlipft_core.compare import ComparisonRow, compare, resolve_models
from mlipft_core.evaluate import evaluate_cached, evaluate_model
from mlipft_core.jobs.records import RunRecord, RunStore
from mlipft_core.probes import (
    WALL_THRESHOLD_EV,
    ProbeError,
    collapse_probe,
    dimer_curve,
    parse_pair,
    reference_curve,
    reference_dimer_curves,
    repulsive_wall,
)
from mlipft_core.strategies import RunSpec
from mlipft_core.workspace import Workspace


@pytest.fixture
def small(tmp_path, demo):
    write(tmp_path / "target.xyz", read(demo["sn2_test"], ":12"))
    write(tmp_path / "pretrain.xyz", read(demo["pretrain_test"], ":25"))
    write(tmp_path / "train.xyz", read(demo["sn2_train"], ":15"))
    write(tmp_path / "replay.xyz", read(demo["replay_pool"], ":20"))
    return tmp_path


def test_cache_hit_and_invalidation(small, weak_model, tmp_path):
    model = tmp_path / "m.model"
    shutil.copy(weak_model, model)
    first = evaluate_cached(model, small / "target.xyz", trusted=True)
    cache_files = list((Workspace().cache / "predictions").glob("*.npz"))
    assert len(cache_files) == 1
    again = evaluate_cached(model, small / "target.xyz", trusted=True)
    assert np.array_equal(first.pred_energy, again.pred_energy)
    assert len(list((Workspace().cache / "predictions").glob("*.npz"))) == 1
    direct = evaluate_model(model, small / "target.xyz", trusted=True)
    assert np.allclose(first.pred_energy, direct.pred_energy)
    # a changed data file gets new predictions, never the stale ones
    frames = read(small / "target.xyz", ":")
    frames[0].positions[0, 0] += 0.3
    write(small / "target.xyz", frames)
    changed = evaluate_cached(model, small / "target.xyz", trusted=True)
    assert changed.pred_energy[0] != pytest.approx(first.pred_energy[0], abs=1e-6)
    assert len(list((Workspace().cache / "predictions").glob("*.npz"))) == 2
    # and so does a changed model file
    shutil.copy(weak_model, model)
    import torch

    net = torch.load(model, weights_only=False)
    with torch.no_grad():
        net.atomic_energies_fn.atomic_energies += 1.0
    torch.save(net, model)
    shifted = evaluate_cached(model, small / "target.xyz", trusted=True)
    assert shifted.pred_energy[1] == pytest.approx(changed.pred_energy[1] + 6.0, abs=1e-3)


def test_forgetting_ratio_and_the_heads_it_is_read_from(monkeypatch):
    """The forgetting ratio is the pretraining force error over the foundation's (unknown
    when either is); a model answers the target with its Default head (else its first head
    that is not pt_head) and the pretraining data with its pt_head (else the target head)."""
    assert cmp.forgetting_ratio(30.0, 20.0) == pytest.approx(1.5)
    assert cmp.forgetting_ratio(20.0, 20.0) == 1.0
    assert cmp.forgetting_ratio(None, 20.0) is None
    assert cmp.forgetting_ratio(30.0, None) is None
    assert cmp.forgetting_ratio(30.0, 0.0) is None  # no division by a zero error
    assert cmp.target_head(["pt_head", "Default"]) == "Default"
    assert cmp.target_head(["pt_head", "water"]) == "water"
    assert cmp.target_head(["pt_head"]) == "pt_head"
    assert cmp.pretraining_head(["Default", "pt_head"]) == "pt_head"
    assert cmp.pretraining_head(["Default"]) == "Default"
    assert cmp.pretraining_head(["pt_head", "water"]) == "pt_head"

    def row(name, ratio, foundation=False):
        return ComparisonRow(name, "Default", None, None, None, None, None, ratio,
                             is_foundation=foundation)

    rows = [row("fm", 1.0, foundation=True), row("a", 2.0), row("b", None), row("c", 1.2),
            row("d", 1.2)]
    assert cmp.least_forgetting(rows).name == "c"  # not the foundation; first on a tie
    assert cmp.least_forgetting([row("fm", 1.0, foundation=True), row("b", None)]) is None

    # model_figures evaluates the target head on the target and the pretraining head on the
    # pretraining set, against the foundation's error there
    errors = {("multi.model", "target.xyz", "Default"): 10.0,
              ("multi.model", "pre.xyz", "pt_head"): 45.0,
              ("fm.model", "pre.xyz", None): 30.0,
              ("single.model", "target.xyz", "Default"): 8.0,
              ("single.model", "pre.xyz", "Default"): 60.0}
    calls = []

    def fake_eval(model, data, head=None, **kw):
        calls.append((str(model), str(data), head))
        f = errors[(str(model), str(data), head)]
        return SimpleNamespace(metrics=SimpleNamespace(forces_rmse_mev_per_a=f,
                                                       energy_rmse_mev_per_atom=f / 10))

    heads = {"multi.model": ["Default", "pt_head"], "single.model": ["Default"]}
    monkeypatch.setattr(cmp, "file_heads", lambda path: heads[str(path)])
    monkeypatch.setattr(cmp, "evaluate_cached", fake_eval)
    assert cmp.model_figures("multi.model", "fm.model", "target.xyz", "pre.xyz") == {
        "head": "Default", "target_forces_rmse_mev_per_a": 10.0,
        "target_energy_rmse_mev_per_atom": 1.0, "forgetting_ratio": pytest.approx(1.5)}
    assert calls == [("multi.model", "target.xyz", "Default"),
                     ("multi.model", "pre.xyz", "pt_head"), ("fm.model", "pre.xyz", None)]
    assert cmp.model_figures("single.model", "fm.model", "target.xyz", "pre.xyz")[
        "forgetting_ratio"] == pytest.approx(2.0)
    # without a foundation model there is no ratio
    assert "forgetting_ratio" not in cmp.model_figures("single.model", None, "target.xyz",
                                                       "pre.xyz")


@pytest.mark.slow
def test_forgetting_per_head_and_cli(small, weak_model, demo):
    def s(strategy):
        return RunSpec(strategy, weak_model, str(small / "train.xyz"), e0s="estimated",
                       replay_file=str(small / "replay.xyz"),
                       settings={"max_num_epochs": 1, "num_samples_pt": 15},
                       isolated_file=demo["sn2_isolated_atoms"])

    recs = jobs.submit_sweep([s("naive"), s("multihead-replay")])
    for r in recs:
        assert_done(jobs.wait(r.id, timeout=600))
    refs = resolve_models([r.id for r in recs])
    rows, results = compare(refs, small / "target.xyz", small / "pretrain.xyz")
    by = {(r.name, r.head): r for r in rows}
    assert by[("foundation", "Default")].forgetting_ratio == pytest.approx(1.0)
    assert by[("foundation", "Default")].is_foundation
    assert ("multihead-replay", "pt_head") in by and ("multihead-replay", "Default") in by
    # the two heads of one model answer differently
    assert not np.allclose(results[("multihead-replay", "pt_head")].pred_energy,
                           results[("multihead-replay", "Default")].pred_energy)
    naive = by[("naive", "Default")]
    assert naive.forgetting_ratio == pytest.approx(
        naive.pretrain_forces_rmse_mev_per_a
        / by[("foundation", "Default")].pretrain_forces_rmse_mev_per_a)
    out = subprocess.run(mlipft_cmd() + ["compare", *[r.id for r in recs], "--target",
                                         str(small / "target.xyz"), "--pretrain",
                                         str(small / "pretrain.xyz"), "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    for row in d:
        for key in ("name", "target_energy_rmse_mev_per_atom", "target_forces_rmse_mev_per_a",
                    "pretrain_forces_rmse_mev_per_a", "forgetting_ratio",
                    "target_energy_rmse_mev_per_atom_raw", "pretrain_energy_rmse_mev_per_atom_raw"):
            assert key in row
    assert [r["forgetting_ratio"] for r in d if r["name"] == "foundation"] == [pytest.approx(1.0)]
    # energies across levels of theory: the raw error is the GFN1/DFT E0 offset (keV/atom),
    # the re-referenced one compares interaction energies
    jn = next(r for r in d if r["name"] == "naive")
    assert jn["pretrain_energy_rmse_mev_per_atom_raw"] > 1e5
    assert jn["pretrain_energy_rmse_mev_per_atom"] < 1000
    assert jn["level"] == "target"
    jf = next(r for r in d if r["name"] == "foundation")
    assert jf["target_energy_rmse_mev_per_atom_raw"] > 1e5
    assert jf["target_energy_rmse_mev_per_atom"] < 1000
    assert "(the fine-tunes' E0s)" in jf["target_energy_reference"]  # one set, shared
    # heads at the data's own level are measured as they are
    assert by[("foundation", "Default")].pretrain_energy_rmse_mev_per_atom == pytest.approx(
        by[("foundation", "Default")].pretrain_energy_rmse_mev_per_atom_raw)
    assert by[("multihead-replay", "pt_head")].level == "pretraining"
    assert naive.target_energy_rmse_mev_per_atom == pytest.approx(
        naive.target_energy_rmse_mev_per_atom_raw)


def test_dimer_curve_matches_direct_ase_calls(weak_model):
    from mace.calculators import MACECalculator

    d = [0.6, 1.0, 1.5, 2.5, 5.0]
    curve = dimer_curve("demo-gfn1-weak", "C-H", distances=d)
    calc = MACECalculator(model_paths=weak_model, device="cpu", default_dtype="float32")
    direct = []
    for x in d:
        a = Atoms("CH", positions=[[0, 0, 0], [0, 0, x]])
        a.calc = calc
        direct.append(a.get_potential_energy())
    direct = np.array(direct) - direct[-1]
    assert curve["distances"] == d
    assert np.allclose(curve["energies"], direct, atol=2e-3)
    with pytest.raises(ProbeError):
        parse_pair("C_H")
    out = subprocess.run(mlipft_cmd() + ["dimer", "demo-gfn1-weak", "--pair", "H-H", "--json"],
                         capture_output=True, text=True, timeout=300)
    d2 = json.loads(out.stdout)
    assert d2["distances"][0] == pytest.approx(0.5) and len(d2["energies"]) == len(d2["distances"])


def test_collapse_probe_reports_closest_approach(weak_model):
    res = collapse_probe("demo-gfn1-weak", ["C", "H"], n_structures=2, n_atoms=6, steps=30)
    assert res.n_structures == 2 and len(res.min_distance_per_structure) == 2
    assert res.min_distance == min(res.min_distance_per_structure) > 0
    # the weak demo model still keeps C and H apart: no structure ends closer than half the
    # sum of covalent radii (0.31 Å for H-H, the smallest pair)
    assert res.threshold == pytest.approx(0.31)
    assert res.collapsed == 0 and res.min_distance > 1.0


def test_random_structure_search_starts_are_compact_and_the_same_for_every_model():
    starts = probes.search_structures(["Cl", "C", "F", "H"], n_structures=30, seed=3)
    again = probes.search_structures(["H", "F", "C", "Cl"], n_structures=30, seed=3)
    assert [a.get_chemical_formula() for a in starts] == \
        [a.get_chemical_formula() for a in again]
    assert all(np.allclose(a.positions, b.positions) for a, b in zip(starts, again))
    for a in starts:
        syms = a.get_chemical_symbols()
        assert 2 <= len([x for x in syms if x != "H"]) <= 4 and 1 <= syms.count("H") <= 6
        assert probes._closest_ratio(a) >= probes.SEARCH_START_FACTOR - 1e-9
        # compact: every atom within 1.3 covalent-radii sums of another
        d = a.get_all_distances()
        r = covalent_radii[a.numbers]
        ratio = d / (r[:, None] + r[None, :]) + np.eye(len(a)) * 99
        assert ratio.min(axis=1).max() <= 1.3 + 1e-9
    silicon = probes.search_structures(["Si"], n_structures=5)
    assert all(3 <= len(a) <= 8 and set(a.get_chemical_symbols()) == {"Si"} for a in silicon)
    with pytest.raises(ProbeError):
        probes.search_structures([])


def test_random_structure_search_counts_a_collapse_at_any_step(weak_model, monkeypatch):
    """A potential that pulls every pair together collapses every structure; the demo model
    pushes them apart. The count is the structures whose closest approach (over the whole
    relaxation) fell below the collapse factor."""
    kept = probes.random_structure_search("demo-gfn1-weak", ["C", "H"], n_structures=3,
                                          steps=20)
    assert kept.structures == 3 and len(kept.closest) == len(kept.final) == 3
    assert kept.collapsed == sum(c < probes.SEARCH_COLLAPSE_FACTOR for c in kept.closest) == 0
    assert all(c <= f + 1e-9 for c, f in zip(kept.closest, kept.final))

    def attractive(net, frames, head=None):
        forces = []
        for a in frames:
            centre = a.positions.mean(axis=0)
            forces.append(5.0 * (centre - a.positions))
        return np.zeros(len(frames)), np.concatenate(forces)

    monkeypatch.setattr(probes, "predict", attractive)
    holes = probes.random_structure_search("demo-gfn1-weak", ["C", "H"], n_structures=3,
                                           steps=40)
    assert holes.collapsed == 3 and max(holes.closest) < probes.SEARCH_COLLAPSE_FACTOR
    assert holes.to_dict()["collapsed_percent"] == 100.0


def test_reference_dimer_curves_of_the_demo_models(demo, strong_model, tmp_path):
    curves = reference_dimer_curves(strong_model)
    assert curves["method"] == "GFN1-xTB"
    ch = reference_curve(curves, "H-C")
    assert ch == reference_curve(curves, "C-H") and ch["distances"][0] == pytest.approx(0.5)
    assert ch["energies"][0] > 10  # xTB rises steeply
    copy = tmp_path / "copy.model"
    shutil.copy(strong_model, copy)
    assert reference_dimer_curves(copy) is None  # only for the demo models themselves
    series, verdicts = repulsion([ModelHead("fm", strong_model)], "C-H",
                                 reference_curve=ch)
    assert "reference [GFN1-xTB]" in series
    assert verdicts[0].reference_wall_ev > 10
    assert verdicts[0].verdict == "kept"  # the strong demo model keeps its C-H wall
    # a model that keeps its wall is "kept" whatever the reference
    flat = {"distances": ch["distances"], "energies": [0.0] * len(ch["distances"])}
    _, v = repulsion([ModelHead("fm", strong_model)], "C-H", reference_curve=flat)
    assert (v[0].verdict, v[0].reference_wall_ev) == ("kept", 0.0)


def test_repulsion_verdicts_lost_kept_and_no_wall_in_reference(monkeypatch):
    """A model without a wall has "lost" it where the reference has one (or where there is
    no reference); a reference without a wall blames nobody."""
    d = np.linspace(0.5, 5, 46)
    walled = {"distances": d.tolist(), "energies": (4 * ((1 / d) ** 12 - (1 / d) ** 6)).tolist()}
    flat = {"distances": d.tolist(), "energies": (-2.0 * np.exp(-d)).tolist()}
    curves = {"walled.model": walled, "flat.model": flat}
    monkeypatch.setattr(analysis, "dimer_curve_cached",
                        lambda path, pair, **kw: curves[path])
    models = [ModelHead("walled", "walled.model"), ModelHead("flat", "flat.model")]

    def verdicts(reference):
        _, v = repulsion(models, "C-H", reference_curve=reference)
        return [(x.model, x.verdict, x.reference_wall_ev) for x in v]

    wall = round(analysis.repulsive_wall(walled), 3)
    assert wall > analysis.WALL_THRESHOLD_EV
    assert verdicts(walled) == [("walled", "kept", wall), ("flat", "lost", wall)]
    assert verdicts(None) == [("walled", "kept", None), ("flat", "lost", None)]
    assert verdicts(flat) == [("walled", "kept", 0.0),
                              ("flat", "no wall in reference", 0.0)]


def test_repulsive_wall_flags_a_model_without_repulsion():
    d = np.linspace(0.5, 5, 46)
    physical = {"distances": d.tolist(), "energies": (4 * ((1 / d) ** 12 - (1 / d) ** 6)).tolist()}
    lost = {"distances": d.tolist(), "energies": (-2.0 * np.exp(-d)).tolist()}  # no wall at all
    assert repulsive_wall(physical) > WALL_THRESHOLD_EV
    assert repulsive_wall(lost) == pytest.approx(0.0)
    curve = dimer_curve("demo-gfn1-strong", "C-H")
    assert repulsive_wall(curve) > WALL_THRESHOLD_EV  # the demo model keeps its C-H wall


# ----------------------------------------------------------------------------- the page
def _page(name: str):
    from streamlit.testing.v1 import AppTest

    app = Path(__file__).resolve().parent.parent / "app.py"
    at = AppTest.from_file(str(app), default_timeout=600)
    at.run()
    at.switch_page(str(app.parent / "views" / name))
    at.run()
    assert not at.exception, at.exception
    return at


def _widget(widgets, label: str):
    return next(w for w in widgets if w.label == label)


def test_pilot_runs_are_offered_apart_and_never_preselected(weak_model):
    store = RunStore()
    t = 1_700_000_000.0
    for i, lr in enumerate((1e-4, 3e-4, 1e-3, 3e-3, 1e-2)):  # as tune.submit_pilot records them
        store.create(RunRecord(id=f"p{i}", name=f"tune-naive-lr{lr:g}".replace(".", "p"),
                               strategy="naive", status="done", created=t + i,
                               sweep="tune-naive-20240101-000000-abcdef",
                               spec={"settings": {"lr": lr}, "e0s": "estimated",
                                     "foundation_model": weak_model}))
    for i, strat in enumerate(("naive", "freeze-b")):
        store.create(RunRecord(id=f"f{i}", name=strat, strategy=strat, status="done",
                               created=t + 10 + i, sweep="sweep-20240101-000100",
                               spec={"settings": {"lr": 3e-3}, "e0s": "estimated",
                                     "foundation_model": weak_model}))
    at = _page("compare.py")
    runs = _widget(at.multiselect, "Runs")
    assert runs.value == ["f0", "f1"]  # the finals only
    # the final naive run names its learning rate: its pilot's runs had others
    assert runs.options == ["Naive fine-tuning · lr 3e-3", "Freeze, variant B"]
    pilots = _widget(at.multiselect, "Learning-rate pilot runs")
    assert pilots.value == []
    assert pilots.options == [f"Naive fine-tuning · learning-rate pilot · lr {x}"
                              for x in ("1e-4", "3e-4", "1e-3", "3e-3", "1e-2")]


@pytest.mark.slow
def test_compare_names_runs_and_heads_in_words(small, weak_model, demo):
    """Two runs both called "naive" (different learning rates) and a multihead run: told
    apart by what differs, heads in words, dashes for empty cells, on Compare and Runs."""
    def s(strategy, lr):
        return RunSpec(strategy, weak_model, str(small / "train.xyz"), e0s="estimated",
                       replay_file=str(small / "replay.xyz"),
                       settings={"max_num_epochs": 1, "num_samples_pt": 15, "lr": lr},
                       isolated_file=demo["sn2_isolated_atoms"])

    recs = [jobs.submit(s("naive", 3e-3)), jobs.submit(s("naive", 1e-3)),
            jobs.submit(s("multihead-replay", 3e-3))]
    assert [r.name for r in recs] == ["naive", "naive", "multihead-replay"]
    for r in recs:
        assert_done(jobs.wait(r.id, timeout=600))
    at = _page("compare.py")
    at.text_input[0].set_value(str(small / "target.xyz")).run()
    at.text_input[1].set_value(str(small / "pretrain.xyz")).run()
    next(b for b in at.button if b.label == "Compare").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert sorted(set(table["model"])) == sorted([
        "Demo weak (GFN1-xTB), the foundation model (zero-shot)", "Multihead replay",
        "Naive fine-tuning · lr 1e-3", "Naive fine-tuning · lr 3e-3"])
    assert len(table) == 5  # the foundation, two naive runs, two heads of the replay run
    assert set(table["head"]) == {"target head", "pretraining head (replay)"}
    # the two naive runs are different models, with their own errors
    naive = table[table["model"].str.startswith("Naive")]
    assert naive["target force RMSE (meV/Å)"].nunique() == 2
    cells = [str(v) for d in at.dataframe for c in d.value.columns for v in d.value[c]]
    cols = [str(c) for d in at.dataframe for c in d.value.columns]
    assert not any("pt_head" in v or v in ("None", "nan") for v in cells + cols)
    specs = " ".join(c.proto.spec for c in at.get("plotly_chart"))
    assert "Multihead replay [pretraining head (replay)]" in specs and "pt_head]" not in specs
    # the runs page names the same runs and heads the same way
    at = _page("runs.py")
    runs = at.dataframe[-1].value
    assert sorted(runs["run"]) == ["Multihead replay", "Naive fine-tuning · lr 1e-3",
                                   "Naive fine-tuning · lr 3e-3"]
    assert "validation force RMSE (meV/Å), pretraining head (replay)" in runs.columns
    assert "validation energy RMSE (meV/atom), target head" in runs.columns
    # the single-head runs have no pretraining head: a dash, not "None"
    single = runs[runs["run"].str.startswith("Naive")]
    assert set(single["validation force RMSE (meV/Å), pretraining head (replay)"]) == {"—"}
