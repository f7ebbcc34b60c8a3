"""E0 methods against hand-computed least squares, rank deficiency, and mace's own numbers."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write

from conftest import mlipft_cmd
from mlipft_core import e0 as e0mod
from mlipft_core import evaluate
from mlipft_core.data import detect_keys, register_files_as_split
from mlipft_core.e0 import E0Error, E0Inputs, compute, diagnose, verdict
from mlipft_core.strategies import RunSpec
from mlipft_core.workspace import Workspace

TRUE = {"H": -13.6, "C": -1029.0, "O": -2041.0}
FOUND = {"H": -11.0, "C": -47.0, "O": -118.0}


def synthetic(compositions, interaction=None) -> E0Inputs:
    """Configurations with exact energies.

    E_ref = sum n E0_true + E_int, E_model = sum n E0_found + E_int.
    """
    rng = np.random.default_rng(0)
    frames = []
    for comp in compositions:
        syms = [s for s, k in comp.items() for _ in range(k)]
        frames.append(Atoms(syms, positions=rng.normal(size=(len(syms), 3)) * 3))
    elements = sorted({s for c in compositions for s in c}, key=lambda s: "HCO".index(s))
    A = e0mod.composition_matrix(frames, elements)
    e_int = np.asarray(interaction if interaction is not None else rng.normal(size=len(frames)))
    ref = A @ np.array([TRUE[e] for e in elements]) + e_int
    model = A @ np.array([FOUND[e] for e in elements]) + e_int
    for a, e in zip(frames, ref):
        a.info["REF_energy"] = e
    return E0Inputs(frames, detect_keys(frames), elements, ref, model,
                    {e: FOUND[e] for e in elements}, {})


COMPS = [{"H": 2, "O": 1}, {"H": 4, "C": 1}, {"C": 2, "O": 1, "H": 4}, {"H": 2},
         {"C": 1, "O": 2}, {"H": 6, "C": 2, "O": 1}]


def test_estimated_recovers_the_true_e0s_and_removes_the_offset():
    inp = synthetic(COMPS)
    res = compute(inp, "estimated")
    for el, v in TRUE.items():
        assert res.e0[el] == pytest.approx(v, abs=1e-8)
    assert res.offset_rmse_after_mev_per_atom == pytest.approx(0.0, abs=1e-6)
    before = (inp.ref_energy - inp.model_energy) / inp.n_atoms
    assert res.offset_rmse_before_mev_per_atom == pytest.approx(
        np.sqrt(np.mean(before**2)) * 1000)
    assert not res.diagnostics.rank_deficient and np.isfinite(res.diagnostics.condition_number)
    arg = ast.literal_eval(res.mace_argument())
    assert list(arg) == [1, 6, 8]
    assert list(arg.values()) == pytest.approx([-13.6, -1029.0, -2041.0])


def test_average_is_least_squares_of_total_energy_on_composition():
    inp = synthetic(COMPS)
    res = compute(inp, "average")
    A = inp.A
    expected = np.linalg.lstsq(A, inp.ref_energy, rcond=None)[0]
    assert [res.e0[e] for e in inp.elements] == pytest.approx(expected.tolist(), abs=1e-9)
    # 'average' ignores the model: it absorbs the interaction energy into the E0s
    inp2 = synthetic(COMPS, interaction=-2.0 * inp.n_atoms)
    res2 = compute(inp2, "average")
    assert res2.e0["H"] == pytest.approx(TRUE["H"] - 2.0, abs=1e-8)


def test_foundation_isolated_and_explicit():
    inp = synthetic(COMPS)
    f = compute(inp, "foundation")
    assert f.e0 == FOUND
    assert np.allclose(f.offset_after, f.offset_before)
    assert any("different levels of theory" in w for w in f.warnings)
    with pytest.raises(E0Error, match="no IsolatedAtom"):
        compute(inp, "isolated")
    inp.isolated = dict(TRUE)
    iso = compute(inp, "isolated")
    assert iso.e0 == TRUE and iso.offset_rmse_after_mev_per_atom == pytest.approx(0, abs=1e-6)
    ex = compute(inp, "explicit", explicit={"1": -13.6, "C": -1029.0, 8: -2041.0})
    assert ex.e0 == TRUE
    with pytest.raises(E0Error, match="miss O"):
        compute(inp, "explicit", explicit='{"H": -13.6, "C": -1029.0}')
    with pytest.raises(E0Error, match="neither valid JSON nor a file"):
        compute(inp, "explicit", explicit="{H: oops")


def test_rank_deficient_fits_are_explained():
    fixed_ratio = diagnose(np.array([[3, 1, 2, 0], [3, 1, 1, 1], [3, 1, 0, 2]], float),
                           ["H", "C", "F", "Cl"])
    assert fixed_ratio.rank == 2 and fixed_ratio.rank_deficient
    assert fixed_ratio.condition_number == float("inf")
    assert "3 n_C = n_H" in fixed_ratio.explanation
    single = diagnose(np.array([[2, 1], [4, 2], [6, 3]], float), ["H", "O"])
    assert single.rank == 1 and "same composition" in single.explanation
    absent = diagnose(np.array([[2, 1, 0], [1, 0, 0], [0, 1, 0]], float), ["H", "O", "C"])
    assert absent.undetermined == ["C"] and "C never appears" in absent.explanation
    inp = synthetic([{"H": 2, "O": 1}, {"H": 4, "O": 2}])
    res = compute(inp, "estimated")
    assert res.diagnostics.rank_deficient and any("same composition" in w for w in res.warnings)
    # still, the offset is removed: only the weighted sum matters for this data
    assert res.offset_rmse_after_mev_per_atom == pytest.approx(0, abs=1e-6)


def test_verdict_prefers_estimated_on_level_mismatch():
    inp = synthetic(COMPS)
    inp.isolated = {e: v + 0.5 for e, v in TRUE.items()}
    results = e0mod.compute_all(inp)
    best, notes = verdict(results)
    assert best == "estimated"
    assert any("different levels of theory" in n for n in notes)


def _mace_e0s(tmp_path, method: str, model: str, train, valid) -> dict[int, float]:
    write(tmp_path / "train.xyz", train)
    write(tmp_path / "valid.xyz", valid)
    cmd = [sys.executable, "-m", "mace.cli.run_train", "--name=e0check",
           f"--train_file={tmp_path / 'train.xyz'}", f"--valid_file={tmp_path / 'valid.xyz'}",
           f"--foundation_model={model}", "--multiheads_finetuning=False", f"--E0s={method}",
           "--max_num_epochs=1", "--batch_size=5", "--device=cpu", "--default_dtype=float32",
           "--energy_key=REF_energy", "--forces_key=REF_forces", f"--work_dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    log = proc.stdout + proc.stderr
    m = re.search(r"Atomic Energies used \(z: eV\) for head Default: (\{.*\})", log)
    assert m, log[-3000:]
    return ast.literal_eval(m.group(1))


@pytest.mark.parametrize("method", ["estimated", "average"])
def test_agrees_with_mace_run_train(tmp_path, demo, weak_model, method):
    train = read(demo["sn2_train"], ":40")
    valid = read(demo["sn2_valid"], ":5")
    ours = compute(e0mod.prepare(train, "demo-gfn1-weak"), method)
    theirs = _mace_e0s(tmp_path, method, weak_model, train, valid)
    assert set(theirs) == set(ours.e0_by_z)
    for z, v in theirs.items():
        # float32 model predictions of totals around -10^4 eV: agree to a few meV
        assert ours.e0_by_z[z] == pytest.approx(v, abs=0.02), (z, ours.e0_by_z[z], v)


def test_demo_sn2_story(demo):
    """GFN1-trained model, DFT target: keV-scale disagreement, estimated fixes the offset."""
    inp = e0mod.prepare(demo["sn2_train"], "demo-gfn1-strong",
                        isolated_file=demo["sn2_isolated_atoms"])
    res = e0mod.compute_all(inp)
    assert set(res) == {"foundation", "average", "estimated", "isolated"}
    assert abs(res["estimated"].e0["Cl"] - res["foundation"].e0["Cl"]) > 1000
    assert res["foundation"].offset_rmse_after_mev_per_atom > 1e6  # > 1 keV/atom
    assert res["estimated"].offset_rmse_after_mev_per_atom < 100
    assert res["estimated"].diagnostics.rank_deficient  # C and H always 1:3
    assert "n_H" in res["estimated"].diagnostics.explanation
    best, _ = verdict(res)
    assert best == "estimated"


def test_choice_saved_and_cli(tmp_path, demo):
    # the command line anchors fitted E0s of the demo data to its bundled isolated atoms
    inp = e0mod.prepare(demo["sn2_train"], "demo-gfn1-weak",
                        isolated_file=demo["sn2_isolated_atoms"])
    res = compute(inp, "estimated")
    ws = Workspace()
    saved = e0mod.save_choice(ws, res, model="demo-gfn1-weak", head="Default",
                              data=demo["sn2_train"])
    assert ws.get("e0_choice") == saved["id"]
    assert e0mod.load_choice(ws)["mace_argument"] == res.mace_argument()
    mace_json = json.loads(Path(saved["mace_json"]).read_text())
    assert {int(k) for k in mace_json} == {1, 6, 9, 17}
    out = subprocess.run(mlipft_cmd() + ["e0", demo["sn2_train"], "--model", "demo-gfn1-weak",
                                         "--method", "estimated", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["e0"]["Cl"] == pytest.approx(res.e0["Cl"], abs=1e-6)
    assert d["offset_rmse_before_mev_per_atom"] > 1e6
    assert d["offset_rmse_after_mev_per_atom"] < 100
    assert d["anchor"] == "isolated atoms"
    # a copy outside the demo folder has no isolated atoms to default to
    write(tmp_path / "train.xyz", read(demo["sn2_train"], ":"))
    bad = subprocess.run(mlipft_cmd() + ["e0", str(tmp_path / "train.xyz"), "--model",
                                         "demo-gfn1-weak", "--method", "isolated", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "IsolatedAtom" in bad.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("bad, message", [
    ("[1, 2]", "must be a mapping"), ('{"200": 1}', "not an atomic number"),
    ('{"0": 1}', "not an atomic number"), ('{"Xx": 1}', "not an element"),
    ('{"H": "a lot"}', "not a number"), ('{"H": NaN}', "not finite"),
    ("{" + ", ".join(f'"{e}": -1.0' for e in ["H", "He", "Li", "Be", "B", "C", "N", "O", "F",
                                               "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl",
                                               "Ar", "K", "Ca", "Sc", "Ti", "V"]) + ", oops",
     "neither"),
])
def test_explicit_values_are_checked(bad, message):
    with pytest.raises(E0Error, match=message):
        e0mod.load_explicit(bad)


def test_anchored_e0s_are_physical_and_fit_as_well(demo):
    """SN2 (n_H = 3 n_C, n_F + n_Cl = 2): the isolated atoms fix what the data cannot."""
    free = compute(e0mod.prepare(demo["sn2_train"], "demo-gfn1-strong"), "estimated")
    inp = e0mod.prepare(demo["sn2_train"], "demo-gfn1-strong",
                        isolated_file=demo["sn2_isolated_atoms"])
    anchored = compute(inp, "estimated")
    assert anchored.anchor == e0mod.ANCHOR_ISOLATED and anchored.anchored
    for el, iso in inp.isolated.items():
        assert abs(anchored.e0[el] - iso) < 5.0, (el, anchored.e0[el], iso)
    # the unanchored split is arbitrary: thousands of eV away for some element
    assert max(abs(free.e0[e] - inp.isolated[e]) for e in free.e0) > 1000
    assert anchored.offset_rmse_after_mev_per_atom == pytest.approx(
        free.offset_rmse_after_mev_per_atom, abs=0.05)
    # the verdict: a warning without the anchor, a success with it
    unanchored = e0mod.assess(e0mod.compute_all(e0mod.prepare(demo["sn2_train"],
                                                              "demo-gfn1-strong")))
    assert unanchored.level == "warning" and unanchored.best == "estimated"
    text = " ".join(unanchored.notes)
    assert "Not anchored" in text and "isolated-atom energies" in text and "3 n_C = n_H" in text
    assert e0mod.assess(e0mod.compute_all(inp)).level == "success"


def test_anchored_lstsq_keeps_the_residual_and_follows_the_prior():
    A = np.array([[1, 3, 1, 1], [1, 3, 2, 0], [1, 3, 0, 2]], float)
    b = np.array([-10.0, -11.0, -9.0])
    prior = np.array([5.0, -2.0, 1.0, 7.0])
    x = e0mod.anchored_lstsq(A, b, prior)
    plain = np.linalg.lstsq(A, b, rcond=None)[0]
    assert np.allclose(A @ x, A @ plain)
    # the change from the prior lies in the row space: no component along the null space
    null = np.linalg.svd(A)[2][2:]
    assert np.allclose(null @ (x - prior), 0, atol=1e-9)


def test_cli_e0_uses_the_isolated_anchor(demo):
    out = subprocess.run(mlipft_cmd() + ["e0", demo["sn2_train"], "--model",
                                         "demo-gfn1-strong", "--method", "estimated",
                                         "--isolated-file", demo["sn2_isolated_atoms"],
                                         "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["anchor"] == "isolated atoms" and d["anchored"] is True
    assert abs(d["e0"]["H"] - (-13.64)) < 5


def test_one_definition_of_an_isolated_atom(tmp_path):
    """mace's: one atom tagged IsolatedAtom. The E0 fit, the run's preflight and the training
    file handed to mace all set aside exactly those."""
    from mlipft_core.jobs.prepare import train_file_for_mace

    def atoms(symbols, tag=None, energy=-1.0):
        a = Atoms(symbols)
        a.positions = [[0.0, 0.0, 1.5 * i] for i in range(len(a))]
        a.info["REF_energy"] = energy
        if tag:
            a.info["config_type"] = tag
        return a

    iso_h, iso_c = atoms("H", "IsolatedAtom", -13.6), atoms("C", "IsolatedAtom", -1029.0)
    tagged_pair = atoms("H2", "IsolatedAtom", -31.0)  # not one atom: mace trains on it
    lone_h = atoms("H", None, -13.0)  # one atom, untagged: a configuration too
    frames = [iso_h, iso_c, tagged_pair, lone_h, atoms("CH4", None, -1090.0)]
    assert [e0mod.is_isolated_atom(a) for a in frames] == [True, True, False, False, False]
    assert e0mod.isolated_energies(frames) == {"H": -13.6, "C": -1029.0}
    inputs = e0mod.prepare(frames)
    assert len(inputs.frames) == 3 and inputs.isolated == {"H": -13.6, "C": -1029.0}
    path = tmp_path / "train.xyz"
    write(path, frames)
    handed, left_out = train_file_for_mace(str(path), Workspace())
    assert left_out == pytest.approx({"H": -13.6, "C": -1029.0})
    assert [len(a) for a in read(handed, ":")] == [2, 1, 5]


# ----------------------------------------------------------------------------- caching
def _count_model_work(monkeypatch) -> list[str]:
    """Every model unpickling and every batched prediction from now on (the real ones run;
    they are only counted)."""
    import torch

    work: list[str] = []
    real_load, real_predict = torch.load, evaluate._predict_stream

    def load(*args, **kwargs):
        work.append(f"load {args[0] if args else ''}")
        return real_load(*args, **kwargs)

    def predict(*args, **kwargs):
        work.append("predict")
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    monkeypatch.setattr(evaluate, "_predict_stream", predict)
    return work


def test_e0_preparation_is_kept_in_the_workspace(tmp_path, demo, strong_model, monkeypatch):
    from mlipft_core import jobs

    train = tmp_path / "train.xyz"
    write(train, read(demo["sn2_train"], ":12"))
    ws = Workspace()
    plain = e0mod.prepare(str(train), strong_model, trusted=True)
    assert e0mod.cached_inputs(str(train), strong_model, head="Default", trusted=True,
                               workspace=ws) is None  # nothing predicted in this space yet
    first = e0mod.prepare(str(train), strong_model, trusted=True, workspace=ws)
    loads = _count_model_work(monkeypatch)
    again = e0mod.prepare(str(train), strong_model, trusted=True, workspace=ws)
    shown = e0mod.cached_inputs(str(train), strong_model, head="Default", trusted=True,
                                workspace=ws)
    # a launch without a saved choice re-estimates the E0s from the same predictions
    launched = jobs.resolve_e0s(RunSpec("naive", strong_model, str(train), e0s="estimated"),
                                workspace=ws)
    assert loads == []  # no model was unpickled, nothing predicted
    for inputs in (first, again, shown):
        assert np.array_equal(inputs.model_energy, plain.model_energy)
        assert inputs.foundation_e0 == plain.foundation_e0
        assert inputs.model_elements == plain.model_elements
    assert launched == compute(plain, "estimated").e0
    # another file version is never served stale: one configuration more is predicted
    write(train, read(demo["sn2_train"], ":13"))
    grown = e0mod.prepare(str(train), strong_model, trusted=True, workspace=ws)
    assert len(grown.model_energy) == 13 and "predict" in loads
    assert np.allclose(grown.model_energy[:12], plain.model_energy)


def test_e0_page_shows_the_result_again_after_a_reload(demo, monkeypatch):
    from streamlit.testing.v1 import AppTest

    ws = Workspace()
    split = register_files_as_split(ws, {"train": demo["sn2_train"], "valid": demo["sn2_valid"],
                                         "test": demo["sn2_test"]}, "demo-sn2")
    ws.set(model="demo-gfn1-strong", model_label="Demo strong", split_id=split.id)
    root = Path(__file__).resolve().parent.parent

    def open_e0_page() -> AppTest:
        at = AppTest.from_file(str(root / "app.py"), default_timeout=300)
        at.run()
        at.switch_page(str(root / "views" / "e0.py"))
        at.run()
        assert not at.exception, at.exception
        return at

    at = open_e0_page()
    assert not any(s.value == "Verdict" for s in at.subheader)  # nothing computed yet
    next(b for b in at.button if b.label == "Compute E0s").click().run()
    verdict_text = " ".join(s.value for s in at.success)
    assert "'estimated' leaves the smallest offset" in verdict_text
    loads = _count_model_work(monkeypatch)
    again = open_e0_page()  # a reload: a new session, no button pressed
    assert any(s.value == "Verdict" for s in again.subheader)
    assert " ".join(s.value for s in again.success) == verdict_text
    assert loads == []  # shown from the workspace without model time
