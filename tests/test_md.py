"""Molecular dynamics: stability checks, RDF normalisation, EMD, the queue, CLI and page."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from ase import Atoms
from ase.io import read

from mlipft_core import jobs
from mlipft_core.md import MDError, MDSettings, emd, rdf, run_md_for_model
from mlipft_core.workspace import Workspace

from conftest import mlipft_cmd


def test_rdf_of_an_ideal_gas_is_one_and_integrates_to_the_neighbour_count():
    rng = np.random.default_rng(0)
    length = 20.0
    frames = [Atoms("Ar" * 400, positions=rng.uniform(0, length, (400, 3)),
                    cell=[length] * 3, pbc=True) for _ in range(5)]
    r, g = rdf(frames, ("Ar", "Ar"), rmax=8.0, nbins=80)
    assert np.mean(g[r > 3]) == pytest.approx(1.0, abs=0.05)
    # integral of rho g(r) 4 pi r^2 dr up to 5 Å = mean number of neighbours within 5 Å
    rho = 400 / length**3
    dr = r[1] - r[0]
    integral = np.sum(rho * g[r < 5] * 4 * np.pi * r[r < 5] ** 2 * dr)
    d = frames[0].get_all_distances(mic=True)
    counted = np.mean([(np.sum((f.get_all_distances(mic=True) < 5)) - 400) / 400
                       for f in frames])
    assert integral == pytest.approx(counted, rel=0.03)
    with pytest.raises(MDError, match="half the cell"):
        rdf(frames[:1], ("Ar", "Ar"), rmax=12.0)
    assert d.shape == (400, 400)


def test_emd_is_zero_for_itself_and_grows_with_a_shift():
    r = np.linspace(0, 6, 121)
    g = np.exp(-((r - 2.8) ** 2) / 0.05)
    assert emd(r, g, g) == pytest.approx(0.0, abs=1e-12)
    shifts = [emd(r, g, np.exp(-((r - 2.8 - s) ** 2) / 0.05)) for s in (0.1, 0.3, 0.6)]
    assert shifts == pytest.approx([0.1, 0.3, 0.6], abs=0.01)


def test_short_stable_run_and_a_broken_one(demo, tmp_path):
    box = read(demo["water_test"], 0)
    ok = run_md_for_model("demo-gfn1-strong", box, MDSettings(steps=20, interval=5),
                          trajectory=tmp_path / "traj.xyz")
    assert ok.failure is None and ok.survived_steps == 20 and ok.steps_per_second > 0
    assert set(ok.rdf) == {"H-H", "H-O", "O-O"}
    assert len(read(tmp_path / "traj.xyz", ":")) == 5  # frames at 0, 5, 10, 15, 20
    r, g = np.array(ok.rdf["H-O"]["r"]), np.array(ok.rdf["H-O"]["g"])
    assert 0.85 < r[np.argmax(g)] < 1.15  # the O-H bond peak
    bad = run_md_for_model("demo-gfn1-strong", box,
                           MDSettings(steps=200, timestep_fs=8.0, temperature_k=600, interval=5))
    assert bad.failure is not None and bad.survived_steps < 200
    assert "temperature ran away" in bad.failure or "collapsed" in bad.failure
    with pytest.raises(MDError, match="timestep_fs"):
        MDSettings(timestep_fs=-1).check()


def test_md_on_the_queue_and_cli(demo, weak_model, strong_model):
    s = MDSettings(steps=10, interval=5)
    recs = jobs.submit_md({"weak": weak_model, "strong": strong_model}, demo["water_test"], s)
    assert len({r.sweep for r in recs}) == 1
    for r in recs:
        done = jobs.wait(r.id, timeout=300)
        assert done.status == "done", done.reason
        result = json.loads((Workspace().runs / r.id / "result.json").read_text())
        assert result["survived_steps"] == 10
    out = subprocess.run(mlipft_cmd() + ["md", "demo-gfn1-weak", demo["water_test"], "--steps",
                                         "10", "--temperature", "300", "--timestep", "0.5",
                                         "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["survived_steps"] == 10 and d["failure"] is None and d["steps_per_second"] > 0
    assert set(d["rdf"]) == {"H-H", "H-O", "O-O"}
    bad = subprocess.run(mlipft_cmd() + ["md", "demo-gfn1-weak", "/no/such.xyz", "--steps", "1",
                                         "--temperature", "300", "--timestep", "0.5"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "cannot read a structure" in bad.stderr


def test_md_run_can_be_cancelled(demo, weak_model):
    import time

    rec = jobs.submit_md({"weak": weak_model}, demo["water_test"],
                         MDSettings(steps=100000, interval=10))[0]
    deadline = time.time() + 120
    while jobs.md_progress(jobs.get_run(rec.id)) == 0 and time.time() < deadline:
        time.sleep(0.5)
    assert jobs.get_run(rec.id).status == "running"
    jobs.cancel(rec.id)
    final = jobs.wait(rec.id, timeout=120)
    assert final.status == "cancelled"
    assert final.metrics["survived_steps"] is None or final.metrics["survived_steps"] < 100000
