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

from conftest import mlipft_cmd
from mlipft_core import findings, jobs, tune
from mlipft_core import study as studymod
from mlipft_core.compare import ComparisonRow
from mlipft_core.strategies import STRATEGIES, RunSpec
from mlipft_core.tune import TuneError, pilot_specs
from mlipft_core.workspace import Workspace

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
        "--epochs", "1", "--small-size", "10", "--search-structures", "4", "--json", *extra]


@pytest.mark.slow
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
    assert [f["key"] for f in d["findings"]] == ["e0", "scratch", "retention", "close",
                                                 "foundation", "repulsion"]
    for f in d["findings"]:
        assert isinstance(f["reproduced"], bool), f  # every finding measured
        assert any(ch.isdigit() for ch in f["summary"]) and f["teaching"] and f["runs"]
    # each verdict is the one its own numbers give, and its summary quotes them
    check_verdicts(d)
    # the short-range finding probes the held-out compressed structures with every model
    f6 = finding_of(d, "repulsion")
    probed = {r["model"]: r for r in f6["table"]}
    assert set(probed) == {"Foundation model", "Naive fine-tuning",
                           "Multihead replay, target head", "Multihead replay, pretraining head"}
    # probed on the structures whose elements every model covers (the replay file lacks N)
    shared = [a for a in read(subsets / "short.xyz", ":") if "N" not in a.get_chemical_symbols()]
    assert all(0 <= r["soft spots (structures)"] <= len(shared) for r in probed.values())
    assert probed["Foundation model"]["soft spots added vs foundation (points)"] == 0
    assert f"On {len(shared)} compressed structures" in f6["summary"]
    assert d["extra"]["dimer_walls"] and "pair" in d["extra"]["dimer_walls"][0]
    check_wall_words(f6["summary"], d["extra"]["dimer_walls"])
    # the analysis was a step of its own, told as it went and recorded when done
    analysed = [ln for ln in out.stderr.splitlines() if "Analysis, step " in ln]
    n = d["analysis"]["steps"]
    assert d["analysis"]["step"] == n and d["analysis"]["seconds"] > 0
    assert any(f"Analysis, step 1 of {n}: comparing the models" in ln for ln in analysed)
    assert any(f"Analysis, step {n} of {n}: stating the six findings" in ln for ln in analysed)
    assert studymod.progress(studymod.load(d["id"])).text.startswith(
        f"Done: 10 runs, then the analysis ({n} steps, ")
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
    assert f"On {len(shared2)} compressed structures" in next(
        f for f in again.findings if f.key == "repulsion").summary
    # an empty probe keeps the study's own
    assert studymod.start(studymod.StudyInputs(**{**inputs.__dict__, "short_range_test": None})
                          ).inputs.short_range_test == str(subsets / "short2.xyz")


def finding_of(d: dict, key: str) -> dict:
    """The finding ``key`` of a study's JSON."""
    return next(f for f in d["findings"] if f["key"] == key)


def quoted(v: float, unit: str = "meV/Å") -> str:
    """A number as a summary quotes it."""
    return f"{v:,.1f} {unit}"


