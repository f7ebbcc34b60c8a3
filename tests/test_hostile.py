"""Hostile and careless input through the real command line: nothing runs that nobody asked
for, and the message says what is wrong in one line."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from conftest import mlipft_cmd
from mlipft_core.jobs.slurm import SlurmError, extra_parameters


def _train(tiny, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(mlipft_cmd() + ["train", "--strategy", "naive", "--model",
                                          "demo-gfn1-weak", "--train", str(tiny / "train.xyz"),
                                          "--epochs", "1", *extra],
                          capture_output=True, text=True, timeout=300)


CONTROL = "must not contain line breaks or other control characters"


@pytest.mark.parametrize("extra, why", [
    ('"--exclusive\ntouch {marker}"', CONTROL), ("--exclusive\ntouch {marker}", CONTROL),
    ("--comment=x\r#SBATCH --wrap=touch {marker}", CONTROL),
    ("'--x;touch {marker}'", "is not an sbatch option"), ("--qos=a\x1bb", CONTROL)])
def test_extra_sbatch_options_cannot_smuggle_a_command(tiny, tmp_path, extra, why):
    marker = tmp_path / "pwned"
    with pytest.raises(SlurmError, match=re.escape(why)):
        extra_parameters(extra.format(marker=marker))
    out = _train(tiny, "--executor", "slurm", "--slurm-cpus", "1",
                 f"--slurm-extra={extra.format(marker=marker)}")
    assert out.returncode == 2, out.stdout + out.stderr
    line = out.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line and "Error:" not in line, line
    assert why in line, line
    assert not marker.exists()


@pytest.mark.parametrize("extra, instead", [
    ("--time=UNLIMITED", "; use --slurm-time"), ("--signal=B:USR1@1", ""),
    ("--ntasks-per-node=4", ""), ("--nodes 2", ""), ("--cpus-per-task=64", "; use --slurm-cpus"),
    ("--job-name=other", ""), ("--partition=gpu", "; use --slurm-partition"),
    ("--mem=1T", "; use --slurm-mem"), ("--gpus=8", "; use --slurm-gpus")])
def test_extra_sbatch_options_cannot_change_what_the_workbench_sets(tiny, extra, instead):
    """submitit lets extra options override its own: a --time here would outlast the run's
    time limit, --nodes would run one run folder twice."""
    key = extra.split("=")[0].split()[0]
    why = f"{key} is set by the workbench and cannot be given here{instead}"
    with pytest.raises(SlurmError, match=re.escape(why) + "$"):
        extra_parameters(extra)
    out = _train(tiny, "--executor", "slurm", "--slurm-cpus", "1", f"--slurm-extra={extra}")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip() == f"error: {why}", out.stderr


def test_ordinary_extra_sbatch_options_still_read():
    assert extra_parameters("--qos=short --exclusive --mail-user me@example.org") == {
        "qos": "short", "exclusive": True, "mail_user": "me@example.org"}


def test_the_readme_form_of_extra_sbatch_options_is_accepted():
    out = subprocess.run(mlipft_cmd() + ["settings", "--slurm-extra", "--qos=short", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["slurm"]["extra"] == "--qos=short"
