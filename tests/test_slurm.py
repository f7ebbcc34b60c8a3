"""Runs on a real SLURM cluster (the local single-node one that .ci/run starts): a one-epoch
fine-tune, a sweep as a job array, live progress, cancel, and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import assert_done, mlipft_cmd
from mlipft_core import jobs
from mlipft_core.jobs import slurm
from mlipft_core.strategies import RunSpec
from mlipft_core.workspace import Workspace

OK, WHY = slurm.available()
if not OK and os.environ.get("MLIPFT_REQUIRE_SLURM"):
    raise RuntimeError(f"SLURM is required here but not reachable: {WHY}")
pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(not OK, reason=f"no SLURM cluster reachable: {WHY} "
                                                "(start one with scripts/local_slurm.sh start)")]

OPTS = {"cpus": 1, "time_min": 20}


def spec(tiny, model, strategy, **settings) -> RunSpec:
    return RunSpec(strategy, model, str(tiny / "train.xyz"), str(tiny / "valid.xyz"),
                   settings={"max_num_epochs": 1, **settings})


def test_one_epoch_fine_tune_on_slurm(tiny, weak_model):
    rec = jobs.submit(spec(tiny, weak_model, "naive"), executor="slurm", slurm=OPTS)
    assert rec.executor == "slurm" and rec.slurm_job_id and rec.slurm_job_id.isdigit()
    final = jobs.wait(rec.id, timeout=600)
    assert final.status == "done", (final.reason, final.log_tail)
    assert Path(final.model_path).is_file() and final.metrics["epochs_done"] == 1
    assert final.slurm_job_id == rec.slurm_job_id and final.host
    # the job ran the prepared folder: mace's log is in the run folder, not elsewhere
    assert "VERIFYING SETTINGS" in (Workspace().runs / rec.id / "train.log").read_text()


def test_sweep_is_one_job_array(tiny, weak_model):
    recs = jobs.submit_sweep([spec(tiny, weak_model, "naive"), spec(tiny, weak_model,
                                                                     "freeze-b")],
                             executor="slurm", slurm=OPTS)
    ids = [r.slurm_job_id for r in recs]
    assert [i.split("_")[1] for i in ids] == ["0", "1"]
    assert len({i.split("_")[0] for i in ids}) == 1  # one array
    for r in recs:
        assert_done(jobs.wait(r.id, timeout=600))


def test_progress_while_running_and_cancel(tiny, weak_model):
    rec = jobs.submit(spec(tiny, weak_model, "naive", max_num_epochs=500), executor="slurm",
                      slurm=OPTS)
    deadline = time.time() + 300
    prog = None
    while time.time() < deadline:
        cur = jobs.get_run(rec.id)
        prog = jobs.progress(cur)
        if cur.status == "running" and prog.epoch is not None and prog.epoch >= 1:
            break
        time.sleep(1)
    assert prog is not None and prog.epoch >= 1 and 0 < prog.fraction < 1
    assert prog.series()["Default"]  # validation errors per epoch, read from the run folder
    jobs.cancel(rec.id)
    final = jobs.wait(rec.id, timeout=120)
    assert final.status == "cancelled"
    deadline = time.time() + 60
    while rec.slurm_job_id in (slurm.active_jobs() or {}) and time.time() < deadline:
        time.sleep(1)
    assert rec.slurm_job_id not in (slurm.active_jobs() or {})


def test_cancel_a_pending_job(tiny, weak_model):
    # a job that cannot start yet (it waits for a job that never ends) is cancelled in the queue
    hold = subprocess.run(["sbatch", "--parsable", "--hold", "--wrap", "sleep 600"],
                          capture_output=True, text=True, check=True).stdout.strip()
    try:
        rec = jobs.submit(spec(tiny, weak_model, "naive"), executor="slurm",
                          slurm={**OPTS, "extra": f"--dependency=afterok:{hold}"})
        assert jobs.get_run(rec.id).status == "queued"
        assert jobs.cancel(rec.id).status == "cancelled"
        time.sleep(2)
        assert rec.slurm_job_id not in (slurm.active_jobs() or {})
    finally:
        subprocess.run(["scancel", hold], capture_output=True)


@pytest.mark.slow
def test_cli_train_on_slurm_and_one_table(tiny, weak_model):
    out = subprocess.run(mlipft_cmd() + ["train", "--strategy", "freeze-b", "--model",
                                         "demo-gfn1-weak", "--train", str(tiny / "train.xyz"),
                                         "--epochs", "1", "--executor", "slurm",
                                         "--slurm-cpus", "1", "--slurm-time", "20",
                                         "--wait", "--json"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["status"] == "done" and d["executor"] == "slurm" and d["slurm_job_id"]
    local = jobs.submit(spec(tiny, weak_model, "freeze-b"), executor="local")
    assert_done(jobs.wait(local.id, timeout=600))
    rows = json.loads(subprocess.run(mlipft_cmd() + ["runs", "--json"], capture_output=True,
                                     text=True, timeout=120, check=True).stdout)
    assert {r["executor"] for r in rows} == {"local", "slurm"}
    assert [r["slurm_job_id"] for r in rows if r["executor"] == "slurm"] == [d["slurm_job_id"]]


def test_the_job_keeps_the_runs_time_limit_with_extra_options(tiny, weak_model):
    """The job script holds the workbench's own limit once, next to the extra options, and
    the scheduler has the job at that limit."""
    rec = jobs.submit(spec(tiny, weak_model, "naive"), executor="slurm",
                      slurm={**OPTS, "time_min": 7, "extra": "--comment=mlipft-test"})
    job = rec.slurm_job_id
    script = (Workspace().root / "slurm" / job / f"{job}_submission.sh").read_text()
    sbatch = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert [line for line in sbatch if line.startswith("#SBATCH --time")] == \
        ["#SBATCH --time=7"], sbatch
    assert "#SBATCH --comment=mlipft-test" in sbatch
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True,
                           timeout=60).stdout
    assert "TimeLimit=00:07:00" in shown, shown
    assert_done(jobs.wait(rec.id, timeout=600))


def test_bad_slurm_options_are_refused(tiny, weak_model):
    for opts, msg in (({"time_min": 0}, "time limit"), ({"cpus": 0}, "CPUs"),
                      ({"extra": "qos=short"}, "--name=value"),
                      ({"extra": "--array=0-3"}, "set by the workbench"),
                      ({"extra": "--time=UNLIMITED"}, "use --slurm-time"),
                      ({"partition": "no-such-partition"}, "sbatch refused")):
        with pytest.raises(jobs.MlipftError, match=msg):
            jobs.submit(spec(tiny, weak_model, "naive"), executor="slurm",
                        slurm={**OPTS, **opts})
    recs = jobs.list_runs()
    assert all(r.status == "failed" for r in recs)  # only sbatch's refusal leaves a record