def check_verdicts(d: dict) -> None:
    """Every finding's verdict follows from its own table (and the study's ``extra``) by the
    rule its module documents, and its summary quotes the numbers it is computed from."""
    # E0s: 'average' E0s' pretraining error at least E0_FACTOR x the anchored run's
    f, e = finding_of(d, "e0"), d["extra"]["e0_runs"]
    ratio = e["average"]["pretrain_e"] / e["anchored"]["pretrain_e"]
    assert f["reproduced"] == (ratio >= studymod.E0_FACTOR), (ratio, f)
    assert f"({ratio:.1f}× the anchored run's)" in f["summary"], f["summary"]
    assert quoted(e["anchored"]["pretrain_e"], "meV/atom") in f["summary"]
    assert quoted(e["average"]["pretrain_e"], "meV/atom") in f["summary"]
    assert math.isclose(f["numbers"]["pretrain_ratio"], ratio)
    assert {r["element"] for r in f["table"]} == set(d["e0"]["anchored"])
    # small data: the fine-tune's target force error below the model from scratch's
    f = finding_of(d, "scratch")
    rmse = {r["model"]: r["target force RMSE (meV/Å)"] for r in f["table"]}
    assert f["reproduced"] == (rmse["naive fine-tune"] < rmse["from scratch"]), f
    assert all(quoted(v) in f["summary"] for v in rmse.values()), f["summary"]
    assert all(r["training structures"] == 10 for r in f["table"])
    # forgetting: the lowest forgetting ratio is a replay strategy's; the table has every
    # strategy whose pretraining head (or only head) has one, lowest first
    f = finding_of(d, "retention")
    ratios = [r["forgetting ratio"] for r in f["table"]]

    def pt_ratio(name: str) -> float | None:
        heads = {r["head"]: r for r in d["extra"]["rows"] if r["name"] == name}
        row = heads.get("pt_head") or next(iter(heads.values()), None)
        return None if row is None else row["forgetting_ratio"]

    measured = [x for s in d["inputs"]["strategies"] if (x := pt_ratio(s)) is not None]
    assert ratios and ratios == sorted(measured) and all(x > 0 for x in ratios), f
    replay = {STRATEGIES[s].title for s in studymod.REPLAY}
    assert f["reproduced"] == (f["table"][0]["strategy"] in replay), f
    assert f"Lowest forgetting ratio: {f['table'][0]['strategy']} ({ratios[0]:.2f})" in \
        f["summary"], f["summary"]
    # replay close to naive: within CLOSE_FACTOR of naive's target force error
    f = finding_of(d, "close")
    rmse = {r["strategy"]: r["target force RMSE (meV/Å)"] for r in f["table"]}
    ratio = rmse["Multihead replay"] / rmse["Naive fine-tuning"]
    assert f["reproduced"] == (ratio <= studymod.CLOSE_FACTOR), (ratio, f)
    assert f"{ratio:.2f}× naive's" in f["summary"], f["summary"]
    assert all(quoted(v) in f["summary"] for v in rmse.values()), f["summary"]
    # foundation-model quality: the strong model's fine-tune below the weak one's
    f = finding_of(d, "foundation")
    rmse = {r["foundation model"]: r["after naive fine-tuning (meV/Å)"] for r in f["table"]}
    assert f["reproduced"] == (rmse["strong"] < rmse["weak"]), f
    assert all(quoted(v) in f["summary"] for v in rmse.values()), f["summary"]
    # short range: the level from the random structure search, the probe and the walls
    f = finding_of(d, "repulsion")
    share = {r["model"]: r["soft spots (% of structures)"] for r in f["table"]}
    naive_up = share["Naive fine-tuning"] - share["Foundation model"]
    searched = {r["model"]: r for r in d["extra"]["search"]}
    fm_c = searched["Foundation model"]["collapsed (% of structures)"]
    naive_c = searched["Naive fine-tuning"]["collapsed (% of structures)"] - fm_c
    replay_c = searched["Multihead replay, target head"]["collapsed (% of structures)"] - fm_c
    lost_walls = [w["pair"] for w in d["extra"]["dimer_walls"]
                  if w.get("naive") == "lost" and w.get("foundation") == "kept"]
    margin = findings.by_key("repulsion").COLLAPSE_MARGIN_PERCENT
    level = ("lost" if naive_c >= margin else "softened"
             if naive_up >= studymod.SOFT_SPOT_MARGIN_PERCENT or lost_walls else "kept")
    assert f["level"] == level, f
    assert f["reproduced"] == (level == "lost" and replay_c < margin)
    assert set(f["collapses"]) == {"foundation", "naive", "multihead-replay [Default]"}
    for label, c in f["collapses"].items():
        row = searched[findings.display_name(label)]
        assert (c["structures"], c["collapsed"]) == (row["structures searched"],
                                                     row["collapsed"])
        assert f"{c['collapsed']} of {c['structures']}" in f["summary"]
    for r in f["table"]:
        if r["model"] != "Multihead replay, pretraining head":
            assert f"with {r['soft spots (structures)']} soft spots " \
                   f"({r['soft spots (% of structures)']:.0f}%)" in f["summary"], f["summary"]


