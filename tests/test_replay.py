"""The replay subset's plan and what is read back from mace's log (the real runs that make
and use subsets are in ``tests/test_runs.py``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ase.io import read, write

from conftest import mlipft_cmd
from mlipft_core import registry
from mlipft_core.replay import plan_subset, replay_of, replay_sentence
from mlipft_core.replay_sets import REPLAY_SETS, replay_set_for

#: two lines as mace_finetuning_select and mace_run_train write them (from a run's log)
FELL_BACK = ("2026-12-02 13:38:54 ERROR    FPS failed, selecting random configurations "
             "instead: name 'fpsample' is not defined\n")
PT_SIZE = "2026-12-02 13:39:20 INFO     Head 'pt_head' training dataset size: 18\n"


def test_the_selection_command_and_a_farthest_point_sampling_that_fell_back(tmp_path):
    sub = plan_subset("/data/pool.xyz", 30, {"num_samples_pt": 20, "subselect_pt": "fps",
                                             "seed": 3, "device": "cpu"},
                      tmp_path, "/models/fm.model")
    assert sub.subsets and sub.file == str(tmp_path / "replay_subset.xyz")
    assert sub.command() == [
        sys.executable, "-m", "mace.cli.fine_tuning_select", "--configs_pt", "/data/pool.xyz",
        "--output", str(tmp_path / "replay_subset.xyz"), "--num_samples", "20",
        "--subselect", "fps", "--filtering_type", "none", "--seed", "3",
        "--model", "/models/fm.model", "--device", "cpu", "--default_dtype", "float64"]
    before = replay_of({"replay": sub.to_dict()}, tmp_path)  # no log yet
    assert before["used"] is None and before["method_used"] == "fps"
    assert replay_sentence(before) == ("Replays 20 of the replay file's 30 structures, chosen "
                                       "by farthest point sampling.")
    (tmp_path / "train.log").write_text(FELL_BACK + PT_SIZE)
    after = replay_of({"replay": sub.to_dict()}, tmp_path)
    assert after["method_used"] == "random"
    assert after["fps_failure"] == "name 'fpsample' is not defined"
    assert after["used"] == 18
    assert replay_sentence(after) == (
        "Replays 20 of the replay file's 30 structures, chosen by farthest point sampling "
        "(farthest point sampling failed: name 'fpsample' is not defined; "
        "mace_finetuning_select chose them at random instead); the pretraining head trained "
        "on 18 of them and validates on the other 2.")
    # random selection needs no model
    rand = plan_subset("/data/pool.xyz", 30, {"num_samples_pt": 20, "subselect_pt": "random"},
                       tmp_path, "/models/fm.model")
    assert "--model" not in rand.command()
    assert replay_of({"settings": {}}, tmp_path) is None  # a run without replay


# ------------------------------------------------------------------ mace's own replay sets
def _standins(demo) -> tuple[str, Path]:
    """The strong demo model where mace's loader finds MACE-MP-0 small, and a replay set built
    from the demo replay pool with the keys mace's official path reads (``energy``,
    ``forces``) where ``assemble_replay_data`` reads the Materials Project set."""
    spec = registry.get_spec("mace-mp-0-small")
    model = registry.expected_path(spec)
    model.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(demo["models"]["demo-gfn1-strong"], model)
    frames = read(demo["replay_pool"], ":")
    for a in frames:
        a.info["energy"] = a.info.pop("REF_energy")
        a.arrays["forces"] = a.arrays.pop("REF_forces")
        a.info.pop("config_energy_weight", None)
    target = REPLAY_SETS["mp"].path()
    write(target, frames, format="extxyz")
    return str(model), target


def test_mace_replay_sets_match_mace_and_each_official_model_has_its_own():
    """The addresses and cache names are mace's own (read from its source), and every official
    model replays the set of its training data."""
    import mace.tools.multihead_tools as mh

    source = Path(mh.__file__).read_text()
    for rs in REPLAY_SETS.values():
        assert f'"{rs.url}"' in source, rs
        assert f'name == "{rs.name}"' in source, rs
    assert REPLAY_SETS["mp"].cache_name == "mp_traj_combinedxyz"
    assert REPLAY_SETS["matpes_r2scan"].cache_name == "matpesr2scanreplaydataextxyz"
    by = {m: (replay_set_for(m).name if replay_set_for(m) else None) for m in (
        "mace-mp-0-small", "mace-mpa-0-medium", "mace-omat-0-small", "mace-matpes-pbe-0",
        "mace-matpes-r2scan-0", "mace-mh-1", "mace-off23-small", "mace-omol-0-extra-large",
        "demo-gfn1-strong")}
    assert by == {"mace-mp-0-small": "mp", "mace-mpa-0-medium": "mp",
                  "mace-omat-0-small": "omat", "mace-matpes-pbe-0": "matpes_pbe",
                  "mace-matpes-r2scan-0": "matpes_r2scan", "mace-mh-1": "omat",
                  "mace-off23-small": None, "mace-omol-0-extra-large": None,
                  "demo-gfn1-strong": None}
    assert replay_set_for("mace-mh-1", "mp_pbe_refit_add").name == "mp"
    assert replay_set_for("mace-mh-1", "omol") is None


def test_offline_each_missing_file_is_named_with_where_it_goes(demo, tiny):
    """Without the model: the model's file; with it but without the replay set: the set's
    file, the fetch command and mace's cache path. A model without a set says so."""
    base = ["train", "--strategy", "multihead-replay", "--model", "mace-mp-0-small",
            "--train", str(tiny / "train.xyz"), "--epochs", "1"]
    no_model = subprocess.run(mlipft_cmd() + base, capture_output=True, text=True,
                              timeout=300)
    assert no_model.returncode != 0 and "Traceback" not in no_model.stderr
    assert "20231210mace128L0_energy_epoch249model" in no_model.stderr
    spec = registry.get_spec("mace-mp-0-small")
    registry.expected_path(spec).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(demo["models"]["demo-gfn1-strong"], registry.expected_path(spec))
    no_set = subprocess.run(mlipft_cmd() + base, capture_output=True, text=True, timeout=300)
    assert no_set.returncode != 0 and "Traceback" not in no_set.stderr
    assert "mlipft replay fetch mp" in no_set.stderr
    assert str(REPLAY_SETS["mp"].path()) in no_set.stderr and "mp_traj_combined.xyz" in \
        no_set.stderr
    fetch = subprocess.run(mlipft_cmd() + ["replay", "fetch", "mace-mp-0-small"],
                           capture_output=True, text=True, timeout=300)
    assert fetch.returncode != 0 and "download failed" in fetch.stderr
    assert str(REPLAY_SETS["mp"].path()) in fetch.stderr
    assert not REPLAY_SETS["mp"].path().with_name("mp_traj_combinedxyz.part").exists()
    none = subprocess.run(mlipft_cmd() + ["replay", "fetch", "mace-off23-small"],
                          capture_output=True, text=True, timeout=300)
    assert none.returncode != 0 and "has no replay set" in none.stderr


