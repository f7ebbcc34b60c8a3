"""Every page runs on the demo world in Streamlit's AppTest without an exception."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write
from streamlit.testing.v1 import AppTest

from conftest import assert_done
from mlipft_core import evaluate, jobs, probes, tune, workshop
from mlipft_core.data import read_frames, register_files_as_split
from mlipft_core.defaults import replay_file_for
from mlipft_core.jobs.slurm import available as slurm_available
from mlipft_core.md import summarise_temperature
from mlipft_core.strategies import RunSpec
from mlipft_core.workspace import Workspace

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def labelled(widgets, label: str, *, prefix: bool = False):
    """The widget among ``widgets`` (``at.text_input``, ``at.checkbox``, ...) with this label
    (``prefix``: whose label starts with it)."""
    return next(w for w in widgets
                if w.label == label or (prefix and w.label.startswith(label)))


def runs_table(at: AppTest):
    """The runs page's table of runs."""
    return next(d.value for d in at.dataframe if {"run", "status", "where"} <= set(d.value))


def metrics_table(at: AppTest):
    """The compare page's metrics table."""
    return next(d.value for d in at.dataframe if {"model", "strategy"} <= set(d.value))


MODEL_PATH = "Path of a .model file"
TRUST = "I trust this file"
DATA_PATH = "Path of an extxyz file"
TARGET = "Target test set"
PRETRAIN = "Held-out pretraining test set (forgetting)"


def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(str(Path(APP).parent / page))
        at.run()
    return at


def test_home_page():
    at = app()
    assert at.title[0].value == "MLIP fine-tuning workbench"
    assert not at.exception


def test_foundation_model_page_shows_demo_model_and_e0s():
    at = app("views/foundation_model.py")
    assert not at.exception
    button(at, "Use this model").click().run()  # default: demo-gfn1-strong
    assert not at.exception
    assert Workspace().get("model") == "demo-gfn1-strong"
    labels = {m.label: m.value for m in at.metric}
    assert labels["Channels"] == "32" and labels["Interactions"] == "2"
    assert any("E0" in (c.proto.spec or "") for c in at.get("plotly_chart"))
    e0_table = next(d.value for d in at.dataframe if d.value.index.name == "element")
    assert list(e0_table.columns) == ["E0 (eV)"]  # the unit, not mace's head name "Default"


def test_foundation_model_page_offline_official_model_message():
    Workspace().set(model="mace-mp-0-small", model_label="MACE-MP-0 small")
    at = app("views/foundation_model.py")
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "not in mace's cache" in errors and "20231210mace128L0_energy_epoch249model" in errors


def test_foundation_model_page_untrusted_upload_path_refused(tmp_path, strong_model):
    local = tmp_path / "downloaded.model"
    shutil.copy(strong_model, local)
    at = app("views/foundation_model.py")
    at.radio(key="model_source").set_value("Local file (path)").run()
    labelled(at.text_input, MODEL_PATH).input(str(local)).run()
    button(at, "Use this model").click().run()
    assert not at.exception
    assert any("trust" in e.value for e in at.error)
    labelled(at.checkbox, TRUST, prefix=True).check().run()
    button(at, "Use this model").click().run()
    assert Workspace().get("model") == str(local)
    assert "model_trusted" not in Workspace().selections()  # trust is per file, not a flag
    assert Workspace().is_trusted(local)


def _evil_pickle(path, marker) -> None:
    """A file that writes ``marker`` when unpickled (as torch.load would)."""
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.write_bytes(pickle.dumps(Evil()))