def test_study_page_starts_a_study_and_shows_progress(subsets, demo, weak_model):
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(str(Path(APP).parent / "views" / "study.py"))
    at.run()
    assert not at.exception, at.exception
    assert any("Run the study" in b.label for b in at.button)
    # a bad path is refused with a message, not a traceback
    at.text_input(key="study_weak_model").set_value(str(subsets / "missing.model")).run()
    assert not at.exception
    assert any("not found" in e.value for e in at.error)
    with pytest.raises(studymod.StudyError, match="file not found"):
        studymod.start(studymod.demo_inputs(weak_model=str(subsets / "missing.model")))


def _probe(model: str, soft_percent: float, n: int = 100) -> dict:
    return {"model": model, "n_structures": n, "forces_rmse_ev_per_a": 10.0,
            "median_force_kept": 0.9, "soft_spots": round(soft_percent * n / 100),
            "soft_share_percent": soft_percent, "n_left_out": 0, "n_weak_forces": 0}


def _search(model: str, collapsed: int, n: int = 40) -> dict:
    return {"model": model, "structures": n, "collapsed": collapsed,
            "collapsed_percent": round(100 * collapsed / n, 1), "median_closest": 0.9,
            "median_final": 0.95, "closest": [], "final": []}


def test_short_range_finding_verdicts(demo):
    """Finding 6 from hand-made search and probe results: the three levels, the margins, the
    fallbacks, the wording."""
    study = studymod.Study("study-x", studymod.demo_inputs(), "analysis", 0.0,
                           finals={"naive": "r1", "multihead-replay": "r2"})

    def finding(naive: float, replay: float, collapsed=(0, 0, 0), **kw):
        probe = [_probe("foundation", 4.0), _probe("naive", naive),
                 _probe("multihead-replay [Default]", replay),
                 _probe("multihead-replay [pt_head]", replay)]
        search = [_search("foundation", collapsed[0]), _search("naive", collapsed[1]),
                  _search("multihead-replay [Default]", collapsed[2])]
        return studymod._finding_repulsion(study, {}, [], True, probe, search=search,
                                           search_elements=["C", "H"], **kw)

    # naive collapses in 3 of 40 more than the foundation model (7.5 points), replay does not
    lost = finding(19.0, 4.0, (1, 4, 1))
    assert lost.reproduced is True and lost.level == "lost"
    assert lost.numbers["naive_collapse_added"] == 7.5
    assert "Collapsed: foundation model 1 of 40, naive fine-tuning 4 of 40, multihead replay " \
           "(target head) 1 of 40" in lost.summary and "Reproduced" in lost.summary
    assert lost.collapses["naive"] == {"structures": 40, "collapsed": 4, "median_closest": 0.9}
    search_table = next(t for t in lost.tables if t.name == "search")
    assert [r["collapsed"] for r in search_table.rows] == [1, 4, 1]
    # one more collapse (2.5 points) is under the margin: softened by the probe, not lost
    soft = finding(19.0, 4.0, (1, 2, 1))
    assert soft.level == "softened" and soft.reproduced is False
    assert "Softened, not lost: naive fine-tuning added 15.0 points of soft spots " \
           "(multihead replay +0.0)" in soft.summary
    assert "exceeded the foundation model's by 2.5 points of the searched structures" in \
        soft.summary
    assert "closest approach (median) 0.90, 0.90 and 0.90 of the covalent-radii sum" in \
        soft.summary
    assert [r["model"] for r in soft.table] == [
        "Foundation model", "Naive fine-tuning", "Multihead replay, target head",
        "Multihead replay, pretraining head"]
    assert soft.table[1]["soft spots added vs foundation (points)"] == 15.0
    kept = finding(8.0, 4.0)  # naive added 4 points of soft spots, under the margin
    assert kept.level == "kept" and kept.reproduced is False and kept.summary.count("Kept")
    both = finding(19.0, 12.0, (0, 4, 4))  # replay collapses as often
    assert both.level == "lost" and both.reproduced is False
    assert "multihead replay collapsed as well" in both.summary
    # without a search or a probe: the dimer walls alone give a softening at most
    walls = {"C-C": {"foundation": {"wall_ev": 100.0, "verdict": "kept"},
                     "naive": {"wall_ev": 0.5, "verdict": "lost"},
                     "multihead-replay [Default]": {"wall_ev": 99.0, "verdict": "kept"}}}
    by_walls = studymod._finding_repulsion(study, walls, ["C-C"], True, None)
    assert by_walls.level == "softened" and by_walls.reproduced is False
    assert "lost C-C" in by_walls.summary and "no random structure search ran" in \
        by_walls.summary
    none = studymod._finding_repulsion(study, {}, [], True, None,
                                       "The short-range structures could not be probed: x. ")
    assert none.reproduced is None and none.summary.startswith("The short-range structures")
    assert studymod.display_name("multihead-replay [pt_head]", plot=True) == \
        "Multihead replay [pretraining head]"
    assert studymod.display_name("reference [GFN1-xTB]") == "reference [GFN1-xTB]"