@pytest.mark.slow
def test_study_of_an_official_model_on_user_files_alone(demo, tmp_path):
    """``mlipft study --model mace-mp-0-small --train --valid --test``: mace's replay set of
    the model is replayed through mace's own replay assembly (multihead and pseudolabelled
    replay, each run reporting the count it really used), a forgetting set drawn from it is
    the pretraining test (of Compare too), and every finding is measured or says which input
    would measure it."""
    _, set_path = _standins(demo)
    listed = json.loads(subprocess.run(mlipft_cmd() + ["replay", "list", "--json"],
                                       capture_output=True, text=True, timeout=300).stdout)
    assert next(s for s in listed["sets"] if s["name"] == "mp")["cached"] is True
    write(tmp_path / "train.xyz", read(demo["sn2_train"], ":30"))
    write(tmp_path / "valid.xyz", read(demo["sn2_valid"], ":6"))
    write(tmp_path / "test.xyz", read(demo["sn2_test"], ":8"))
    out = subprocess.run(mlipft_cmd() + [
        "study", "--model", "mace-mp-0-small", "--train", str(tmp_path / "train.xyz"),
        "--valid", str(tmp_path / "valid.xyz"), "--test", str(tmp_path / "test.xyz"),
        # the budget only, to keep the test short: every input is the study's own
        "--strategies", "naive,multihead-replay,pseudolabel-replay", "--lrs", "1e-3,1e-2",
        "--pilot-epochs", "1", "--epochs", "1", "--small-size", "10", "--search-structures",
        "3", "--poll", "1", "--json"], capture_output=True, text=True, timeout=2400)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["stage"] == "done", d["message"]
    inp = d["inputs"]
    assert inp["replay"] == str(REPLAY_SETS["mp"].path())
    assert Path(inp["pretrain_test"]).is_file() and "forgetting" in inp["pretrain_test"]
    assert len(read(inp["pretrain_test"], ":")) == 100
    assert inp["weak_model"] is None  # MACE-MP-0 small is the weakest of its family
    by = {f["key"]: f for f in d["findings"]}
    assert len(by) == 6
    for f in d["findings"]:  # measured, or it names the input that would measure it
        assert f["reproduced"] is not None or "give" in f["summary"], f
        assert "Traceback" not in f["summary"]
    assert by["foundation"]["reproduced"] is None
    assert "--weak-model" in by["foundation"]["summary"]
    assert by["retention"]["reproduced"] is not None  # the forgetting set measured it
    assert by["repulsion"]["level"] in ("lost", "softened", "kept")
    assert set(by["repulsion"]["collapses"]) == {"foundation", "naive",
                                                 "multihead-replay [Default]",
                                                 "pseudolabel-replay [Default]"}
    runs = {r["id"]: r for r in json.loads(subprocess.run(
        mlipft_cmd() + ["runs", "--json"], capture_output=True, text=True,
        timeout=300).stdout)}
    for role in ("multihead-replay", "pseudolabel-replay"):
        rep = runs[d["finals"][role]]["replay"]
        assert rep["official"] == "mp" and rep["file"] == str(set_path)
        assert rep["requested"] == rep["selected"] == 200
        assert rep["used"] == 180  # 200 selected by mace, less its 10% validation share
        assert "chosen by mace (random)" in rep["described"]
        folder = Path(runs[d["finals"][role]]["model_path"]).parent
        cfg = (folder / "config.yaml").read_text()
        assert "pt_train_file: mp\n" in cfg and "num_samples_pt: 200" in cfg
        assert "mace_finetuning_select" not in (folder / "command.sh").read_text()
    # Compare's default pretraining test for an official model: its forgetting set
    cmp = subprocess.run(mlipft_cmd() + ["compare", d["finals"]["multihead-replay"],
                                         "--target", str(tmp_path / "test.xyz"), "--json"],
                         capture_output=True, text=True, timeout=900)
    assert cmp.returncode == 0, cmp.stderr
    table = json.loads(cmp.stdout)
    assert table and all(r["pretrain_forces_rmse_mev_per_a"] is not None for r in table)
    # forgetting is measured on structures no run replayed: mace's subsets in the run folders
    # (this stand-in set is small, so the forgetting set and the subsets share structures)
    replayed = set()
    for rid in d["finals"].values():
        for f in Path(runs[rid]["model_path"]).parent.glob("mp_finetuning-*.xyz"):
            replayed |= {a.positions.round(6).tobytes() for a in read(f, ":")}
    assert replayed
    shared = sum(a.positions.round(6).tobytes() in replayed
                 for a in read(inp["pretrain_test"], ":"))
    assert shared > 0 and d["extra"]["pretrain_left_out"] == shared
    assert f"{shared} structures of the pretraining test set were also among those a run " \
           "replayed" in by["retention"]["summary"]


