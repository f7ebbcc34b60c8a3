"""Hostile data and run options through the real command line: what ``validate`` calls an
error is refused by ``evaluate`` and ``train`` too, bad run options are refused before any
run is queued, a sweep is checked whole, a diverging run ends failed, and plain
``energy``/``forces`` keys train."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import mlipft_cmd

TIMEOUT = 600


# ----------------------------------------------------------------------------- data files
def _frames(demo: dict, n: int = 10) -> list[list[str]]:
    """The first ``n`` configurations of the demo SN2 training file, as lines."""
    lines = Path(demo["sn2_train"]).read_text().splitlines(keepends=True)
    out, i = [], 0
    while i < len(lines) and len(out) < n:
        k = int(lines[i])
        out.append(lines[i:i + k + 2])
        i += k + 2
    return out


def _write(path: Path, frames: list[list[str]]) -> str:
    path.write_text("".join("".join(f) for f in frames))
    return str(path)


def _comment(frame: list[str], change) -> list[str]:
    return [frame[0], change(frame[1].rstrip("\n")) + "\n", *frame[2:]]


def ten(tmp: Path, demo: dict) -> str:
    return _write(tmp / "ten.xyz", _frames(demo))


def zero_atoms(tmp: Path, demo: dict) -> str:
    f = _frames(demo)
    empty = ["0\n", 'Properties=species:S:1:pos:R:3 REF_energy=-1.0 pbc="F F F"\n']
    return _write(tmp / "zero.xyz", f[:5] + [empty] + f[5:])


def stress_4_values(tmp: Path, demo: dict) -> str:
    return _write(tmp / "stress4.xyz", [_comment(f, lambda c: c + ' REF_stress="1 2 3 4"')
                                        for f in _frames(demo)])


def _drop_energy(comment: str) -> str:
    return re.sub(r" REF_energy=\S+", "", comment)


def mixed_energy(tmp: Path, demo: dict) -> str:
    return _write(tmp / "mixed.xyz", [_comment(f, _drop_energy) if k % 2 else f
                                      for k, f in enumerate(_frames(demo))])


def unlabelled(tmp: Path, demo: dict) -> str:
    out = []
    for f in _frames(demo):
        c = _drop_energy(f[1].rstrip("\n")).replace(":REF_forces:R:3", "")
        out.append([f[0], c + "\n"] + [" ".join(ln.split()[:4]) + "\n" for ln in f[2:]])
    return _write(tmp / "unlabelled.xyz", out)


def corrupt_gzip(tmp: Path, demo: dict) -> str:
    data = bytearray(gzip.compress(Path(ten(tmp, demo)).read_bytes()))
    data[200:400] = bytes(b ^ 0x55 for b in data[200:400])
    path = tmp / "bad.xyz.gz"
    path.write_bytes(bytes(data))
    return str(path)


def plain_keys(tmp: Path, demo: dict) -> str:
    """``energy=`` and ``forces`` in place of REF_energy and REF_forces."""
    return _write(tmp / "plain.xyz", [
        _comment(f, lambda c: c.replace("REF_forces", "forces").replace("REF_energy", "energy"))
        for f in _frames(demo)])


# ----------------------------------------------------------------------------- helpers
def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(mlipft_cmd() + list(args), capture_output=True, text=True,
                          timeout=TIMEOUT, cwd=cwd)


def train_args(train: str, demo: dict, *extra: str) -> list[str]:
    """``mlipft train`` of one naive run for one epoch on ``train`` (options in ``extra``
    come last, so they override)."""
    return ["train", "--strategy", "naive", "--model", "demo-gfn1-strong", "--train", train,
            "--isolated-file", demo["sn2_isolated_atoms"], "--epochs", "1", *extra]


def error_line(out: subprocess.CompletedProcess) -> str:
    """The one ``error: ...`` line a refused command ends with (libraries may print notes
    before it); exit code 2 and nothing on stdout."""
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout.strip() == "", out.stdout
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], out.stderr
    line = errors[0]
    assert not re.search(r"\b[A-Z][A-Za-z]*(Error|Exception)\b", line), line  # no class names
    return line


def no_runs() -> None:
    """Nothing was queued: no run folder, no subset, and ``mlipft runs`` lists nothing."""
    root = Path(os.environ["MLIPFT_WORKSPACE"])
    assert not any((root / "runs").glob("*")), list((root / "runs").glob("*"))
    assert not any((root / "subsets").glob("*"))
    out = run("runs", "--json")
    assert out.returncode == 0 and json.loads(out.stdout) == [], out.stdout


# ----------------------------------------------------------------------------- 1. data
@pytest.mark.parametrize("make, code, evaluate_says, train_says", [
    (zero_atoms, "no_atoms", "configuration #5 has no atoms", "1 configuration has no atoms"),
    (stress_4_values, "stress_shape", ": its stress 'REF_stress' has 4 values",
     "stress of the wrong shape"),
    (mixed_energy, "missing_energy", "configuration #1 has no 'REF_energy' value",
     "5 of 10 configurations have no 'REF_energy' value"),
    (unlabelled, "missing_energy", "no energy label found",
     "no configuration has an energy label"),
    (corrupt_gzip, "unreadable", "bad.xyz.gz: not a readable gzip file",
     "bad.xyz.gz: not a readable gzip file"),
], ids=["zero_atoms", "stress_4_values", "mixed_energy", "unlabelled", "corrupt_gzip"])
def test_data_validate_rejects_is_refused_by_evaluate_and_train(tmp_path, demo, make, code,
                                                                 evaluate_says, train_says):
    data = make(tmp_path, demo)
    out = run("validate", data, "--json")
    assert out.returncode == 1, out.stdout + out.stderr
    report = json.loads(out.stdout)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert report["ok"] is False and code in {f["code"] for f in errors}, report
    if code == "unreadable":
        assert "\n" not in errors[0]["message"] and "Error -3" not in errors[0]["message"]
    line = error_line(run("evaluate", "demo-gfn1-strong", data))
    assert evaluate_says in line, line
    line = error_line(run(*train_args(data, demo)))
    assert train_says in line, line
    no_runs()


# ----------------------------------------------------------------------------- 2. options
_HUGE_E0 = '{"H": 1' + "0" * 399 + ', "C": -1000.0, "F": -2700.0, "Cl": -12500.0}'


@pytest.mark.parametrize("extra, says", [
    (["--batch-size", "1000000"], "the batch size 1000000 is larger than the training set"),
    (["--seed", "-1"], "the seed must be a whole number from 0 to 4294967295"),
    (["--seeds", "99999999999999999999"], "the seed must be a whole number from 0 to"),
    (["--seeds", "0,1e400"], "--seeds: '1e400' is not a finite number"),
    (["--e0", _HUGE_E0], "the value for H is too large to be an energy in eV"),
], ids=["batch_size_above_training_set", "negative_seed", "huge_seed", "infinite_seed",
        "e0_too_large_for_a_float"])
def test_run_options_are_refused_at_submit(tmp_path, demo, extra, says):
    line = error_line(run(*train_args(ten(tmp_path, demo), demo, *extra)))
    assert says in line, line
    no_runs()


# ----------------------------------------------------------------------------- 3. sweeps
@pytest.mark.parametrize("extra, says", [
    # naive runs are fine, the multihead ones lack replay data (a copied model has none)
    (["--strategy", "naive,multihead-replay", "--sizes", "2,5", "--batch-size", "1",
      "--model", "{copy}"], "needs a replay file"),
    # the larger size would train, the smaller has no full batch of 5
    (["--sizes", "2,9"], "the smallest training-set size"),
    # the first seed is fine, the second is not
    (["--seeds", "0,4294967296"], "the seed must be a whole number"),
], ids=["one_strategy_bad", "one_size_bad", "one_seed_bad"])
def test_a_sweep_is_checked_whole_before_any_run_is_queued(tmp_path, demo, extra, says):
    copy = tmp_path / "copy.model"
    shutil.copy(demo["models"]["demo-gfn1-strong"], copy)
    extra = [x.replace("{copy}", str(copy)) for x in extra]
    line = error_line(run(*train_args(ten(tmp_path, demo), demo, *extra)))
    assert says in line, line
    no_runs()


# ----------------------------------------------------------------------------- 4. divergence
def test_a_run_whose_loss_becomes_nan_ends_failed(tmp_path, demo):
    out = run(*train_args(ten(tmp_path, demo), demo, "--lr", "1e9", "--batch-size", "2",
                          "--wait", "--json"))
    assert out.returncode == 1, out.stderr  # a run failed
    row = json.loads(out.stdout)
    assert row["status"] == "failed", row
    assert "training diverged" in row["reason"] and "NaN" in row["reason"], row["reason"]
    assert "lower the learning rate" in row["reason"] and row["model_path"] is None


@pytest.mark.parametrize("loss", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_loss_in_mace_results_fails_the_run(loss):
    """mace exits 0 and writes its model; the loss it logged decides (no training here)."""
    from mlipft_core.jobs.records import RunRecord, RunStore
    from mlipft_core.jobs.runner import finish

    store = RunStore()
    rec = store.create(RunRecord(id="diverged", name="diverged", strategy="naive",
                                 status="running", max_epochs=1,
                                 spec={"settings": {"lr": 0.5}}))
    folder = store.folder(rec.id)
    (folder / "results").mkdir()
    (folder / "results" / "diverged_run-0_train.txt").write_text(
        '{"loss": 1.5, "mode": "eval", "epoch": null, "head": "Default"}\n'
        f'{{"loss": 2.0, "mode": "opt", "epoch": 0}}\n{{"loss": {loss}, "mode": "opt", '
        '"epoch": 0}\n')
    (folder / "diverged.model").write_bytes(b"model")
    assert finish(store, rec.id, 0, cancelled=False) == "failed"
    done = store.read(rec.id)
    assert done.status == "failed" and done.model_path is None
    value = "NaN" if loss == "NaN" else str(float(loss.replace("Infinity", "inf")))
    assert f"the training loss became {value} at epoch 0" in done.reason, done.reason
    assert "(it was 0.5)" in done.reason
    # an epoch counts as done once it is validated: this run diverged before that
    assert done.metrics["epochs_done"] is None


# ----------------------------------------------------------------------------- 5. plain keys
@pytest.mark.parametrize("case", ["trains", "validation_file_names_them_otherwise"])
def test_plain_energy_and_forces_keys_train(tmp_path, demo, case):
    data = plain_keys(tmp_path, demo)
    out = run("validate", data, "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["ok"], out.stdout
    if case == "validation_file_names_them_otherwise":
        line = error_line(run(*train_args(data, demo, "--valid", ten(tmp_path, demo))))
        assert "holds its energy labels under 'REF_energy'" in line and "'energy'" in line
        no_runs()
        return
    out = run(*train_args(data, demo, "--wait", "--json"))
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)  # one run: its row
    assert row["status"] == "done", row
    assert row["model_path"] and Path(row["model_path"]).is_file()
    config = (Path(row["model_path"]).parent / "config.yaml").read_text()
    assert "energy_key: energy\n" in config and "forces_key: forces\n" in config, config