def _row(name: str, head: str = "Default", *, target_f: float | None = None,
         target_e: float | None = None, pretrain_e: float | None = None,
         forgetting: float | None = None):
    return ComparisonRow(name, head, None, target_e, target_f, pretrain_e, None, forgetting)


def test_findings_follow_their_rules(demo):
    """Findings 1-5 from hand-made comparison rows: each verdict flips where its rule says,
    and the page finds each by its key, with its plots."""
    study = studymod.Study("study-x", studymod.demo_inputs(strategies=[
        "naive", "multihead-replay"]), "analysis", 0.0,
        e0={"anchored": {"C": -1.0}, "average": {"C": -2.0}},
        tuned={"naive": 1e-3, "multihead-replay": 3e-3},
        finals={r: f"r-{r}" for r in studymod.final_roles(studymod.demo_inputs())})

    def stated(naive_pt=10.0, average_pt=25.0, small=(50.0, 80.0), replay_f=12.0,
               replay_forgets=1.1, weak_f=20.0) -> dict[str, studymod.Finding]:
        rows = [_row("foundation", target_f=30.0),
                _row("weak foundation", target_f=60.0),
                _row("naive", target_f=10.0, target_e=1.0, pretrain_e=naive_pt,
                     forgetting=2.0),
                _row("naive-average-e0", target_f=10.5, target_e=1.1, pretrain_e=average_pt),
                _row("naive-small", target_f=small[0]), _row("scratch-small", target_f=small[1]),
                _row("multihead-replay", target_f=replay_f),
                _row("multihead-replay", "pt_head", forgetting=replay_forgets),
                _row("naive-weak", target_f=weak_f)]
        out = findings.state_all(findings.Evidence(study, rows))
        return {f.key: f for f in out}

    f = stated()
    assert [x.number for x in f.values()] == [1, 2, 3, 4, 5, 6]
    assert all(f[k].reproduced is True for k in ("e0", "scratch", "retention", "close",
                                                 "foundation")), f
    assert f["e0"].numbers["pretrain_ratio"] == 2.5 and "(2.5× the anchored" in f["e0"].summary
    assert stated(average_pt=19.0)["e0"].reproduced is False  # below E0_FACTOR
    assert stated(small=(80.0, 50.0))["scratch"].reproduced is False
    assert stated(replay_forgets=2.5)["retention"].reproduced is False  # naive forgot less
    assert stated(replay_f=13.0)["close"].reproduced is True  # 1.3x: within the factor
    assert stated(replay_f=13.5)["close"].reproduced is False
    assert stated(weak_f=9.0)["foundation"].reproduced is False
    assert f["repulsion"].reproduced is None  # nothing probed
    # what the page draws, by name
    charts = {k: [c.name for c in x.charts] for k, x in f.items()}
    assert charts == {"e0": ["e0"], "scratch": ["scratch"], "retention": ["forgetting"],
                      "close": [], "foundation": ["foundation"], "repulsion": []}, charts
    assert f["scratch"].charts[0].series == {"naive fine-tune": 50.0, "from scratch": 80.0}
    assert f["retention"].digits == {"forgetting ratio": 2}


