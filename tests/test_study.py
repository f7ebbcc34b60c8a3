"""Learning-rate pilot (mlipft tune) and the study (mlipft study, Study page) with real
mace_run_train runs on small subsets of the demo world."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from ase.io import read, write
from streamlit.testing.v1 import AppTest

from mlipft_core import jobs
from mlipft_core import study as studymod
from mlipft_core.tune import TuneError, pilot_specs
from mlipft_core.strategies import RunSpec
from mlipft_core.workspace import Workspace

from conftest import mlipft_cmd

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def subsets(tmp_path, demo):
    write(tmp_path / "train.xyz", read(demo["sn2_train"], ":40"))
    write(tmp_path / "valid.xyz", read(demo["sn2_valid"], ":8"))
    write(tmp_path / "test.xyz", read(demo["sn2_test"], ":12"))
    write(tmp_path / "pretrain.xyz", read(demo["pretrain_test"], ":20"))
    write(tmp_path / "replay.xyz", read(demo["replay_pool"], ":30"))
    write(tmp_path / "short.xyz", read(demo["short_range_test"], "::5"))
    return tmp_path


def test_tune_returns_the_best_value_it_ran(subsets, weak_model):
    out = subprocess.run(mlipft_cmd() + [
        "tune", "--strategy", "naive", "--model", weak_model,
        "--train", str(subsets / "train.xyz"), "--valid", str(subsets / "valid.xyz"),
        "--lrs", "1e-4,1e-2", "--epochs", "1", "--json"],
        capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["strategy"] == "naive" and d["epochs"] == 1
    assert [r["lr"] for r in d["results"]] == [1e-4, 1e-2]
    scored = [r for r in d["results"] if r["valid_forces_rmse_mev_per_a"] is not None]
    assert len(scored) == 2 and all(r["status"] == "done" for r in scored)
    assert all(math.isfinite(r["valid_energy_rmse_mev_per_atom"]) for r in scored)
    best = min(scored, key=lambda r: r["valid_forces_rmse_mev_per_a"])
    assert d["best_lr"] == best["lr"]
    # the pilot runs are ordinary runs of the workspace, at the pilot's length
    runs = {r.id: r for r in jobs.list_runs()}
    for r in d["results"]:
        rec = runs[r["run_id"]]
        assert rec.sweep == d["sweep"] and rec.spec["settings"]["max_num_epochs"] == 1
        assert rec.spec["settings"]["lr"] == r["lr"]


def test_pilot_refuses_bad_grids(subsets, weak_model):
    spec = RunSpec("naive", weak_model, str(subsets / "train.xyz"))
    with pytest.raises(TuneError, match="at least two"):
        pilot_specs(spec, [1e-3])
    with pytest.raises(TuneError, match="positive"):
        pilot_specs(spec, [1e-3, -1.0])
    specs = pilot_specs(spec, [1e-2, 1e-3, 1e-3])
    assert [s.settings["lr"] for s in specs] == [1e-3, 1e-2]
    assert all(s.settings["max_num_epochs"] == 5 for s in specs)  # a quarter of 20


def test_applied_pilot_is_recorded_with_the_run(subsets, weak_model):
    record = {"pilot_sweep": "tune-naive-x", "best_lr": 3e-3, "epochs": 5, "grid": [1e-3, 3e-3]}
    plan = jobs.expand_sweep({"naive": {"lr": 3e-3}, "lora": {}}, foundation_model=weak_model,
                             train_file=str(subsets / "train.xyz"),
                             tuning={"naive": record, "lora": record})
    by = {s.strategy: s for s in plan.specs}
    assert by["naive"].tuning == record
    assert by["lora"].tuning is None  # lora runs at its own default, not the tuned value


def _study_cmd(subsets, demo, weak_model, strong_model, *extra):
    return mlipft_cmd() + [
        "study", "--model", strong_model, "--weak-model", weak_model,
        "--train", str(subsets / "train.xyz"), "--valid", str(subsets / "valid.xyz"),
        "--test", str(subsets / "test.xyz"), "--pretrain", str(subsets / "pretrain.xyz"),
        "--replay", str(subsets / "replay.xyz"), "--isolated-file", demo["sn2_isolated_atoms"],
        "--short-range-test", str(subsets / "short.xyz"),
        "--strategies", "naive,multihead-replay", "--lrs", "1e-3,1e-2", "--pilot-epochs", "1",
        "--epochs", "1", "--small-size", "10", "--json", *extra]


def test_study_end_to_end_resumes_and_shows_on_its_page(subsets, demo, weak_model,
                                                        strong_model):
    # started without waiting, then resumed by a second command: nothing runs twice
    first = subprocess.run(_study_cmd(subsets, demo, weak_model, strong_model, "--no-wait"),
                           capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    started = json.loads(first.stdout)
    assert started["stage"] == "pilots" and set(started["pilots"]) == {"naive",
                                                                       "multihead-replay"}
    n_runs = len(jobs.list_runs())
    assert n_runs == 4  # 2 strategies x 2 learning rates
    out = subprocess.run(_study_cmd(subsets, demo, weak_model, strong_model, "--poll", "1"),
                         capture_output=True, text=True, timeout=1500)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["id"] == started["id"] and d["stage"] == "done"
    # pilots once; finals: 2 strategies + average-E0 naive + weak-FM naive + 2 small-data runs
    assert len(jobs.list_runs()) == n_runs + 6
    assert set(d["tuned"]) == {"naive", "multihead-replay"}
    assert all(lr in (1e-3, 1e-2) for lr in d["tuned"].values())
    assert [f["number"] for f in d["findings"]] == [1, 2, 3, 4, 5, 6]
    for f in d["findings"]:
        assert f["reproduced"] in (True, False), f  # every finding measured
        assert any(ch.isdigit() for ch in f["summary"]) and f["teaching"] and f["runs"]
    # finding 6 probes the held-out compressed structures with every model
    f6 = d["findings"][5]
    probed = {r["model"]: r for r in f6["table"]}
    assert set(probed) == {"Foundation model", "Naive fine-tuning",
                           "Multihead replay, target head", "Multihead replay, pretraining head"}
    # probed on the structures whose elements every model covers (the replay file lacks N)
    shared = [a for a in read(subsets / "short.xyz", ":") if "N" not in a.get_chemical_symbols()]
    assert all(0 <= r["soft spots (structures)"] <= len(shared) for r in probed.values())
    assert probed["Foundation model"]["soft spots added vs foundation (points)"] == 0
    assert f"On {len(shared)} compressed structures" in f6["summary"]
    assert d["extra"]["dimer_walls"] and "pair" in d["extra"]["dimer_walls"][0]
    # the anchored E0s are physical; 'average' ones are not
    iso = d["e0"]["isolated"]
    assert all(abs(d["e0"]["anchored"][e] - iso[e]) < 5 for e in iso)
    assert max(abs(d["e0"]["average"][e] - iso[e]) for e in iso) > 100
    # the page shows the same findings
    Workspace().set(study=d["id"])
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(str(Path(APP).parent / "views" / "study.py"))
    at.run()
    assert not at.exception, at.exception
    assert any(s.value.startswith("Findings:") for s in at.subheader)
    shown = " ".join(m.value for m in at.markdown)
    for f in d["findings"]:
        assert f"{f['number']}. {f['title']}" in shown
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert len(charts) >= 7  # E0s, findings 2, 3, 5, pilots, soft spots, a dimer
    soft = next(c for c in charts if "Soft spots on held-out" in c)
    assert '"orientation":"h"' in soft.replace(" ", "")  # long labels lie horizontally
    # another probe set re-analyses the finished study; nothing runs again
    write(subsets / "short2.xyz", read(demo["short_range_test"], "1::4"))
    n_now = len(jobs.list_runs())
    inputs = studymod.StudyInputs(**{**studymod.load(d["id"]).inputs.__dict__,
                                     "short_range_test": str(subsets / "short2.xyz")})
    assert inputs.study_id() == d["id"]  # the probe is not part of the study's identity
    again = studymod.start(inputs)
    assert again.id == d["id"] and again.stage == "done" and len(jobs.list_runs()) == n_now
    shared2 = [a for a in read(subsets / "short2.xyz", ":")
               if "N" not in a.get_chemical_symbols()]
    assert f"On {len(shared2)} compressed structures" in again.findings[5].summary
    # an empty probe keeps the study's own
    assert studymod.start(studymod.StudyInputs(**{**inputs.__dict__, "short_range_test": None})
                          ).inputs.short_range_test == str(subsets / "short2.xyz")


def test_study_page_starts_a_study_and_shows_progress(subsets, demo, weak_model):
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(str(Path(APP).parent / "views" / "study.py"))
    at.run()
    assert not at.exception, at.exception
    assert any("Run the study" in b.label for b in at.button)
    # a bad path is refused with a message, not a traceback
    at.text_input[0].set_value(str(subsets / "missing.model")).run()
    assert not at.exception
    assert any("not found" in e.value for e in at.error)
    with pytest.raises(studymod.StudyError, match="file not found"):
        studymod.start(studymod.demo_inputs(weak_model=str(subsets / "missing.model")))


def _probe(model: str, soft_percent: float, n: int = 100) -> dict:
    return {"model": model, "n_structures": n, "forces_rmse_ev_per_a": 10.0,
            "median_force_kept": 0.9, "soft_spots": round(soft_percent * n / 100),
            "soft_share_percent": soft_percent, "n_left_out": 0, "n_weak_forces": 0}


def test_short_range_finding_verdicts(demo):
    """Finding 6 from hand-made probe results: the margins, the fallbacks, the wording."""
    study = studymod.Study("study-x", studymod.demo_inputs(), "analysis", 0.0,
                           finals={"naive": "r1", "multihead-replay": "r2"})

    def finding(naive: float, replay: float, **kw):
        probe = [_probe("foundation", 4.0), _probe("naive", naive),
                 _probe("multihead-replay [Default]", replay),
                 _probe("multihead-replay [pt_head]", replay)]
        return studymod._finding_repulsion(study, {}, [], True, probe, **kw)

    yes = finding(19.0, 4.0)
    assert yes.reproduced is True and "Reproduced" in yes.summary
    assert [r["model"] for r in yes.table] == [
        "Foundation model", "Naive fine-tuning", "Multihead replay, target head",
        "Multihead replay, pretraining head"]
    assert yes.table[1]["soft spots added vs foundation (points)"] == 15.0
    assert finding(8.0, 4.0).reproduced is False  # naive added less than 5 points
    softened_too = finding(19.0, 12.0)
    assert softened_too.reproduced is False and "replay softened it too" in softened_too.summary
    # without a probe: the dimer walls alone, or nothing to measure
    walls = {"C-C": {"foundation": {"wall_ev": 100.0, "verdict": "kept"},
                     "naive": {"wall_ev": 0.5, "verdict": "lost"},
                     "multihead-replay [Default]": {"wall_ev": 99.0, "verdict": "kept"}}}
    by_walls = studymod._finding_repulsion(study, walls, ["C-C"], True, None)
    assert by_walls.reproduced is True and "lost C-C" in by_walls.summary
    none = studymod._finding_repulsion(study, {}, [], True, None,
                                       "The short-range structures could not be probed: x. ")
    assert none.reproduced is None and none.summary.startswith("The short-range structures")
    assert studymod.display_name("multihead-replay [pt_head]", plot=True) == \
        "Multihead replay [pretraining head]"
    assert studymod.display_name("reference [GFN1-xTB]") == "reference [GFN1-xTB]"