def test_a_held_out_set_loses_the_structures_a_run_replayed(demo, tmp_path):
    from mlipft_core.replay_sets import disjoint_from

    pool = read(demo["replay_pool"], ":30")
    write(tmp_path / "held.xyz", pool[:10])
    write(tmp_path / "mp_finetuning-a.xyz", pool[5:20])
    path, left_out = disjoint_from(tmp_path / "held.xyz", [tmp_path / "mp_finetuning-a.xyz"])
    assert left_out == 5
    kept = read(path, ":")
    assert [a.positions.tolist() for a in kept] == [a.positions.tolist() for a in pool[:5]]
    same, none = disjoint_from(tmp_path / "held.xyz", [tmp_path / "held.xyz"][:0])
    assert same == str(tmp_path / "held.xyz") and none == 0


def test_a_workshop_stages_an_official_model_with_its_replay_set(demo):
    """``workshop create --stage-model mace-mp-0-small`` makes the model and its replay set
    ready in mace's cache for every participant; offline, without the set, it names it."""
    spec = registry.get_spec("mace-mp-0-small")
    registry.expected_path(spec).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(demo["models"]["demo-gfn1-strong"], registry.expected_path(spec))
    cmd = mlipft_cmd() + ["workshop", "create", "--participants", "2", "--stage-model",
                          "mace-mp-0-small", "--json"]
    missing = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert str(REPLAY_SETS["mp"].path()) in missing.stderr
    _standins(demo)
    ready = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert ready.returncode == 0, ready.stderr
    staged = subprocess.run(mlipft_cmd() + ["workshop", "stage", "mace-mp-0-small", "--json"],
                            capture_output=True, text=True, timeout=300)
    assert staged.returncode == 0, staged.stderr
    assert json.loads(staged.stdout)["staged"] == [str(registry.expected_path(spec)),
                                                   str(REPLAY_SETS["mp"].path())]