def _study_before_keys(ws: Workspace) -> str:
    """A finished study whose ``study.json`` has findings with numbers but no keys, nor
    plots, as studies were stored before findings had them."""
    study = studymod.Study("study-old", studymod.demo_inputs(), "done", 0.0,
                           extra={"e0_runs": {w: {"target_e": 1.0, "target_f": 2.0,
                                                  "pretrain_e": 3.0}
                                              for w in ("anchored", "average")},
                                  "dimers": {"C-H": {"foundation": [[0.5, 1.0], [9.0, 0.0]]}},
                                  "dimer_walls": [{"pair": "C-H", "foundation": "kept"}]})
    studymod.save(ws, study)
    path = ws.root / "studies" / "study-old" / "study.json"
    raw = json.loads(path.read_text())
    old = [{"number": 1, "title": "E0 choice matters", "claim": "c", "reproduced": True,
            "summary": "s", "teaching": "t", "table": [{"element": "C"}], "runs": [],
            "columns": ["element"]},
           {"number": 3, "title": "Multihead replay keeps pretraining accuracy best",
            "claim": "c", "reproduced": False, "summary": "s", "teaching": "t",
            "table": [{"strategy": "Naive fine-tuning", "head": "the only head",
                       "forgetting ratio": 1.5}], "runs": ["r1"]},
           {"number": 6, "title": "Naive loses short-range repulsion that replay keeps",
            "claim": "c", "reproduced": True, "summary": "s", "teaching": "t",
            "table": [{"model": "Foundation model", "soft spots (% of structures)": 4.0}],
            "runs": [], "columns": ["model", "soft spots (% of structures)"]}]
    path.write_text(json.dumps({**raw, "findings": old}))
    return study.id


def test_studies_analysed_before_findings_had_keys_still_read(demo):
    """Such a study reads with keys and plots, laid out again from its tables."""
    ws = Workspace()
    _study_before_keys(ws)
    back = studymod.load("study-old", ws)
    assert [(f.number, f.key) for f in back.findings] == [(1, "e0"), (3, "retention"),
                                                          (6, "repulsion")]
    assert [c.name for c in back.findings[0].charts] == ["e0"]
    assert back.findings[1].charts[0].series == {"Naive fine-tuning": 1.5}
    assert back.findings[1].columns == ["strategy", "head", "forgetting ratio"]
    six = back.findings[2]
    assert [c.name for c in six.charts] == ["soft_spots", "dimer"]
    assert six.charts[1].series == {"C-H": {"Foundation model": [[0.5, 1.0], [9.0, 0.0]]}}
    assert [t.name for t in six.tables] == ["walls"]
    # written again as it reads
    studymod.save(ws, back)
    assert studymod.load("study-old", ws).to_dict() == back.to_dict()


def test_the_page_draws_a_study_analysed_before_findings_had_keys(demo):
    ws = Workspace()
    ws.set(study=_study_before_keys(ws))
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(str(Path(APP).parent / "views" / "study.py"))
    at.run()
    assert not at.exception, at.exception
    shown = " ".join(m.value for m in at.markdown)
    assert "3. Multihead replay keeps pretraining accuracy best" in shown
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert len(charts) == 4  # E0s, forgetting, soft spots, the dimer
    assert at.selectbox(key="study_repulsion_dimer").value == "C-H"
    assert any("Walls: energy at 0.5 Å" in c.value for c in at.caption)


# ----------------------------------------------------------------- dimer walls in words
def _walls(changes: dict[str, tuple[float, float]]) -> dict:
    """Walls of a foundation model at 10 eV and naive/replay walls changed by the given
    percentages (pair -> (naive %, replay %)), as the analysis stores them."""
    out = {}
    for pair, (n, r) in changes.items():
        out[pair] = {"foundation": {"wall_ev": 10.0, "verdict": "kept"},
                     "naive": {"wall_ev": 10.0 * (1 + n / 100), "verdict": "kept"},
                     "multihead-replay [Default]": {"wall_ev": 10.0 * (1 + r / 100),
                                                    "verdict": "kept"}}
    return out


