"""The bundled demo world: manifest, files, sizes, and the geometry builders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from ase.io import read

from mlipft_core.demo import sample_data_dir
from mlipft_core.demo import structures as st


def test_manifest_matches_the_files(demo):
    manifest = json.loads(Path(demo["manifest"]).read_text())
    root = sample_data_dir()
    for rel, entry in manifest["files"].items():
        data = (root / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], rel
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 25 * 1024 * 1024
    assert manifest["versions"]["mace-torch"] == "0.3.16"
    for step in ("corpus", "sn2", "water"):
        assert manifest["steps"][step]["seconds"] > 0
    for name in ("demo-gfn1-weak", "demo-gfn1-strong"):
        assert manifest["models"][name]["test_errors"]["pretrain_test"]["n_structures"] > 100


def test_demo_datasets_have_what_the_workflow_needs(demo):
    scan = read(demo["sn2_scan"], ":")
    assert [a.info["scan_index"] for a in scan] == list(range(len(scan)))
    d_cx = [a.get_distance(0, 1) for a in scan]
    assert np.all(np.diff(d_cx) < 0), "the scan is ordered along the reaction"
    for key in ("sn2_train", "sn2_valid", "sn2_test"):
        frames = read(demo[key], ":")
        assert all(a.info["total_charge"] == -1 for a in frames)
        assert {s for a in frames for s in a.get_chemical_symbols()} <= {"H", "C", "F", "Cl"}
    water = read(demo["water_test"], ":3")
    assert all(a.pbc.all() and len(a) == 96 and "REF_stress" in a.info for a in water)
    pre = read(demo["pretrain_test"], ":")
    kinds = {a.info["config_type"] for a in pre}
    assert {"organic", "water_cluster", "water_box", "sn2_complex"} <= kinds
    assert not any(a.info.get("config_type") == "IsolatedAtom" for a in pre)


def test_geometry_builders():
    rng = np.random.default_rng(0)
    box = st.water_box(32, rng)
    mass_g = box.get_masses().sum() / 6.02214076e23
    assert mass_g / (box.get_volume() * 1e-24) == pytest.approx(0.997, rel=1e-3)
    d = box.get_all_distances(mic=True)
    oo = d[::3, ::3][np.triu_indices(32, 1)]
    assert oo.min() >= 2.6
    react, prod = st.sn2_complex("F", "Cl", 0.02), st.sn2_complex("F", "Cl", 0.98)
    assert react.get_distance(0, 1) > 2.5 and react.get_distance(0, 2) < 1.85
    assert prod.get_distance(0, 1) < 1.45 and prod.get_distance(0, 2) > 2.9
    r = st.rattle_per_atom(react, rng, 0.05, 0.1)
    moved = np.linalg.norm(r.positions - react.positions, axis=1)
    assert np.all((moved >= 0.05 - 1e-9) & (moved <= 0.1 + 1e-9))


def test_strong_demo_model_keeps_a_repulsive_wall(demo, strong_model):
    """The short-range GFN1-xTB set gives the strong demo model the wall its reference has."""
    from mlipft_core.probes import (
        WALL_THRESHOLD_EV,
        dimer_curve,
        reference_curve,
        reference_dimer_curves,
        repulsive_wall,
    )

    ref = reference_dimer_curves(strong_model)
    for pair in ("C-C", "C-H", "O-H", "C-Cl"):
        r = reference_curve(ref, pair)
        assert repulsive_wall(r) > 10, pair
        curve = dimer_curve(strong_model, pair, trusted=True)
        e = np.asarray(curve["energies"])
        assert repulsive_wall(curve) > WALL_THRESHOLD_EV, (pair, e[:5])
        # steep: the energy at 0.5 Å lies far above the energy at 1.0 Å
        assert e[0] - e[5] > 5, (pair, e[:6])


def test_short_range_set_is_in_training_and_replay_not_in_the_test_set(demo):
    short = {"short_range_dimer", "short_range_trimer", "compressed", "random_compact"}
    train_types = {a.info.get("config_type") for a in read(demo["pretrain_train"], ":")}
    assert short <= train_types
    replay = read(demo["replay_pool"], ":")
    assert any(a.info.get("config_type") in short for a in replay)
    assert not any(a.info.get("config_type") in short for a in read(demo["pretrain_test"], ":"))
    dimers = [a for a in read(demo["pretrain_train"], ":")
              if a.info.get("config_type") == "short_range_dimer"]
    assert min(a.get_distance(0, 1) for a in dimers) == pytest.approx(0.5, abs=1e-6)
    # relative-error weights: a 0.5 Å dimer weighs far less than an ordinary structure
    assert min(a.info["config_forces_weight"] for a in dimers) < 0.01
    manifest = json.loads(Path(demo["manifest"]).read_text())
    assert manifest["steps"]["short-range"]["n_kept"]["short_range_dimer"] == len(
        [a for a in read(demo["pretrain_train"], ":") + replay
         if a.info.get("config_type") == "short_range_dimer"])


def test_short_range_probe_set_is_held_out_and_tells_models_apart(demo, strong_model,
                                                                  weak_model):
    """The held-out compressed structures: never trained on, labelled, and the probe ranks
    the strong demo model (trained with a wall) above the weak one."""
    from mlipft_core.analysis import ModelHead, force_kept, short_range_probe

    probe = read(demo["short_range_test"], ":")
    assert len(probe) > 100
    assert {a.info["config_type"] for a in probe} == {"short_range_trimer", "compressed",
                                                      "random_compact"}
    assert all(np.isfinite(a.arrays["REF_forces"]).all() for a in probe)

    def key(a) -> bytes:
        return a.numbers.tobytes() + np.round(a.positions, 4).tobytes()

    seen = {key(a) for a in read(demo["pretrain_train"], ":") + read(demo["replay_pool"], ":")}
    assert not any(key(a) in seen for a in probe)  # held out
    # closer than any bond: the reference forces are large
    assert np.median([np.abs(a.arrays["REF_forces"]).max() for a in probe]) > 10

    res = {r.model: r for r in short_range_probe(
        [ModelHead("strong", strong_model), ModelHead("weak", weak_model)],
        demo["short_range_test"])}
    assert res["strong"].n_structures == len(probe)
    assert res["strong"].median_force_kept > 0.8
    assert res["strong"].soft_share_percent < res["weak"].soft_share_percent
    assert res["strong"].forces_rmse_ev_per_a < res["weak"].forces_rmse_ev_per_a
    manifest = json.loads(Path(demo["manifest"]).read_text())
    assert manifest["steps"]["short-range-test"]["n_kept"]["compressed"] == sum(
        a.info["config_type"] == "compressed" for a in probe)
    assert manifest["models"]["demo-gfn1-strong"]["short_range_probe"]["soft_spots"] == \
        res["strong"].soft_spots

    # the measure itself: the share of the reference forces a prediction keeps
    ref = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 3.0, 0]])
    kept = force_kept(ref, np.vstack([0.4 * ref[:2], -ref[2:]]), np.array([2, 1]))
    assert kept == pytest.approx([0.4, -1.0])