def test_trust_belongs_to_one_file(tmp_path, strong_model):
    good = tmp_path / "good.model"
    shutil.copy(strong_model, good)
    evil, marker = tmp_path / "evil.model", tmp_path / "MARKER"
    _evil_pickle(evil, marker)
    at = app("views/foundation_model.py")
    at.radio(key="model_source").set_value("Local file (path)").run()
    labelled(at.text_input, MODEL_PATH).input(str(good)).run()
    labelled(at.checkbox, TRUST, prefix=True).check().run()  # 1. trust one local model
    button(at, "Use this model").click().run()
    assert Workspace().get("model") == str(good)
    at.radio(key="model_source").set_value("Local file (path)").run()
    labelled(at.text_input, MODEL_PATH).input(str(evil)).run()  # 2. another pickle's path
    assert not labelled(at.checkbox, TRUST, prefix=True).value  # 3. the tick does not carry over
    button(at, "Use this model").click().run()
    assert any("trust" in e.value for e in at.error)
    assert not marker.exists() and Workspace().get("model") == str(good)
    # 4. nothing in state.json makes a fresh session load an unconfirmed file
    Workspace().set(model=str(evil), model_trusted=True)
    for page in ("views/data.py", "views/foundation_model.py", "views/e0.py", "views/runs.py",
                 "views/md.py"):
        at = app(page)
        assert not at.exception, (page, at.exception)
    assert not marker.exists()
    # a trusted file whose content changes needs a new confirmation
    Workspace().set(model=str(good))
    good.write_bytes(good.read_bytes() + b"\0")
    at = app("views/foundation_model.py")
    assert any("not confirmed as trusted" in w.value for w in at.warning)


def test_a_corrupt_state_json_starts_afresh(demo):
    ws = Workspace()
    for content in (b"[1, 2]", b'"text"', b"\xff\xfe binary", None):
        if ws.state_file.is_dir():
            ws.state_file.rmdir()
        if content is None:
            ws.state_file.unlink(missing_ok=True)
            ws.state_file.mkdir()
        else:
            ws.state_file.write_bytes(content)
        at = app()
        assert any("could not be read" in w.value for w in at.sidebar.warning), content
        for page in ("views/runs.py", "views/compare.py", "views/data.py"):
            at = app(page)  # the Data page chooses the bundled demo: state.json is rewritten
            assert not at.exception, (content, page, at.exception)
        ws.set(model="demo-gfn1-strong")  # choosing again works; the old file is kept aside
        assert ws.get("model") == "demo-gfn1-strong"
        assert list(ws.root.glob("state.json.unreadable-*"))
        for old in ws.root.glob("state.json.unreadable-*"):
            if old.is_dir():
                old.rmdir()
            else:
                old.unlink()


def test_data_page_on_sn2_target_with_zero_shot_parity():
    Workspace().set(model="demo-gfn1-strong", model_label="Demo strong")
    at = app("views/data.py")
    assert not at.exception
    assert Workspace().get("split_id", "").startswith("demo-sn2")
    # the sidebar shows the choice made on this very page run, not one step late
    side = " ".join(m.value for m in at.sidebar.markdown)
    assert "**Split:** SN2" in side and "132 training" in side and "SN2 target" in side
    assert at.get("iframe"), "3D viewer missing"
    button(at, "Evaluate").click().run()
    assert not at.exception
    charts = at.get("plotly_chart")
    titles = " ".join(c.proto.spec for c in charts)
    assert "Energy per atom" in titles and "Force components" in titles
    assert any("eV/atom on average" in w.value for w in at.warning)


def test_data_page_reports_bad_upload_path(tmp_path):
    bad = tmp_path / "bad.xyz"
    bad.write_text("not an xyz file\n")
    at = app("views/data.py")
    at.radio(key="data_source").set_value("File path").run()
    labelled(at.text_input, DATA_PATH).input(str(bad)).run()
    assert not at.exception
    assert any("Cannot be read" in e.value and "bad.xyz" in e.value for e in at.error), \
        [e.value for e in at.error]


def test_choices_persist_across_a_new_session():
    Workspace().set(model="demo-gfn1-weak", model_label="Demo weak")
    at = app("views/foundation_model.py")
    assert "Demo weak" in " ".join(m.value for m in at.sidebar.markdown)