def check_wall_words(summary: str, wall_table: list[dict]) -> None:
    """The walls sentence of finding 6 says what the wall table's numbers say: the direction
    of every change, and the largest ones with their pairs."""
    for who, col in (("naive fine-tuning", "naive change vs foundation (%)"),
                     ("multihead replay", "replay change vs foundation (%)")):
        changes = {r["pair"]: r[col] for r in wall_table if r.get(col) is not None}
        if not changes or any(r.get("naive") == "lost" for r in wall_table):
            continue
        walls = summary.split("Dimer walls: ", 1)[1]
        clause = walls.split(f"{who} ", 1)[1].split(";")[0].split(". ")[0]
        up = {p: c for p, c in changes.items() if round(c, 1) > 0}
        down = {p: c for p, c in changes.items() if round(c, 1) < 0}
        if len(changes) > 1 and up and not down and len(up) == len(changes):
            lo, hi = min(up.values()), max(up.values())
            assert clause.startswith(f"raised every wall by {lo:.1f}"), clause
            assert f"{hi:.1f}%" in clause and "lowered" not in clause, clause
        if len(changes) > 1 and down and not up and len(down) == len(changes):
            assert clause.startswith("lowered every wall by"), clause
            assert f"{-min(down.values()):.1f}%" in clause and "raised" not in clause, clause
        if up and down:
            worst = min(down, key=down.get)
            assert clause.startswith(f"lowered {len(down)} of {len(changes)} walls"), clause
            assert f"{-down[worst]:.1f}% ({worst})" in clause, clause
            best = max(up, key=up.get)
            assert f"raised {len(up)}" in clause and f"{up[best]:.1f}% ({best})" in clause
        if not up:
            assert "raised" not in clause, clause
        if not down:
            assert "lowered" not in clause, clause


def test_wall_changes_are_told_as_the_table_shows_them(demo):
    study = studymod.Study("study-x", studymod.demo_inputs(), "analysis", 0.0,
                           finals={"naive": "r1", "multihead-replay": "r2"})

    def summary(changes: dict) -> tuple[str, list[dict]]:
        f = studymod._finding_repulsion(study, _walls(changes), list(changes), True, None)
        return f.summary, studymod._wall_table(_walls(changes), list(changes))

    # every wall went up: never "lowered by up to 0%"
    text, table = summary({"C-F": (22.5, 1.0), "C-H": (3.7, 2.0), "H-H": (10.0, 1.5)})
    assert "naive fine-tuning raised every wall by 3.7–22.5% (most: C-F)" in text, text
    assert "multihead replay raised every wall by 1.0–2.0% (most: C-H)" in text, text
    assert "lowered" not in text and " 0%" not in text
    check_wall_words(text, table)
    # every wall went down
    text, table = summary({"C-F": (-40.0, -1.0), "C-H": (-5.0, -2.0)})
    assert "naive fine-tuning lowered every wall by 5.0–40.0% (most: C-F)" in text, text
    check_wall_words(text, table)
    # some went down, some up
    text, table = summary({"C-F": (-12.0, 0.0), "C-H": (5.0, 0.0), "H-H": (2.0, 0.0)})
    assert ("naive fine-tuning lowered 1 of 3 walls, by 12.0% (C-F), and raised 2 by up to "
            "5.0% (C-H)") in text, text
    assert "multihead replay left every wall unchanged" in text, text
    check_wall_words(text, table)
    # one pair
    text, _ = summary({"C-F": (-3.0, 4.0)})
    assert "naive fine-tuning lowered the C-F wall by 3.0%" in text
    assert "multihead replay raised the C-F wall by 4.0%" in text


# ----------------------------------------------------------------- the plan and its estimate
def test_study_plan_counts_what_the_study_queues(subsets, demo, weak_model, strong_model):
    base = dict(model=strong_model, train=str(subsets / "train.xyz"),
                valid=str(subsets / "valid.xyz"), test=str(subsets / "test.xyz"),
                pretrain_test=str(subsets / "pretrain.xyz"), replay=str(subsets / "replay.xyz"),
                isolated_file=demo["sn2_isolated_atoms"], epochs=1, pilot_epochs=1,
                pilot_lrs=[1e-3, 1e-2], small_size=10,
                strategies=["naive", "multihead-replay"])
    with_weak = studymod.plan(studymod.StudyInputs(**base, weak_model=weak_model))
    without = studymod.plan(studymod.StudyInputs(**base))
    # the end-to-end study queues 4 pilot runs and 6 finals with a weaker model
    assert (with_weak.pilot_runs, len(with_weak.finals), with_weak.n_runs) == (4, 6, 10)
    assert len(without.finals) == 5 and "naive-weak" not in without.finals
    # the finals a study queues are the plan's: one list for both
    for inputs, p in ((studymod.StudyInputs(**base, weak_model=weak_model), with_weak),
                      (studymod.StudyInputs(**base), without)):
        study = studymod.Study("study-x", inputs, "finals", 0.0,
                               e0={"anchored": {}, "average": {}, "anchored_weak": {}},
                               pilots={s: "sweep" for s in inputs.strategies},
                               tuned={s: 1e-3 for s in inputs.strategies})
        assert list(studymod._final_specs(study)) == p.finals
        assert studymod.progress(study).runs_total == p.n_runs
    # the estimate is computed from the plan: runs, epochs and structures
    n = 40  # training structures
    replay = len(read(subsets / "replay.xyz", ":"))
    pilots = 2 * n * 1 + 2 * (n + replay) * 1
    finals = n + (n + replay) + n + n + 10 + 10
    assert with_weak.n_train == n and with_weak.structure_epochs == pilots + finals
    assert math.isclose(with_weak.cpu_seconds, 10 * studymod.CPU_SECONDS_PER_RUN
                        + studymod.CPU_SECONDS_PER_STRUCTURE_EPOCH * (pilots + finals))
    longer = studymod.plan(studymod.StudyInputs(**{**base, "epochs": 20}, weak_model=weak_model))
    assert math.isclose(longer.cpu_seconds - with_weak.cpu_seconds,
                        studymod.CPU_SECONDS_PER_STRUCTURE_EPOCH * 19 * finals)
    assert longer.seconds > with_weak.seconds
    # units in the right number
    text = with_weak.describe()
    assert "10 runs: 2 strategies × 2 learning rates × 1 epoch of pilots, then 6 final runs " \
           "of 1 epoch each" in text, text
    assert "1 epochs" not in text and "on CPU" in text
    assert "20 epochs each" in longer.describe() and "1 epochs" not in longer.describe()


