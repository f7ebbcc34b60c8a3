"""Hostile and careless input through the real command line: nothing runs that nobody asked
for, and the message says what is wrong in one line."""

from __future__ import annotations

import subprocess

import pytest

from conftest import mlipft_cmd
from mlipft_core.jobs.slurm import SlurmError, extra_parameters


def _train(tiny, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(mlipft_cmd() + ["train", "--strategy", "naive", "--model",
                                          "demo-gfn1-weak", "--train", str(tiny / "train.xyz"),
                                          "--epochs", "1", *extra],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("extra", ['"--exclusive\ntouch {marker}"', "--exclusive\ntouch {marker}",
                                   "--comment=x\r#SBATCH --wrap=touch {marker}",
                                   "'--x;touch {marker}'", "--qos=a\x1bb"])
def test_extra_sbatch_options_cannot_smuggle_a_command(tiny, tmp_path, extra):
    marker = tmp_path / "pwned"
    with pytest.raises(SlurmError):
        extra_parameters(extra.format(marker=marker))
    out = _train(tiny, "--executor", "slurm", "--slurm-cpus", "1",
                 f"--slurm-extra={extra.format(marker=marker)}")
    assert out.returncode == 2, out.stdout + out.stderr
    line = out.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line and "Error:" not in line, line
    assert "sbatch option" in line or "control characters" in line, line
    assert not marker.exists()


def test_ordinary_extra_sbatch_options_still_read():
    assert extra_parameters("--qos=short --exclusive --mail-user me@example.org") == {
        "qos": "short", "exclusive": True, "mail_user": "me@example.org"}


def test_the_readme_form_of_extra_sbatch_options_is_accepted():
    import json

    out = subprocess.run(mlipft_cmd() + ["settings", "--slurm-extra", "--qos=short", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["slurm"]["extra"] == "--qos=short"