def test_e0_page_compares_methods_and_saves_a_choice(demo):
    ws = Workspace()
    split = register_files_as_split(ws, {"train": demo["sn2_train"], "valid": demo["sn2_valid"],
                                         "test": demo["sn2_test"]}, "demo-sn2")
    ws.set(model="demo-gfn1-strong", model_label="Demo strong", split_id=split.id)
    at = app("views/e0.py")
    assert not at.exception
    button(at, "Compute E0s").click().run()
    assert not at.exception
    verdict = " ".join(s.value for s in at.success)
    assert "keV/atom" in verdict and "'estimated' leaves the smallest offset" in verdict
    # rank-deficient (n_H = 3 n_C), anchored by the bundled B3LYP isolated atoms: a success
    # that says what the data could not determine and where it came from
    assert "cannot separate" in verdict and "isolated-atom energies" in verdict
    assert any("Anchored to isolated-atom energies" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) >= 6
    assert any("--E0s=" in c.value for c in at.code)
    button(at, "Save as the E0 choice for runs").click().run()
    assert ws.get("e0_choice", "").startswith("estimated-")
    # without the isolated atoms the same fit is only a warning, naming what to supply
    labelled(at.text_input, "extxyz with IsolatedAtom configurations of the reference "
             "method").set_value("").run()
    button(at, "Compute E0s").click().run()
    assert not at.exception
    assert not at.success
    warned = " ".join(w.value for w in at.warning)
    assert "Not anchored" in warned and "isolated-atom energies" in warned


def test_runs_page_launches_and_lists_runs(tiny_split):
    ws = Workspace()
    at = app("views/runs.py")
    assert not at.exception
    labelled(at.multiselect, "Strategies").set_value(["freeze-b", "lora"]).run()
    labelled(at.number_input, "Epochs").set_value(1).run()
    assert any("2 run(s)** will be queued on this machine" in m.value for m in at.markdown)
    assert not button(at, "Launch").disabled
    button(at, "Launch").click().run()
    assert not at.exception, at.exception
    assert any("Queued 2 runs" in s.value for s in at.success)
    # refreshed every 3 s while runs are active, every 30 s once none is
    assert any("2 active, 2 in all · refreshes every 3 s" in c.value for c in at.caption)
    recs = jobs.list_runs(ws)
    assert sorted(r.strategy for r in recs) == ["freeze-b", "lora"]
    for r in recs:
        assert_done(jobs.wait(r.id, timeout=600))
    at.run()
    assert any("0 active, 2 in all · refreshes every 30 s" in c.value for c in at.caption)
    table = runs_table(at)
    assert set(table["status"]) == {"done"}
    assert "validation energy RMSE (meV/atom), target head" in table
    assert set(table["where"]) == {"this machine"}


def test_runs_page_replay_selection_is_kept_and_reaches_the_run(tiny_split):
    """The replay subset's selection, chosen on the page, is there again after a reload and
    is what the launched run records; the page says what the run replays."""
    ws = Workspace()
    at = app("views/runs.py")
    labelled(at.multiselect, "Strategies").set_value(["multihead-replay"]).run()
    labelled(at.number_input, "Epochs").set_value(1).run()
    labelled(at.radio, "Replay subset chosen by").set_value("fps").run()
    assert not at.exception, at.exception
    again = app("views/runs.py")  # a reload
    assert labelled(again.radio, "Replay subset chosen by").value == "fps"
    button(again, "Launch").click().run()
    assert not again.exception, again.exception
    (rec,) = jobs.list_runs(ws)
    jobs.cancel(rec.id, ws)
    assert rec.spec["settings"]["subselect_pt"] == "fps"
    pool = len(read_frames(replay_file_for("demo-gfn1-weak")))
    assert rec.spec["replay"]["method"] == "fps" and rec.spec["replay"]["available"] == pool
    again.run()
    shown = [c.value for c in again.caption if c.value.startswith("Replays ")]
    assert shown == [f"Replays 200 of the replay file's {pool} structures, chosen by farthest "
                     "point sampling."], shown