def test_study_page_estimate_follows_the_plan(demo):
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(str(Path(APP).parent / "views" / "study.py"))
    at.run()
    assert not at.exception, at.exception

    def caption() -> str:
        return next(c.value for c in at.caption if "Estimated time" in c.value)

    default = caption()
    assert default.startswith(studymod.plan(studymod.demo_inputs()).describe())
    at.number_input(key="study_epochs").set_value(1).run()
    at.number_input(key="study_pilot_epochs").set_value(1).run()
    at.multiselect(key="study_strategies").set_value(["naive", "multihead-replay"]).run()
    small = caption()
    expected = studymod.plan(studymod.demo_inputs(
        epochs=1, pilot_epochs=1, strategies=["naive", "multihead-replay"]))
    assert small.startswith(expected.describe()), small
    assert f"{expected.n_runs} runs" in small and "1 epoch each" in small
    assert "1 epochs" not in small and small != default


# ----------------------------------------------------------------- the analysis as a step
def test_the_analysis_shows_its_steps_as_it_goes(subsets, demo, strong_model):
    """A real analysis (of a study whose final runs all failed: the foundation model alone)
    records each step in study.json; a page opened meanwhile shows that step."""
    inputs = studymod._absolute(studymod.StudyInputs(
        model=strong_model, train=str(subsets / "train.xyz"), valid=str(subsets / "valid.xyz"),
        test=str(subsets / "test.xyz"), pretrain_test=str(subsets / "pretrain.xyz"),
        replay=None, isolated_file=demo["sn2_isolated_atoms"],
        short_range_test=str(subsets / "short.xyz"), strategies=["naive"], epochs=1,
        pilot_epochs=1, pilot_lrs=[1e-3, 1e-2], small_size=10, search_structures=3))
    ws = Workspace()
    study = studymod.Study(inputs.study_id(), inputs, "analysis", 0.0,
                           e0=studymod._fit_e0s(inputs))
    studymod.save(ws, study)
    ws.set(study=study.id)
    told, shown = [], []

    def report(p: studymod.StudyProgress) -> None:
        stored = studymod.progress(studymod.load(study.id, ws), ws)  # what others read
        assert stored.text == p.text and stored.fraction == p.fraction
        told.append(p)
        if p.stage == "analysis" and p.step == 2 and not shown:
            # another page, while this analysis holds the study: it shows the step
            at = AppTest.from_file(APP, default_timeout=300)
            at.run()
            at.switch_page(str(Path(APP).parent / "views" / "study.py"))
            at.run()
            assert not at.exception, at.exception
            shown.extend(e.proto.text for e in at.get("progress"))

    done = studymod.advance(study.id, ws, report=report)
    assert done.stage == "done", done.message
    steps = [p.step for p in told if p.stage == "analysis"]
    n = told[0].steps
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == n
    pairs = {p.text.split("dimer curves of ")[1].split(" ")[0] for p in told
             if "dimer curves of" in p.text}
    # compare, each pair, the probe, the random structure search, the findings
    assert n == 1 + len(pairs) + 1 + 1 + 1
    assert any("the random structure search: relaxing" in p.text and "Foundation model" in p.text
               for p in told)
    assert all(p.text.startswith("All 6 runs ended. Analysis, step ") for p in told[:-1])
    assert any(f"step {n} of {n}: stating the six findings" in p.text for p in told)
    fractions = [p.fraction for p in told]
    assert fractions == sorted(fractions), [(p.step, p.analysed, p.text) for p in told]
    assert fractions[0] == 0 and fractions[-1] == 1 and any(0 < f < 1 for f in fractions)
    assert shown and shown[0].startswith(f"All 6 runs ended. Analysis, step 2 of {n}: "
                                         "dimer curves of"), shown
    # afterwards: done, with the analysis's length
    final = studymod.progress(studymod.load(study.id, ws), ws)
    assert final.stage == "done" and final.text.startswith(f"Done: 6 runs, then the analysis "
                                                           f"({n} steps, ")


