"""The ``mlipft`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
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