def test_runs_page_study_protocol_preset_fills_the_table_and_reaches_the_run(tiny_split):
    """Under the study protocol the table shows each strategy's study settings, says where
    they came from, and the launched run records the preset and trains with them; the choice
    is kept across a reload."""
    ws = Workspace()
    at = app("views/runs.py")
    labelled(at.multiselect, "Strategies").set_value(["naive", "multihead-replay"]).run()
    labelled(at.number_input, "Epochs").set_value(1).run()
    labelled(at.radio, "Settings preset").set_value("study protocol").run()
    assert not at.exception, at.exception
    again = app("views/runs.py")  # a reload
    assert labelled(again.radio, "Settings preset").value == "study protocol"
    assert any("universal" in c.value and "weight decay 0" in c.value for c in again.caption)
    assert labelled(again.selectbox, "Precision").value == "float64"
    button(again, "Launch").click().run()
    assert not again.exception, again.exception
    recs = {r.strategy: r for r in jobs.list_runs(ws)}
    for r in recs.values():
        jobs.cancel(r.id, ws)
    for strategy, (lr, ema, clip) in {"naive": (1e-3, 0.999, 1.0),
                                      "multihead-replay": (1e-4, 0.9999, 1.0)}.items():
        st_ = recs[strategy].spec["settings"]
        assert st_["preset"] == "study protocol"
        assert (st_["lr"], st_["ema_decay"], st_["clip_grad"]) == (lr, ema, clip)
        cfg = (ws.runs / recs[strategy].id / "config.yaml").read_text()
        assert "loss: universal" in cfg and "default_dtype: float64" in cfg
        assert f"clip_grad: {clip}" in cfg and "weight_decay: 0.0" in cfg


