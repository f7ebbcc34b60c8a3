"""Molecular dynamics: stability checks, RDF normalisation, EMD, the queue, CLI and page."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pytest
from ase import Atoms
from ase.io import read

from conftest import mlipft_cmd
from mlipft_core import jobs
from mlipft_core.md import (
    MDError,
    MDSettings,
    emd,
    rdf,
    relative_energy_mev_per_atom,
    run_md_for_model,
    settle_rule_text,
    summarise_temperature,
    temperature_notes,
)
from mlipft_core.workspace import Workspace


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
    counted = np.mean([(np.sum(f.get_all_distances(mic=True) < 5) - 400) / 400
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
    # the words about its temperature say what the numbers do (seed 0: the water box heats up)
    assert ok.n_atoms == len(box)
    summary = summarise_temperature(ok.time_fs, ok.temperature_k, 300.0, n_atoms=ok.n_atoms)
    assert_words_match(summary, ok.time_fs, ok.temperature_k, 300.0)
    assert summary.direction == "rose" and max(ok.temperature_k) > 300.0 + summary.tolerance_k
    assert " rises to " in summary.text and "falls" not in summary.text
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


@pytest.mark.slow
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
    rec = jobs.submit_md({"weak": weak_model}, demo["water_test"],
                         MDSettings(steps=100000, interval=10))[0]
    deadline = time.time() + 120
    while jobs.md_progress(jobs.get_run(rec.id)) == 0 and time.time() < deadline:
        time.sleep(0.5)
    assert jobs.get_run(rec.id).status == "running"
    jobs.cancel(rec.id)
    final = jobs.wait(rec.id, timeout=120)
    assert final.status == "cancelled"
    # the run stops at its next recorded frame and keeps what it simulated
    assert final.metrics["failure"] == "cancelled by the user"
    assert final.metrics["steps"] == 100000
    assert 10 <= final.metrics["survived_steps"] < 100000
    assert final.metrics["survived_steps"] % 10 == 0  # whole recording intervals


def assert_words_match(summary, times, temps, target):
    """The sentence names the start, the extreme and (settled or not) what the numbers say."""
    temps, times = np.asarray(temps, float), np.asarray(times, float)
    i = int(np.argmax(np.abs(temps - target)))
    assert summary.start_k == pytest.approx(temps[0])
    assert summary.extreme_k == pytest.approx(temps[i])
    assert summary.text.startswith(f"starts at {temps[0]:.0f} K")
    inside = np.abs(temps - target) <= summary.tolerance_k
    if summary.direction != "steady":
        assert f"to {temps[i]:.0f} K at {times[i]:.4g} fs" in summary.text
        assert summary.direction == ("rose" if temps[i] > target else "fell")
    if summary.settled:
        j = np.searchsorted(times, summary.settled_time_fs)
        assert inside[j:].all() and not inside[j - 1] if j > 0 else inside.all()
        assert "has not settled" not in summary.text
    else:
        assert "has not settled" in summary.text and "settles within" not in summary.text
    assert f"±{summary.tolerance_k:.0f} K of the {target:g} K target" in summary.text


def test_temperature_words_for_a_rising_and_a_falling_trace():
    t = [5.0 * i for i in range(21)]
    # as on the page: starts at 300 K, climbs to 500-600 K and stays above for the whole run
    rising = [300, 513, 396, 555, 469, 483, 491, 484, 436, 575, 468, 593, 468, 533, 455, 491,
              451, 437, 430, 444, 450]
    up = summarise_temperature(t, rising, 300.0, n_atoms=96)
    assert_words_match(up, t, rising, 300.0)
    assert up.direction == "rose" and not up.settled and up.settled_time_fs is None
    assert up.tolerance_k == pytest.approx(3 * 300 * np.sqrt(2 / (3 * 96)))  # 75 K
    assert up.end_k == pytest.approx(np.mean(rising[-6:]))
    assert up.text == ("starts at 300 K, rises to 593 K at 55 fs, and has not settled within "
                       "±75 K of the 300 K target by the end of the run (100 fs): over the "
                       "last 25 fs it averages 450 K, above the target.")
    # the classic picture: falls to about half, then the thermostat brings it back
    falling = [300, 200, 160, 150, 170, 200, 240, 270, 290, 300, 305, 298, 302, 299, 301, 300,
               297, 303, 300, 299, 301]
    down = summarise_temperature(t, falling, 300.0, tolerance_k=20.0)
    assert_words_match(down, t, falling, 300.0)
    assert down.direction == "fell" and down.settled and down.settled_time_fs == 40.0
    assert down.extreme_k == 150 and down.extreme_time_fs == 15.0
    assert down.text.startswith("starts at 300 K, falls to 150 K at 15 fs, and settles within "
                                "±20 K of the 300 K target from 40 fs on")
    # a trace that never leaves the band, and one that is back inside only at the very end
    calm = summarise_temperature(t[:5], [300, 310, 290, 305, 298], 300.0)
    assert calm.direction == "steady" and calm.settled and "stays within ±30 K" in calm.text
    late = summarise_temperature(t[:8], [300, 500, 520, 510, 505, 490, 480, 310], 300.0)
    assert late.direction == "rose" and not late.settled and "has not settled" in late.text
    with pytest.raises(MDError, match="as many times"):
        summarise_temperature([0.0, 1.0], [300.0], 300.0)
    notes = " ".join(temperature_notes([up, down], MDSettings(steps=200)))
    assert "A rise" in notes and "A fall" in notes and "time constant of about 100 fs" in notes
    assert "A fall" not in " ".join(temperature_notes([up], MDSettings(steps=200)))
    assert "no thermostat" in " ".join(temperature_notes([up], MDSettings(ensemble="nve")))
    assert "±75 K of the 300 K target" in settle_rule_text(300.0, 96)


def test_energy_traces_of_models_far_apart_each_show_their_variation():
    from mlipft_ui.plots import md_traces

    t = [0.0, 5.0, 10.0, 15.0]
    strong = [-5028.34, -5031.07, -5029.52, -5031.59]    # eV, 96 atoms
    other = [-4938.0, -4938.9, -4937.6, -4939.2]          # 90 eV higher (other E0s)
    series = {"strong": (t, relative_energy_mev_per_atom(strong, 96)),
              "other": (t, relative_energy_mev_per_atom(other, 96))}
    fig = md_traces(series, title="potential energy, relative to the first frame",
                    ylabel="potential energy − first frame (meV/atom)")
    ys = {tr.name: np.array(tr.y) for tr in fig.data}
    assert set(ys) == {"strong", "other"}
    for name, e in (("strong", strong), ("other", other)):
        assert ys[name][0] == 0.0
        assert ys[name] == pytest.approx((np.array(e) - e[0]) * 1000 / 96)
        # each model's swing fills a good part of the shared axis: not flattened by the offset
        span_all = max(y.max() for y in ys.values()) - min(y.min() for y in ys.values())
        assert np.ptp(ys[name]) > 0.3 * span_all
    assert "meV/atom" in fig.layout.yaxis.title.text
    assert "first frame" in fig.layout.yaxis.title.text
    assert fig.layout.xaxis.title.text == "time (fs)"
    assert relative_energy_mev_per_atom([], 96) == []
    # a model whose trace lies on another's is drawn dashed on top and says so
    twin = [e + 0.0001 for e in strong]
    fig = md_traces({"strong": (t, relative_energy_mev_per_atom(strong, 96)),
                     "twin": (t, relative_energy_mev_per_atom(twin, 96)),
                     "other": (t, relative_energy_mev_per_atom(other, 96))},
                    title="potential energy", ylabel="ΔE from the first frame (meV/atom)")
    names = {tr.legendgroup: tr.name for tr in fig.data}
    assert names == {"strong": "strong", "twin": "twin (≈ strong)", "other": "other"}
    assert next(tr for tr in fig.data if tr.legendgroup == "twin").line.dash == "dash"
