"""The ``mlipft`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import mlipft_cmd


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(mlipft_cmd() + list(args), capture_output=True, text=True,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_models_json_lists_registry_with_offline_flag():
    rows = json.loads(run("models", "--json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["demo-gfn1-strong"]["available_offline"] is True
    assert by_name["mace-mp-0-medium"]["available_offline"] is False
    assert by_name["mace-mp-0-medium"]["license"] == "MIT"
    assert {"training_data", "level_of_theory", "n_elements", "heads", "reference"} <= set(rows[0])


def test_inspect_and_demo_paths():
    info = json.loads(run("inspect", "demo-gfn1-weak", "--json").stdout)
    assert info["elements"] == ["H", "C", "N", "O", "F", "Cl"]
    assert info["heads"] == ["Default"] and info["channels"] == 16
    assert set(info["e0s"]["Default"]) == set(info["elements"])
    paths = json.loads(run("demo", "paths", "--json").stdout)
    for key in ("pretrain_train", "pretrain_test", "replay_pool", "sn2_train", "sn2_valid",
                "sn2_test", "sn2_scan", "water_train", "water_test"):
        assert Path(paths[key]).is_file(), key
    assert list(paths["models"]) == ["demo-gfn1-weak", "demo-gfn1-strong"]


def test_evaluate_json(demo):
    out = json.loads(run("evaluate", "demo-gfn1-strong", demo["sn2_test"], "--json").stdout)
    for key in ("n_structures", "energy_rmse_mev_per_atom", "energy_mae_mev_per_atom",
                "forces_rmse_mev_per_a", "forces_mae_mev_per_a"):
        assert isinstance(out[key], (int, float)), key
    assert out["n_structures"] > 10
    # GFN1-trained model on a DFT target: a large energy offset per atom
    assert out["energy_rmse_mev_per_atom"] > 1000


def test_validate_json_reports_codes(tmp_path, demo):
    ok = json.loads(run("validate", demo["sn2_train"], "--model", "demo-gfn1-weak",
                        "--json").stdout)
    assert ok["ok"] is True and ok["keys"]["energy"] == "REF_energy"
    bad = tmp_path / "bad.xyz"
    bad.write_text("2\nProperties=species:S:1:pos:R:3 REF_energy=nan\nH 0 0 0\nNa 0 0 0.7\n")
    proc = run("validate", str(bad), "--model", "demo-gfn1-weak", "--json", check=False)
    assert proc.returncode == 1
    found = {f["code"] for f in json.loads(proc.stdout)["findings"]}
    assert {"non_finite", "elements_not_covered", "missing_forces"} <= found
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    proc = run("validate", str(empty), "--json", check=False)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["findings"][0]["code"] == "empty"


@pytest.mark.parametrize("args, needle", [
    (("inspect", "no-such-model"), "unknown model"),
    (("evaluate", "demo-gfn1-weak", "/no/such/file.xyz"), "no such file"),
    (("inspect", "mace-mp-0-small"), "Missing file"),
])
def test_bad_input_exits_non_zero_with_one_line(args, needle):
    proc = run(*args, "--json", check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and needle in last
    assert proc.stdout.strip() == ""


def test_help_lists_every_command_and_the_package_runs_as_a_module():
    listed = run("--help").stdout
    for command in ("models", "inspect", "replay", "validate", "evaluate", "e0", "train", "tune",
                    "study", "runs", "cancel", "settings", "compare", "dimer", "md", "workshop",
                    "demo", "app"):
        assert command in listed, command
    proc = subprocess.run([sys.executable, "-m", "mlipft_core.cli", "demo", "paths", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads(run("demo", "paths", "--json").stdout)


def test_demo_models_replay_the_bundled_pool_and_other_models_nothing(demo, tmp_path):
    from mlipft_core.defaults import replay_file_for, replay_or_default

    assert replay_file_for("demo-gfn1-strong") == demo["replay_pool"]
    assert replay_file_for("DEMO-GFN1-WEAK") == demo["replay_pool"]  # names are case-blind
    # an official model: the cache file of mace's replay set of it, fetched or not
    from mlipft_core.replay_sets import REPLAY_SETS

    assert replay_file_for("mace-mp-0-small") == str(REPLAY_SETS["mp"].path())
    assert replay_file_for("mace-omat-0-small") == str(REPLAY_SETS["omat"].path())
    assert replay_file_for("mace-off23-small") is None
    assert replay_file_for(demo["models"]["demo-gfn1-weak"]) is None  # a path: the user's file
    assert replay_file_for(None) is None
    assert replay_or_default(str(tmp_path / "own.xyz"), "demo-gfn1-strong") == str(
        tmp_path / "own.xyz")


def test_train_presets_reach_the_run_and_options_override_them(demo, tmp_path):
    """``--preset "study protocol"`` trains with the study's settings for the strategy; an
    option given as well overrides the preset; ``mlipft runs --json`` names the preset."""
    out = run("train", "--strategy", "freeze-a", "--model", "demo-gfn1-weak", "--train",
              demo["sn2_train"], "--epochs", "1", "--preset", "study protocol",
              "--clip-grad", "5", "--json")
    assert out.returncode == 0, out.stderr
    rec = json.loads(out.stdout)
    run("cancel", rec["id"])
    text = (Path(os.environ["MLIPFT_WORKSPACE"]) / "runs" / rec["id"] / "config.yaml").read_text()
    for line in ("lr: 0.001", "ema_decay: 0.999", "clip_grad: 5.0", "loss: universal",
                 "weight_decay: 0.0", "default_dtype: float64", "forces_weight: 10.0"):
        assert line + "\n" in text, (line, text)
    assert rec["preset"] == "study protocol"
    short = run("train", "--strategy", "naive", "--model", "demo-gfn1-weak", "--train",
                demo["sn2_train"], "--epochs", "1", "--json")
    srec = json.loads(short.stdout)
    run("cancel", srec["id"])
    assert srec["preset"] == "short budget"
    bad = run("train", "--strategy", "naive", "--model", "demo-gfn1-weak", "--train",
              demo["sn2_train"], "--loss", "huber", "--clip-grad", "-1", check=False)
    assert bad.returncode != 0 and "clip_grad must be a finite number > 0" in bad.stderr


def test_demo_data_is_anchored_by_its_bundled_isolated_atoms(demo, tmp_path):
    from mlipft_core.defaults import isolated_file_or_default

    assert isolated_file_or_default(None, demo["sn2_train"]) == demo["sn2_isolated_atoms"]
    assert isolated_file_or_default("", demo["sn2_train"]) == demo["sn2_isolated_atoms"]
    assert isolated_file_or_default("mine.xyz", demo["sn2_train"]) == "mine.xyz"
    assert isolated_file_or_default(None, str(tmp_path / "train.xyz")) is None


def test_study_inputs_default_to_the_demo_world_and_fill_a_custom_study(demo):
    from mlipft_core.defaults import study_inputs
    from mlipft_core.study import StudyError

    inputs = study_inputs(epochs=3, strategies=["naive"])
    assert inputs.model == demo["models"]["demo-gfn1-strong"]
    assert inputs.weak_model == demo["models"]["demo-gfn1-weak"]
    assert (inputs.train, inputs.replay) == (demo["sn2_train"], demo["replay_pool"])
    assert (inputs.epochs, inputs.strategies) == (3, ["naive"])
    custom = study_inputs(model="demo-gfn1-weak", train=demo["sn2_train"],
                          test=demo["sn2_test"], pretrain_test=demo["pretrain_test"],
                          pilot_lrs="1e-3, 3e-3")
    assert custom.model == demo["models"]["demo-gfn1-weak"] and custom.replay is None
    assert custom.isolated_file == demo["sn2_isolated_atoms"]
    assert custom.short_range_test == demo["short_range_test"]
    assert custom.pilot_lrs == [1e-3, 3e-3] and custom.epochs == 20
    with pytest.raises(StudyError, match="give --train and --test"):
        study_inputs(model="demo-gfn1-weak", train=demo["sn2_train"])