def test_runs_page_offers_perturbed_replay_for_a_model_without_a_replay_set(tiny_split, demo):
    """MACE-OFF has no replay set of mace's: the page says so and, on a press, makes
    perturbed unlabelled copies of the training structures the replay file, which a
    pseudolabelled replay run then replays."""
    from mlipft_core import registry

    spec = registry.get_spec("mace-off23-small")
    target = registry.expected_path(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(demo["models"]["demo-gfn1-weak"], target)  # a stand-in where mace looks
    ws = Workspace()
    ws.set(model="mace-off23-small", model_label="MACE-OFF23 small")
    at = app("views/runs.py")
    labelled(at.multiselect, "Strategies").set_value(["pseudolabel-replay"]).run()
    labelled(at.number_input, "Epochs").set_value(1).run()
    assert any("mace has no replay set for this model" in i.value for i in at.info)
    button(at, "Use 200 perturbed copies of the training structures (0.05 Å)").click().run()
    assert not at.exception, at.exception
    replay = labelled(at.text_input, "Replay file for multihead strategies (pretraining "
                                     "configurations)").value
    frames = read_frames(replay)
    train = read_frames(str(tiny_split.file("train")))
    assert len(frames) == 200 and "REF_energy" not in frames[0].info
    shift = frames[0].positions - train[0].positions
    assert 0.0 < float(abs(shift).mean()) < 0.2
    button(at, "Launch").click().run()
    assert not at.exception, at.exception
    (rec,) = jobs.list_runs(ws)
    jobs.cancel(rec.id, ws)
    assert rec.spec["replay_file"] == replay and rec.spec["replay"]["available"] == 200


def test_runs_page_launches_a_sweep_on_slurm(tiny_split):
    ok, why = slurm_available()
    if not ok:
        pytest.skip(f"no SLURM cluster reachable: {why}")
    ws = Workspace()
    at = app("views/runs.py")
    labelled(at.multiselect, "Strategies").set_value(["naive", "freeze-b"]).run()
    labelled(at.number_input, "Epochs").set_value(1).run()
    labelled(at.radio, "Run on").set_value("slurm").run()
    assert not at.exception, at.exception
    num = {n.label: n for n in at.number_input}
    num["CPUs per run"].set_value(1).run()
    assert any("2 run(s)** will be queued on SLURM" in m.value for m in at.markdown)
    button(at, "Launch").click().run()
    assert not at.exception, at.exception
    recs = jobs.list_runs(ws)
    assert {r.executor for r in recs} == {"slurm"}
    assert len({r.slurm_job_id.split("_")[0] for r in recs}) == 1  # one job array
    assert any("as SLURM job(s)" in s.value for s in at.success)
    for r in recs:
        assert_done(jobs.wait(r.id, timeout=600))
    at.run()
    table = runs_table(at)
    assert set(table["status"]) == {"done"}
    assert sorted(table["where"]) == sorted(f"SLURM job {r.slurm_job_id}" for r in recs)


def test_pages_survive_an_unreadable_run(demo):
    ws = Workspace()
    (ws.runs / "broken").mkdir(parents=True)
    (ws.runs / "broken" / "run.json").write_text("[1, 2]")
    ws.set(model="demo-gfn1-weak", model_label="Demo weak")
    for page in ("views/runs.py", "views/compare.py", "views/md.py"):
        at = app(page)
        assert not at.exception, (page, at.exception)
    at = app("views/runs.py")
    table = runs_table(at)
    assert list(table["status"]) == ["unreadable"] and "holds a list" in table["note"][0]


@pytest.mark.slow
def test_compare_page_with_runs(demo, tmp_path):
    write(tmp_path / "train.xyz", read(demo["sn2_train"], ":12"))
    write(tmp_path / "target.xyz", read(demo["sn2_test"], ":8"))
    write(tmp_path / "pretrain.xyz", read(demo["pretrain_test"], ":12"))
    write(tmp_path / "replay.xyz", read(demo["replay_pool"], ":20"))
    recs = jobs.submit_sweep([RunSpec(n, demo["models"]["demo-gfn1-weak"],
                                      str(tmp_path / "train.xyz"),
                                      replay_file=str(tmp_path / "replay.xyz"),
                                      settings={"max_num_epochs": 1, "num_samples_pt": 10})
                              for n in ("naive", "multihead-replay")])
    for r in recs:
        assert_done(jobs.wait(r.id, timeout=600))
    at = app("views/compare.py")
    labelled(at.text_input, TARGET).set_value(str(tmp_path / "target.xyz")).run()
    labelled(at.text_input, PRETRAIN).set_value(str(tmp_path / "pretrain.xyz")).run()
    button(at, "Compare").click().run()
    assert not at.exception, at.exception
    table = metrics_table(at)
    assert set(table["model"]) == {"Demo weak (GFN1-xTB), the foundation model (zero-shot)",
                                   "Naive fine-tuning", "Multihead replay"}
    assert set(table[table["model"] == "Multihead replay"]["head"]) == {
        "pretraining head (replay)", "target head"}
    # the key column first, human names with units, no internal or empty columns
    assert list(table.columns)[:4] == ["model", "head", "strategy",
                                       "forgetting ratio (pretraining F RMSE / foundation's)"]
    assert not {"is_foundation", "note", "target stress RMSE (meV/Å³)"} & set(table.columns)
    assert len(at.get("plotly_chart")) >= 4
    assert any("Least forgetting" in i.value for i in at.info)
    # the selection and the results come back in a new session (a reload), without a click
    at = app("views/compare.py")
    assert not at.exception, at.exception
    assert set(metrics_table(at)["model"]) == set(table["model"])
    # multihead models name their head in the dimer plot and the tables
    specs = " ".join(c.proto.spec for c in at.get("plotly_chart"))
    assert "Multihead replay [pretraining head (replay)]" in specs
    assert "Multihead replay [target head]" in specs
    # with the demo's pretraining test set, the held-out compressed structures are probed too
    labelled(at.text_input, PRETRAIN).set_value(demo["pretrain_test"]).run()
    button(at, "Compare").click().run()
    assert not at.exception, at.exception
    probe = next(d.value for d in at.dataframe if "soft spots" in d.value.columns)
    assert set(probe["model"]) == {"Demo weak (GFN1-xTB), the foundation model",
                                   "Naive fine-tuning", "Multihead replay [target head]",
                                   "Multihead replay [pretraining head (replay)]"}
    # every model on the same structures: those whose elements all of them cover
    n_probe = len(read(demo["short_range_test"], ":"))
    shared = {int(s.rsplit(" of ", 1)[1]) for s in probe["soft spots"]}
    assert len(shared) == 1 and 0 < shared.pop() <= n_probe, list(probe["soft spots"])


def test_data_page_with_findings_still_plots(tmp_path):
    """A dataset with warnings (duplicates, IsolatedAtom) renders findings and plots."""
    frames = []
    for i in range(6):
        a = Atoms("OH2", positions=[[0, 0, 0], [0.96 + 0.01 * i, 0, 0], [-0.24, 0.93, 0]])
        a.info["REF_energy"] = -10.0 - 0.1 * i
        a.arrays["REF_forces"] = np.full((3, 3), 0.05 * i)
        frames.append(a)
    frames.append(frames[0].copy())
    frames.append(Atoms("H", info={"config_type": "IsolatedAtom", "REF_energy": -13.6}))
    p = tmp_path / "water.xyz"
    write(p, frames, format="extxyz")
    at = app("views/data.py")
    at.radio(key="data_source").set_value("File path").run()
    labelled(at.text_input, DATA_PATH).input(str(p)).run()
    assert not at.exception, at.exception
    shown = " ".join(w.value for w in at.warning)
    # human titles, never the internal codes
    assert "Duplicate structures" in shown and "Isolated-atom configurations" in shown
    assert "isolated_atom" not in shown and "**duplicates**" not in shown
    assert len(at.get("plotly_chart")) == 2
    button(at, "Save split").click().run()
    assert not at.exception
    assert any("left out" in s.value for s in at.success)


def test_md_page_runs_models_side_by_side(demo):
    Workspace().set(model="demo-gfn1-weak", model_label="Demo weak")
    at = app("views/md.py")
    labelled(at.number_input, "Steps").set_value(20)
    labelled(at.number_input, "Record every (steps)").set_value(5)
    button(at, "Run MD for the chosen models").click().run()
    assert not at.exception, at.exception
    for r in jobs.list_runs():
        assert_done(jobs.wait(r.id, timeout=300))
    at.run()
    assert not at.exception, at.exception
    assert len(at.get("iframe")) == 1 and "3Dmol" in at.get("iframe")[0].proto.srcdoc
    assert len(at.get("plotly_chart")) >= 6  # 3 traces + 3 RDF pairs
    assert any("Closest RDFs" in s.value for s in at.success)


def test_join_page_names_the_workshop_in_a_sentence_that_reads_well():
    """The default name ("workshop") is not doubled ("the workshop workshop"); a custom name
    is named, with "workshop" added only when the name does not say it."""
    root = Workspace().root
    for name, expected in (("workshop", "This is a workshop on the MLIP fine-tuning"),
                           ("MACE fine-tuning", "This is the **MACE fine-tuning** workshop on"),
                           ("Summer Workshop 2025", "This is **Summer Workshop 2025** on")):
        workshop.create(root, 1, name=name)
        at = AppTest.from_file(APP, default_timeout=120)
        at.run()
        assert not at.exception, at.exception
        assert [t.value for t in at.title] == ["Join the workshop"]
        text = " ".join(m.value for m in at.markdown)
        assert expected in text, text
        assert "workshop workshop" not in text.lower().replace("*", "")
        shutil.rmtree(root)


@pytest.mark.slow
def test_md_page_keeps_its_picks_offers_pilots_apart_and_describes_its_traces(tiny, weak_model):
    """Learning-rate pilots are offered in a group of their own (by name, never chosen by
    default); the picks survive a reload and the results shown are of those picks; the
    temperature is described from the numbers, the energies drawn per model."""
    ws = Workspace()
    ws.set(model="demo-gfn1-weak", model_label="Demo weak (GFN1-xTB)")
    spec = RunSpec("naive", weak_model, str(tiny / "train.xyz"),
                   valid_file=str(tiny / "valid.xyz"), name="naive",
                   settings={"max_num_epochs": 1})
    sweep = tune.submit_pilot(spec, lrs=[1e-4, 1e-3], epochs=1)
    final = jobs.submit_sweep([spec])[0]
    for r in jobs.list_runs():
        assert_done(jobs.wait(r.id, timeout=900))
    pilot_ids = {float(r.spec["settings"]["lr"]): r.id for r in jobs.list_runs()
                 if r.sweep == sweep}

    at = app("views/md.py")
    models = at.multiselect(key="md_pick_models")
    pilots = at.multiselect(key="md_pick_pilots")
    # the default: the foundation model and the finished run, no pilot run
    assert len(models.value) == 2 and models.value[0].startswith("foundation|")
    assert models.value[1].startswith(f"run|{final.id}|")
    assert not any(i in k for k in models.value for i in pilot_ids.values())
    assert pilots.value == [] and len(pilots.options) == 2
    shown = models.options + pilots.options
    assert not any("tune-" in o or final.id in o or "None" in o for o in shown), shown
    assert all("pilot" in o for o in pilots.options)
    assert any("lr 1e-4" in o for o in pilots.options), pilots.options
    assert not any("pilot" in o for o in models.options)

    # pick the foundation model and one pilot run: a reload shows the same picks
    head = models.value[1].rsplit("|", 1)[1]
    picks = [models.value[0], f"run|{pilot_ids[1e-4]}|{head}"]
    models.set_value(picks[:1]).run()
    at.multiselect(key="md_pick_pilots").set_value(picks[1:]).run()
    assert not at.exception, at.exception
    assert ws.get("md_models") == picks
    at = app("views/md.py")
    assert at.multiselect(key="md_pick_models").value == picks[:1]
    assert at.multiselect(key="md_pick_pilots").value == picks[1:]
    labels = at.multiselect(key="md_pick_models").values \
        + at.multiselect(key="md_pick_pilots").values

    labelled(at.number_input, "Steps").set_value(10)
    labelled(at.number_input, "Record every (steps)").set_value(5)
    button(at, "Run MD for the chosen models").click().run()
    assert not at.exception, at.exception
    md_runs = [r for r in jobs.list_runs() if r.kind == "md"]
    assert len(md_runs) == 2
    for r in md_runs:
        assert_done(jobs.wait(r.id, timeout=600))

    at = app("views/md.py")  # a reload: the picks and the results of those picks
    assert at.multiselect(key="md_pick_models").value == picks[:1]
    assert at.multiselect(key="md_pick_pilots").value == picks[1:]
    stability = next(d.value for d in at.dataframe if "survived (fs)" in d.value.columns)
    assert sorted(stability["model"]) == sorted(labels)
    assert not any("results below are those of the last MD run" in i.value for i in at.info)

    # the temperature in words, from each run's own numbers
    text = " ".join(m.value for m in at.markdown)
    for r in md_runs:
        res = json.loads((ws.runs / r.id / "result.json").read_text())
        s = summarise_temperature(res["time_fs"], res["temperature_k"], 300.0,
                                  n_atoms=res["n_atoms"])
        assert f"**{r.name}**: the temperature {s.text}" in text
        assert f"starts at {res['temperature_k'][0]:.0f} K" in text
    captions = " ".join(c.value for c in at.caption)
    assert "falls to about half the target" not in captions
    # energies: each model against its own first frame, in meV/atom
    charts = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
              for c in at.get("plotly_chart")}
    for what, key in (("potential energy", "potential_ev"), ("total energy", "total_ev")):
        fig = charts[f"{what}, relative to each model's first frame"]
        assert "meV/atom" in fig["layout"]["yaxis"]["title"]["text"]
        assert "first frame" in fig["layout"]["yaxis"]["title"]["text"]
        lines = {tr["legendgroup"]: tr["y"] for tr in fig["data"] if tr.get("mode") == "lines"}
        assert sorted(lines) == sorted(labels)
        for r in md_runs:
            res = json.loads((ws.runs / r.id / "result.json").read_text())
            e = np.array(res[key])
            assert np.allclose(lines[r.name], (e - e[0]) * 1000 / res["n_atoms"])

    # other picks than those run: the results say whose they are
    at.multiselect(key="md_pick_pilots").set_value([]).run()
    assert any("results below are those of the last MD run" in i.value for i in at.info)


def test_compare_page_collapse_probe_steps_run_on_one_torch_thread(weak_model, monkeypatch):
    """The Compare page's collapse probe makes one model call on a few dozen atoms per
    relaxation step; with several torch threads on busy cores each call took seconds
    (bench/collapse_speed.py). Its calls run on one thread, and the setting is put back."""
    import torch  # heavy: only this test calls the model machinery itself

    seen: list[int] = []
    real = evaluate._predict_stream

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(evaluate, "_predict_stream", spy)
        res = probes.collapse_probe(weak_model, ["C", "H"], n_structures=2, n_atoms=6, steps=4,
                                    trusted=True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1, 1, 1]  # every step, one call of both structures, on one thread
    assert res.n_structures == 2 and res.min_distance > 0