# ----------------------------------------------------------------- the pilot's length
def test_pilot_caption_states_what_runs(tiny_split, weak_model):
    for epochs, words in ((2, "2 epochs each, the full length of a 2-epoch run"),
                          (20, "5 of 20 epochs each"), (1, "1 epoch each, the full length "
                                                           "of a 1-epoch run")):
        spec = RunSpec("naive", weak_model, "train.xyz", settings={"max_num_epochs": epochs})
        assert tune.pilot_length(spec) == words
        assert pilot_specs(spec)[0].settings["max_num_epochs"] == int(words.split()[0])
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(str(Path(APP).parent / "views" / "runs.py"))
    at.run()
    num = {n.label: n for n in at.number_input}
    num["Epochs"].set_value(2).run()
    assert not at.exception, at.exception
    text = " ".join(c.value for c in at.caption)
    assert "A pilot runs one strategy on your data at several learning rates around its " \
           "value in the table (2 epochs each, the full length of a 2-epoch run)" in text, text
    assert "quarter" not in text
    assert "Pilot: 5 runs, at 0.0001, 0.0003, 0.001, 0.003 and 0.01 (3 below the run's " \
           "0.003, 1 above), 2 epochs each, the full length of a 2-epoch run." in text
    num = {n.label: n for n in at.number_input}
    num["Epochs"].set_value(20).run()
    text = " ".join(c.value for c in at.caption)
    assert "(5 of 20 epochs each)" in text and "quarter" not in text


def test_the_demo_budget_note_says_what_its_table_measured():
    """The Study page's note on finding 6 for the demo world is computed from the bundled
    table of bench/collapse_budget.py: every figure it quotes is the table's, and a table
    with a collapse says so instead of 'no collapse'."""
    from mlipft_core.demo import collapse_budgets
    from mlipft_core.findings.repulsion import budget_note

    table = collapse_budgets()
    assert table and table["rows"], "sample_data/collapse_budgets.json is missing"
    note = budget_note(table)
    rows = table["rows"]
    assert all(r["structures"] == rows[0]["structures"] for r in rows)
    if not any(r["collapsed"] for r in rows):
        assert f"no model collapsed in the random structure search (0 of " \
               f"{rows[0]['structures']} structures each)" in note
        assert "No budget tried reproduces the study's collapse" in note
    short = sorted((r for r in rows if r["strategy"] == "naive" and
                    r["preset"] == "short budget"), key=lambda r: r["epochs"])
    assert ", ".join(f"{r['soft_share_percent']:.0f}%" for r in short) + " soft spots" in note
    assert ", ".join(str(r["epochs"]) for r in short) + " epochs" in note
    fm = next(r for r in rows if r["strategy"] == "foundation")
    assert f"(the foundation model {fm['soft_share_percent']:.0f}%)" in note
    collapsed = {**table, "rows": [dict(r, collapsed=3) if r["model"] == short[-1]["model"]
                                   else r for r in rows]}
    worse = budget_note(collapsed)
    assert f"{short[-1]['model']} 3 of {short[-1]['structures']}" in worse
    assert "No budget tried" not in worse
