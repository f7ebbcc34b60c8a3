"""Batched evaluation through mace's data loader."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write

from mlipft_core.errors import DataError, HeadError
from mlipft_core.evaluate import compute_metrics, evaluate_model


def test_metrics_against_hand_computed_values():
    ref_e = np.array([-10.0, -20.0])
    pred_e = np.array([-9.7, -20.4])
    n = np.array([3, 4])
    ref_f = np.zeros((7, 3))
    pred_f = np.zeros((7, 3))
    pred_f[0, 0] = 0.7
    m = compute_metrics(ref_e, pred_e, n, ref_f, pred_f)
    de = np.array([0.3 / 3, -0.4 / 4])
    assert m.energy_rmse_mev_per_atom == pytest.approx(np.sqrt(np.mean(de**2)) * 1000)
    assert m.energy_mae_mev_per_atom == pytest.approx(100.0)
    assert m.forces_rmse_mev_per_a == pytest.approx(np.sqrt(0.49 / 21) * 1000)
    assert m.forces_mae_mev_per_a == pytest.approx(700 / 21)
    assert m.n_structures == 2 and m.n_atoms == 7


def test_batched_predictions_match_the_ase_calculator(demo, strong_model):
    from mace.calculators import MACECalculator

    frames = read(demo["sn2_test"], ":8") + read(demo["water_test"], ":2")
    progress = []
    res = evaluate_model("demo-gfn1-strong", frames, batch_size=4,
                         progress=lambda d, n: progress.append((d, n)))
    assert progress[-1] == (10, 10) and len(progress) == 3
    calc = MACECalculator(model_paths=strong_model, device="cpu", default_dtype="float32")
    start = 0
    for i, a in enumerate(frames):
        b = a.copy()
        b.calc = calc
        assert res.pred_energy[i] == pytest.approx(b.get_potential_energy(), abs=2e-3)
        np.testing.assert_allclose(res.pred_forces[start:start + len(a)], b.get_forces(),
                                   atol=2e-3)
        start += len(a)
    # reference labels are read from the detected keys
    assert res.ref_energy[0] == pytest.approx(frames[0].info["REF_energy"])
    per_type = res.per_config_type()
    assert set(per_type) == set(res.config_types)
    assert sum(m.n_structures for m in per_type.values()) == 10


def test_uncovered_elements_and_unknown_head(tmp_path):
    a = Atoms("NaCl", positions=[[0, 0, 0], [2.4, 0, 0]], info={"REF_energy": -1.0})
    p = tmp_path / "nacl.xyz"
    write(p, [a], format="extxyz")
    with pytest.raises(DataError) as e:
        evaluate_model("demo-gfn1-weak", p)
    assert e.value.code == "elements_not_covered" and "Na" in str(e.value)
    b = Atoms("H2O", positions=[[0, 0, 0], [0.76, 0.58, 0], [0, 0, 0.1]],
              info={"REF_energy": -1.0})
    with pytest.raises(HeadError):
        evaluate_model("demo-gfn1-weak", [b], head="pt_head")


def test_stress_metrics_only_for_labelled_periodic_structures(demo):
    ref_s = np.full((3, 3, 3), np.nan)
    ref_s[0] = np.eye(3) * 0.01
    ref_s[2] = 0.0
    pred_s = np.zeros((3, 3, 3))
    pred_s[1] = 99.0  # unlabelled: ignored
    m = compute_metrics(np.zeros(3), np.zeros(3), np.ones(3, int), None, None, ref_s, pred_s)
    assert m.stress_rmse_mev_per_a3 == pytest.approx(np.sqrt(3 * 0.01**2 / 18) * 1000)
    assert m.stress_mae_mev_per_a3 == pytest.approx(0.03 / 18 * 1000)
    water = evaluate_model("demo-gfn1-weak", read(demo["water_test"], ":3"))
    assert water.metrics.stress_rmse_mev_per_a3 is not None and water.pred_stress.shape == (3, 3, 3)
    mol = evaluate_model("demo-gfn1-weak", read(demo["sn2_test"], ":3"))
    assert mol.metrics.stress_rmse_mev_per_a3 is None
