"""Strategies as real mace_run_train runs on the queue: every strategy, freezing, LoRA,
multihead heads, cancellation, killed processes, queue restarts, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from ase.io import read, write

from mlipft_core import jobs
from mlipft_core.jobs import worker
from mlipft_core.strategies import STRATEGIES, RunSpec, StrategyError, build_config
from mlipft_core.workspace import Workspace

from conftest import mlipft_cmd


@pytest.fixture
def tiny(tmp_path, demo):
    d = tmp_path / "tiny"
    d.mkdir()
    write(d / "train.xyz", read(demo["sn2_train"], ":20"))
    write(d / "valid.xyz", read(demo["sn2_valid"], ":5"))
    write(d / "replay.xyz", read(demo["replay_pool"], ":30"))
    return d


def spec(tiny, weak_model, strategy, **settings) -> RunSpec:
    return RunSpec(strategy, weak_model, str(tiny / "train.xyz"), str(tiny / "valid.xyz"),
                   e0s="estimated", replay_file=str(tiny / "replay.xyz"),
                   settings={"max_num_epochs": 1, **settings})


def params_changed(a: torch.nn.Module, b: torch.nn.Module) -> dict[str, bool]:
    sa, sb = a.state_dict(), b.state_dict()
    out: dict[str, bool] = {}
    for k, v in sb.items():
        if k in sa and sa[k].shape == v.shape and v.is_floating_point():
            top = k.split(".")[0]
            out[top] = out.get(top, False) or not torch.allclose(sa[k].float(), v.float())
    return out


def test_every_strategy_trains_and_yields_a_loadable_model(tiny, weak_model):
    specs = [spec(tiny, weak_model, n, **({"num_samples_pt": 20} if "replay" in n else {}))
             for n in STRATEGIES]
    recs = jobs.submit_sweep(specs)
    assert len({r.sweep for r in recs}) == 1
    found = torch.load(weak_model, weights_only=False)
    done = {}
    for r in recs:
        r = jobs.wait(r.id, timeout=900)
        assert r.status == "done", (r.strategy, r.reason, r.log_tail)
        model = torch.load(r.model_path, weights_only=False)
        done[r.strategy] = model
        assert Path(r.model_path).is_file() and r.metrics["epochs_done"] == 1
    changed = {n: params_changed(found, m) for n, m in done.items()}
    assert changed["freeze-a"]["readouts"] and changed["freeze-a"]["products"]
    assert not changed["freeze-a"]["interactions"] and not changed["freeze-a"]["node_embedding"]
    assert changed["freeze-b"]["readouts"]
    assert not any(changed["freeze-b"][k] for k in ("interactions", "products", "node_embedding"))
    assert changed["naive"]["interactions"] and changed["naive"]["node_embedding"]
    # LoRA adapters are merged: a plain model with the foundation's parameter layout
    lora = done["lora"]
    assert sorted(lora.state_dict()) == sorted(found.state_dict())
    assert changed["lora"]["interactions"] and not changed["lora"]["scale_shift"]
    for n in ("multihead-replay", "pseudolabel-replay", "replay-lora"):
        assert list(done[n].heads) == ["pt_head", "Default"], n
    # single-head fine-tunes keep every foundation element and the chosen (estimated) E0s
    e0 = done["naive"].atomic_energies_fn.atomic_energies.flatten().tolist()
    assert [int(z) for z in done["naive"].atomic_numbers] == [1, 6, 7, 8, 9, 17]
    assert e0[5] < -5000  # Cl: the DFT-scale estimated E0, not the GFN1 one (-113 eV)
    assert [int(z) for z in done["scratch"].atomic_numbers] == [1, 6, 9, 17]
    rec = jobs.get_run(recs[0].id)
    cfg = (Workspace().runs / rec.id / "config.yaml").read_text()
    assert "mace_run_train" in (Workspace().runs / rec.id / "command.sh").read_text()
    assert "foundation_model_elements: true" in cfg


def test_cancel_and_killed_process(tiny, weak_model):
    long = jobs.submit(spec(tiny, weak_model, "naive", max_num_epochs=500))
    deadline = time.time() + 120
    while jobs.get_run(long.id).status != "running" and time.time() < deadline:
        time.sleep(0.5)
    queued = jobs.submit(spec(tiny, weak_model, "freeze-b", max_num_epochs=500))
    victim = jobs.submit(spec(tiny, weak_model, "freeze-a", max_num_epochs=500))
    # two CPU slots: the third run waits in the queue and is cancelled there
    assert jobs.cancel(victim.id).status == "cancelled"
    while jobs.get_run(queued.id).status != "running" and time.time() < deadline:
        time.sleep(0.5)
    pid = jobs.get_run(queued.id).pid
    os.kill(pid, signal.SIGKILL)
    failed = jobs.wait(queued.id, timeout=60)
    assert failed.status == "failed" and "signal 9" in failed.reason
    jobs.cancel(long.id)
    cancelled = jobs.wait(long.id, timeout=60)
    assert cancelled.status == "cancelled"
    assert not worker.pid_alive(cancelled.pid)
    time.sleep(1)
    assert jobs.get_run(victim.id).status == "cancelled"  # never started


def test_queue_state_survives_a_restart(tiny, weak_model):
    rec = jobs.submit(spec(tiny, weak_model, "freeze-b"))
    root = Workspace().root
    pid = int(worker.consumer_pidfile(root, "cpu").read_text())
    os.killpg(pid, signal.SIGKILL)  # the queue goes down (e.g. the machine's app restarts)
    time.sleep(0.5)
    r = jobs.get_run(rec.id)
    if r.status == "running":  # it had started: the orphaned process finishes on its own
        final = jobs.wait(rec.id, timeout=300)
        assert final.status in ("done", "failed")
    else:
        assert r.status == "queued"
        worker.ensure_consumer(root, "cpu")  # a new consumer picks it up from SQLite
        assert jobs.wait(rec.id, timeout=300).status == "done"


def test_bad_settings_are_refused(tiny, weak_model):
    with pytest.raises(StrategyError, match="needs a replay file"):
        build_config(RunSpec("multihead-replay", weak_model, str(tiny / "train.xyz")), tiny)
    with pytest.raises(StrategyError, match="'average' E0s cannot be used"):
        build_config(RunSpec("pseudolabel-replay", weak_model, str(tiny / "train.xyz"),
                             e0s="average", replay_file=str(tiny / "replay.xyz")), tiny)
    with pytest.raises(StrategyError, match="unknown strategy"):
        build_config(RunSpec("freeze-everything", weak_model, str(tiny / "train.xyz")), tiny)
    with pytest.raises(StrategyError, match="lr must be a finite number > 0"):
        build_config(RunSpec("naive", weak_model, str(tiny / "train.xyz"),
                             settings={"lr": 0}), tiny)
    with pytest.raises(StrategyError, match="lr must be a finite number > 0"):
        build_config(RunSpec("naive", weak_model, str(tiny / "train.xyz"),
                             settings={"lr": float("nan")}), tiny)
    with pytest.raises(StrategyError, match="replay samples"):
        build_config(RunSpec("multihead-replay", weak_model, str(tiny / "train.xyz"),
                             replay_file=str(tiny / "replay.xyz"),
                             settings={"num_samples_pt": 0}), tiny)
    with pytest.raises(StrategyError, match="no GPU"):
        build_config(RunSpec("naive", weak_model, str(tiny / "train.xyz"),
                             settings={"device": "cuda"}), tiny)
    with pytest.raises(StrategyError, match="no value for C, Cl, F"):
        jobs.submit(RunSpec("naive", weak_model, str(tiny / "train.xyz"), e0s='{"H": 0.0}'))
    assert jobs.list_runs() == []  # nothing was queued


def test_cli_train_wait_and_runs(tiny):
    out = subprocess.run(mlipft_cmd() + ["train", "--strategy", "freeze-b", "--model",
                                         "demo-gfn1-weak", "--train", str(tiny / "train.xyz"),
                                         "--epochs", "1", "--wait", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["status"] == "done" and Path(d["model_path"]).is_file() and d["id"]
    rows = json.loads(subprocess.run(mlipft_cmd() + ["runs", "--json"], capture_output=True,
                                     text=True, timeout=120).stdout)
    assert rows[0]["id"] == d["id"] and rows[0]["strategy"] == "freeze-b"
    bad = subprocess.run(mlipft_cmd() + ["cancel", "no-such-run"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "no run" in bad.stderr


def test_size_sweep_for_learning_curves(tiny, weak_model):
    from mlipft_core.data import read_frames

    recs = jobs.submit_size_sweep(spec(tiny, weak_model, "freeze-b"), [5, 15], seed=1)
    assert [r.spec["train_size"] for r in recs] == [5, 15]
    for r in recs:
        final = jobs.wait(r.id, timeout=600)
        assert final.status == "done" and final.spec["train_size"] in (5, 15)
        assert len(read_frames(final.spec["train_file"])) == final.spec["train_size"]
    small = {a.get_positions().tobytes() for a in read_frames(recs[0].spec["train_file"])}
    large = {a.get_positions().tobytes() for a in read_frames(recs[1].spec["train_file"])}
    assert small <= large  # nested subsets
    with pytest.raises(StrategyError, match="between 2 and 20"):
        jobs.submit_size_sweep(spec(tiny, weak_model, "naive"), [1, 50])
