"""Strategies as real mace_run_train runs on the queue: every strategy, freezing, LoRA,
multihead heads, cancellation, killed processes, queue restarts, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from ase.io import read, write

from conftest import assert_done, mlipft_cmd
from mlipft_core import e0 as e0mod
from mlipft_core import jobs
from mlipft_core.data import read_frames
from mlipft_core.e0 import format_energy_per_atom
from mlipft_core.jobs.local import Dispatcher, dispatcher_alive, dispatcher_pid, ensure_dispatcher
from mlipft_core.jobs.records import (
    InvalidRunNameError,
    RunRecord,
    RunStore,
    UnreadableRunError,
    same_process_alive,
    this_host,
)
from mlipft_core.jobs.runner import execute, steps_of
from mlipft_core.registry import inspect_model, load_model, model_e0s
from mlipft_core.replay import replay_of, replay_sentence
from mlipft_core.strategies import STRATEGIES, RunSpec, StrategyError, build_config
from mlipft_core.workspace import Workspace


def spec(tiny, weak_model, strategy, **settings) -> RunSpec:
    return RunSpec(strategy, weak_model, str(tiny / "train.xyz"), str(tiny / "valid.xyz"),
                   e0s="estimated", replay_file=str(tiny / "replay.xyz"),
                   settings={"max_num_epochs": 1, **settings})


def _fingerprint(atoms) -> tuple:
    """A structure by its elements and positions (to 1e-6 Å)."""
    return tuple(atoms.numbers), tuple(round(float(x), 6) for x in atoms.positions.ravel())


def params_changed(a: torch.nn.Module, b: torch.nn.Module) -> dict[str, bool]:
    sa, sb = a.state_dict(), b.state_dict()
    out: dict[str, bool] = {}
    for k, v in sb.items():
        if k in sa and sa[k].shape == v.shape and v.is_floating_point():
            top = k.split(".")[0]
            out[top] = out.get(top, False) or not torch.allclose(sa[k].float(), v.float())
    return out


@pytest.mark.slow
def test_every_strategy_trains_and_yields_a_loadable_model(tiny, weak_model):
    # the multihead strategies replay 20 of the replay file's 30 structures (replay + LoRA
    # chosen by farthest point sampling): mace itself would replay all 30 of a local file
    specs = [spec(tiny, weak_model, n, **({"num_samples_pt": 20} if "replay" in n else {}),
                  **({"subselect_pt": "fps"} if n == "replay-lora" else {}))
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
    pool = {_fingerprint(a) for a in read(tiny / "replay.xyz", ":")}
    for r in recs:
        folder = Workspace().runs / r.id
        replay = replay_of(jobs.get_run(r.id).spec, folder)
        if r.strategy not in ("multihead-replay", "pseudolabel-replay", "replay-lora"):
            assert replay is None, r.strategy
            continue
        # the subset mace was given, as recorded, as written and as mace's log counts it
        subset = read(folder / "replay_subset.xyz", ":")
        assert len(subset) == 20 and {_fingerprint(a) for a in subset} <= pool, r.strategy
        assert (replay["available"], replay["requested"], replay["selected"]) == (30, 20, 20)
        # farthest point sampling really ran (mace falls back to random without fpsample)
        assert replay["method"] == replay["method_used"] == \
            ("fps" if r.strategy == "replay-lora" else "random"), replay
        assert replay["used"] == 18, (r.strategy, replay)  # 20 less mace's 10% to validate
        assert f"pt_train_file: {folder / 'replay_subset.xyz'}" in \
            (folder / "config.yaml").read_text()
        steps = (folder / "command.sh").read_text().splitlines()
        assert steps[-2].startswith("mace_finetuning_select ") and \
            steps[-1].startswith("mace_run_train "), steps
        assert replay_sentence(replay) == (
            "Replays 20 of the replay file's 30 structures, chosen by "
            + ("farthest point sampling" if r.strategy == "replay-lora" else "random")
            + "; the pretraining head trained on 18 of them and validates on the other 2.")
    # single-head fine-tunes keep every foundation element and the chosen (estimated) E0s
    e0 = done["naive"].atomic_energies_fn.atomic_energies.flatten().tolist()
    assert [int(z) for z in done["naive"].atomic_numbers] == [1, 6, 7, 8, 9, 17]
    assert e0[5] < -5000  # Cl: the DFT-scale estimated E0, not the GFN1 one (-113 eV)
    assert [int(z) for z in done["scratch"].atomic_numbers] == [1, 6, 9, 17]
    rec = jobs.get_run(recs[0].id)
    cfg = (Workspace().runs / rec.id / "config.yaml").read_text()
    assert "mace_run_train" in (Workspace().runs / rec.id / "command.sh").read_text()
    assert "foundation_model_elements: true" in cfg


def _wait_status(run_id, status, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        rec = jobs.get_run(run_id)
        if rec.status == status:
            return rec
        time.sleep(0.2)
    raise AssertionError(f"{run_id} never became {status}: {jobs.get_run(run_id)}")


def _training_child(runner_pid: int) -> int:
    deadline = time.time() + 60
    while time.time() < deadline:
        kids = psutil.Process(runner_pid).children()
        if kids:
            return kids[0].pid
        time.sleep(0.1)
    raise AssertionError("the runner started no training process")


def test_cancel_and_killed_process(tiny, weak_model, monkeypatch):
    monkeypatch.setenv("MLIPFT_CPU_SLOTS", "2")  # two runs at once, the third waits
    long = jobs.submit(spec(tiny, weak_model, "naive", max_num_epochs=500))
    _wait_status(long.id, "running")
    queued = jobs.submit(spec(tiny, weak_model, "freeze-b", max_num_epochs=500))
    victim = jobs.submit(spec(tiny, weak_model, "freeze-a", max_num_epochs=500))
    _wait_status(queued.id, "running")
    assert jobs.get_run(victim.id).status == "queued"  # both slots are taken
    assert jobs.cancel(victim.id).status == "cancelled"
    # the training process is killed: the runner records the signal
    os.kill(_training_child(jobs.get_run(queued.id).pid), signal.SIGKILL)
    failed = jobs.wait(queued.id, timeout=60)
    assert failed.status == "failed" and "signal 9" in failed.reason
    jobs.cancel(long.id)
    cancelled = jobs.wait(long.id, timeout=60)
    assert cancelled.status == "cancelled" and cancelled.reason == "cancelled by the user"
    assert not same_process_alive(cancelled.pid, cancelled.pid_started)
    time.sleep(1)
    assert jobs.get_run(victim.id).status == "cancelled"  # never started
    assert not (Workspace().runs / victim.id / "train.log").exists()


def test_runs_survive_the_dispatcher_and_it_exits_when_idle(tiny, weak_model):
    rec = jobs.submit(spec(tiny, weak_model, "freeze-b"))
    root = Workspace().root
    pid = dispatcher_pid(root)  # submit returns once the dispatcher has said who it is
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the dispatcher goes down (e.g. the app's machine restarts)
    time.sleep(0.5)
    assert jobs.get_run(rec.id).status in ("queued", "running")
    # waiting starts a dispatcher again when the run still waits; a running one goes on alone
    assert_done(jobs.wait(rec.id, timeout=300))
    deadline = time.time() + 10
    while dispatcher_alive(root) and time.time() < deadline:
        time.sleep(0.2)
    assert not dispatcher_alive(root)  # nothing queued or running: the dispatcher is gone


def test_killed_at_the_claim_point_never_trains_twice(tiny, weak_model):
    """A runner killed right after claiming: the run is failed, never started again."""
    rec = jobs.prepare(spec(tiny, weak_model, "freeze-b"))  # prepared, not yet dispatched
    folder = Workspace().runs / rec.id
    runner = subprocess.Popen([sys.executable, "-m", "mlipft_core.jobs.runner", str(folder)],
                              start_new_session=True)
    deadline = time.time() + 60
    while RunStore().read(rec.id).status != "running" and time.time() < deadline:
        time.sleep(0.01)
    os.kill(runner.pid, signal.SIGKILL)  # claimed; its training dies with it
    runner.wait()
    seen = jobs.get_run(rec.id)
    assert seen.status == "failed" and "without recording" in seen.reason
    assert RunStore().read(rec.id).status == "running"  # reading wrote nothing
    ensure_dispatcher(Workspace().root)  # a dispatcher must not start it again
    time.sleep(3)
    final = jobs.wait(rec.id, timeout=30)
    assert final.status == "failed"
    log = (folder / "train.log").read_text() if (folder / "train.log").exists() else ""
    assert log.count("VERIFYING SETTINGS") <= 1
    time.sleep(2)
    log = (folder / "train.log").read_text() if (folder / "train.log").exists() else ""
    assert log.count("VERIFYING SETTINGS") <= 1 and "Done" not in log


@pytest.mark.slow
def test_two_runners_on_one_run_train_once(tiny, weak_model):
    rec = jobs.prepare(spec(tiny, weak_model, "freeze-b"))
    folder = Workspace().runs / rec.id
    cmd = [sys.executable, "-m", "mlipft_core.jobs.runner", str(folder)]
    a, b = subprocess.Popen(cmd), subprocess.Popen(cmd)
    assert sorted([a.wait(timeout=300), b.wait(timeout=300)]) == [0, 0]
    assert jobs.get_run(rec.id).status == "done"
    assert (folder / "train.log").read_text().count("VERIFYING SETTINGS") == 1


def test_a_reused_pid_is_not_taken_for_the_run(tiny, weak_model):
    rec = jobs.prepare(spec(tiny, weak_model, "freeze-b"))
    other = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        # recorded as running under a pid that now belongs to an unrelated program
        RunStore().update(rec.id, status="running", pid=other.pid,
                          pid_started=psutil.Process(other.pid).create_time() - 3600,
                          host=this_host())
        (Workspace().runs / rec.id / "cancel").touch()  # a leftover cancel marker
        seen = jobs.get_run(rec.id)
        assert seen.status == "failed" and "without recording" in seen.reason
        assert jobs.cancel(rec.id).status == "failed"
        ensure_dispatcher(Workspace().root)
        time.sleep(2)
        assert other.poll() is None  # nobody signalled the unrelated program
        assert RunStore().read(rec.id).status == "failed"
    finally:
        other.kill()


@pytest.mark.parametrize("content, why", [
    (b"[1, 2]", "holds a list"),
    (b"\xff\xfe\x00binary", "not UTF-8"),
    (b'{"id": "X", "name": "x"}', "lacks the field"),
    (b'{"id": "X", "name": "x", "strategy": "naive", "status": 5}', "'status' is a int"),
    (b'{"id": "X", "name": "x", "strategy": "naive", "status": "zombie"}', "unknown status"),
    (b'{"id": "other", "name": "x", "strategy": "naive"}', "names the run"),
    (b"{not json", "not valid JSON"),
    (None, "is a folder"),
])
def test_a_broken_run_json_breaks_nothing_else(tiny, weak_model, content, why):
    ws = Workspace()
    broken = ws.runs / "X"
    broken.mkdir(parents=True)
    if content is None:
        (broken / "run.json").mkdir()
    else:
        (broken / "run.json").write_bytes(content)
    rows = json.loads(subprocess.run(mlipft_cmd() + ["runs", "--json"], capture_output=True,
                                     text=True, timeout=120, check=True).stdout)
    assert len(rows) == 1 and rows[0]["status"] == "unreadable", rows
    assert rows[0]["id"] == "X" and why in rows[0]["reason"], rows
    with pytest.raises(UnreadableRunError):
        jobs.cancel("X")
    if why == "holds a list":  # and runs still go, through the same dispatcher
        rec = jobs.submit(spec(tiny, weak_model, "freeze-b"))
        assert_done(jobs.wait(rec.id, timeout=300))
        # oldest first: the broken folder (listed at its own time) before the new run
        listed = jobs.list_runs()
        assert [(r.id, r.status) for r in listed] == [("X", "unreadable"), (rec.id, "done")]
    jobs.delete("X")
    assert not broken.exists()


def test_an_unknown_field_is_kept_not_fatal(tiny, weak_model):
    rec = jobs.prepare(spec(tiny, weak_model, "freeze-b"))
    path = Workspace().runs / rec.id / "run.json"
    data = json.loads(path.read_text())
    data["added_by_a_newer_version"] = {"x": 1}
    path.write_text(json.dumps(data))
    assert jobs.get_run(rec.id).status == "queued"
    RunStore().update(rec.id, reason="touched")
    assert json.loads(path.read_text())["added_by_a_newer_version"] == {"x": 1}


def test_names_and_ids_stay_inside_the_runs_folder(tiny, weak_model, tmp_path):
    with pytest.raises(InvalidRunNameError):
        jobs.submit(replace(spec(tiny, weak_model, "naive"), name="../../x"))
    with pytest.raises(InvalidRunNameError):
        jobs.cancel("../runs/abc")
    assert not any(tmp_path.glob("x*")) and not (Workspace().root / "x.model").exists()
    assert jobs.list_runs() == []
    for args in (["train", "--strategy", "naive", "--model", "demo-gfn1-weak", "--train",
                  str(tiny / "train.xyz"), "--name", "../../x"], ["cancel", "../runs/ID"]):
        out = subprocess.run(mlipft_cmd() + args, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and "is not allowed" in out.stderr, out.stderr
    assert list(Workspace().runs.iterdir()) == []


@pytest.mark.parametrize("what, message", [
    ("nan_energy", "NaN or infinite"),
    ("nan_position", "NaN or infinite"),
    ("one_config", "training needs at least 2"),
    ("nan_valid", "validation file"),
])
def test_garbage_is_refused_before_queueing(tiny, weak_model, what, message):
    frames = read(tiny / "train.xyz", ":")
    valid = str(tiny / "valid.xyz")
    if what == "nan_energy":
        frames[3].info["REF_energy"] = float("nan")
    elif what == "nan_position":
        frames[2].positions[0, 1] = float("nan")
    elif what == "one_config":
        frames = frames[:1]
    else:
        v = read(valid, ":")
        v[0].arrays["REF_forces"][0, 0] = float("inf")
        valid = str(tiny / "bad_valid.xyz")
        write(valid, v)
    write(tiny / "bad.xyz", frames)
    with pytest.raises(StrategyError, match=message):
        jobs.submit(RunSpec("naive", weak_model, str(tiny / "bad.xyz"), valid,
                            settings={"max_num_epochs": 1}))
    assert jobs.list_runs() == [] and list(Workspace().runs.iterdir()) == []


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
    assert d["executor"] == "local" and d["slurm_job_id"] is None
    rows = json.loads(subprocess.run(mlipft_cmd() + ["runs", "--json"], capture_output=True,
                                     text=True, timeout=120).stdout)
    assert rows[0]["id"] == d["id"] and rows[0]["strategy"] == "freeze-b"
    bad = subprocess.run(mlipft_cmd() + ["cancel", "no-such-run"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "no run" in bad.stderr


def test_size_sweep_for_learning_curves(tiny, weak_model):
    recs = jobs.submit_size_sweep(spec(tiny, weak_model, "freeze-b"), [5, 15], seed=1)
    assert [r.spec["train_size"] for r in recs] == [5, 15]
    for r, size in zip(recs, (5, 15)):
        final = assert_done(jobs.wait(r.id, timeout=600))
        assert final.spec["train_size"] == size
        assert len(read_frames(final.spec["train_file"])) == final.spec["train_size"]
    small = {a.get_positions().tobytes() for a in read_frames(recs[0].spec["train_file"])}
    large = {a.get_positions().tobytes() for a in read_frames(recs[1].spec["train_file"])}
    assert small <= large  # nested subsets
    with pytest.raises(StrategyError, match="between 2 and 20"):
        jobs.submit_size_sweep(spec(tiny, weak_model, "naive"), [1, 50])


def test_a_replay_file_smaller_than_asked_is_replayed_whole_and_bad_selections_are_said(
        tiny, weak_model):
    """200 replay samples asked of a 30-structure file: the whole file, said so; an unknown
    selection is refused; a selection that fails ends the run with the reason, before
    training."""
    rec = jobs.prepare(spec(tiny, weak_model, "multihead-replay"))
    folder = Workspace().runs / rec.id
    replay = replay_of(rec.spec, folder)
    assert (replay["available"], replay["requested"], replay["selected"], replay["used"]) \
        == (30, 200, 30, None)
    assert replay["file"] == str(tiny / "replay.xyz")
    assert "mace_finetuning_select" not in (folder / "command.sh").read_text()
    assert [what for what, _ in steps_of(rec, folder)] == ["training"]
    assert replay_sentence(replay) == \
        "Replays the whole replay file (30 structures; 200 were asked for)."
    with pytest.raises(StrategyError, match="replay selection must be one of random, fps, "
                                            "not 'kmeans'"):
        jobs.prepare(spec(tiny, weak_model, "multihead-replay", subselect_pt="kmeans"))
    # the replay file goes bad between the launch and the run: the selection fails, and so
    # does the run, with the step that failed; mace_run_train never starts
    small = jobs.prepare(spec(tiny, weak_model, "multihead-replay", num_samples_pt=5))
    source = replay_of(small.spec, Workspace().runs / small.id)
    assert source["selected"] == 5 and source["file"].endswith("replay_subset.xyz")
    (tiny / "replay.xyz").write_text("not a structure file\n")
    assert execute(Workspace().runs / small.id) == "failed"
    failed = jobs.get_run(small.id)
    assert failed.reason.startswith("the replay selection (mace_finetuning_select) exited "
                                    "with code 1, so training did not start"), failed.reason
    assert not (Workspace().runs / small.id / "results").exists()  # mace's training output


def test_cli_sweep_carries_every_page_setting(tiny):
    out = subprocess.run(mlipft_cmd() + [
        "train", "--strategy", "lora,multihead-replay", "--model", "demo-gfn1-weak",
        "--train", str(tiny / "train.xyz"), "--valid", str(tiny / "valid.xyz"),
        "--replay", str(tiny / "replay.xyz"), "--epochs", "300", "--lora-rank", "2",
        "--lora-alpha", "0.5", "--replay-samples", "7", "--replay-selection", "fps",
        "--energy-weight", "1",
        "--forces-weight", "50", "--no-ema", "--precision", "float64",
        "--lrs", "1e-3,2e-3", "--seeds", "0,1", "--executor", "local", "--json"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    try:
        assert len(rows) == 8 and len({r["sweep"] for r in rows}) == 1
        assert {r["lr"] for r in rows} == {1e-3, 2e-3}
        assert all(r["executor"] == "local" for r in rows)

        combos = set()
        for r in rows:
            cfg = yaml.safe_load((Workspace().runs / r["id"] / "config.yaml").read_text())
            assert cfg["energy_weight"] == 1.0 and cfg["forces_weight"] == 50.0
            assert cfg["default_dtype"] == "float64" and "ema" not in cfg
            assert cfg["lr"] == r["lr"]
            combos.add((r["strategy"], cfg["lr"], cfg["seed"]))
            if r["strategy"] == "lora":
                assert cfg["lora_rank"] == 2 and cfg["lora_alpha"] == 0.5
                assert "num_samples_pt" not in cfg
                assert r["replay"] is None
            else:
                assert cfg["num_samples_pt"] == 7 and "lora" not in cfg
                assert cfg["subselect_pt"] == "fps"
                folder = Workspace().runs / r["id"]
                assert cfg["pt_train_file"] == str(folder / "replay_subset.xyz")
                assert {k: r["replay"][k] for k in ("available", "requested", "selected",
                                                    "method", "file")} == {
                    "available": 30, "requested": 7, "selected": 7, "method": "fps",
                    "file": str(folder / "replay_subset.xyz")}
        # every strategy at every learning rate and seed, once
        assert combos == {(s, lr, seed) for s in ("lora", "multihead-replay")
                          for lr in (1e-3, 2e-3) for seed in (0, 1)}
        assert sorted(r["name"] for r in rows)[0] == "lora-lr0p001-s0"
    finally:
        for r in rows:
            jobs.cancel(r["id"])
    for r in rows:
        assert jobs.wait(r["id"], timeout=60).status == "cancelled"


def test_one_slot_per_visible_gpu_and_cpu_slots(tmp_path, monkeypatch):
    """The dispatcher's slots: one run per GPU, each its own device; CPU runs by slot count."""
    monkeypatch.setenv("MLIPFT_CPU_SLOTS", "1")
    store = RunStore()
    for i, dev in enumerate(["cuda", "cuda", "cuda", "cpu", "cpu"]):
        store.create(RunRecord(id=f"r{i}", name=f"r{i}", strategy="naive", device=dev,
                               created=1000.0 + i))

    class Proc:
        code = None

        def poll(self):
            return self.code

    d = Dispatcher(Workspace().root)
    d._gpus = ["0", "1"]
    started: list[tuple[str, str | None]] = []

    def fake_launch(rec, gpu):
        started.append((rec.id, gpu))
        d.launched[rec.id] = (Proc(), rec.device, gpu)

    d._launch = fake_launch
    d.step()
    assert started == [("r0", "0"), ("r1", "1"), ("r3", None)]  # r2 and r4 wait
    d.step()
    assert len(started) == 3  # nothing is started twice while it has not claimed yet
    # r0 ends (its runner claimed it, ran, recorded done, exited): its GPU goes to r2
    store.update("r0", status="done")
    d.launched["r0"][0].code = 0
    d.step()
    assert started[-1] == ("r2", "0")
    # a cuda run with no GPU visible fails with the reason instead of waiting for ever
    store.create(RunRecord(id="r9", name="r9", strategy="naive", device="cuda", created=2000.0))
    d._gpus = []
    d.step()
    assert store.read("r9").status == "failed" and "GPU" in store.read("r9").reason


# ----------------------------------------------------------------------------- the page
APP = str(Path(__file__).resolve().parent.parent / "app.py")
VIEWS = Path(APP).parent / "views"


def page(name: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page(str(VIEWS / name))
    at.run()
    assert not at.exception, at.exception
    return at


def by_label(widgets, label: str):
    return next(w for w in widgets if w.label == label)


def recorded(ws: Workspace, name: str, strategy: str = "naive", *, created: float,
             lr: float = 3e-3, seed: int = 0, e0s: str = "estimated", sweep: str | None = None,
             train_size: int | None = None, foundation: str | None = None,
             status: str = "done"):
    """A run folder with its run.json, as prepare writes it (no training: nothing runs)."""
    spec = {"strategy": strategy, "e0s": e0s, "foundation_model": foundation,
            "settings": {"lr": lr, "seed": seed, "max_num_epochs": 1}}
    if train_size is not None:
        spec["train_size"] = train_size
    rid = f"{int(created)}-{strategy}-{name}"
    return RunStore(ws).create(RunRecord(id=rid, name=name, strategy=strategy, status=status,
                                         created=created, max_epochs=1, spec=spec,
                                         sweep=sweep))


def test_runs_page_keeps_strategies_and_epochs(tiny_split):
    at = page("runs.py")
    by_label(at.multiselect, "Strategies").set_value(["freeze-b", "lora"]).run()
    by_label(at.number_input, "Epochs").set_value(3).run()
    assert not at.exception, at.exception
    again = page("runs.py")  # a reload: a new session on the same workspace
    assert by_label(again.multiselect, "Strategies").value == ["freeze-b", "lora"]
    assert by_label(again.number_input, "Epochs").value == 3
    assert any("2 run(s)** will be queued" in m.value for m in again.markdown)
    # settings a strategy does not have are a dash in its row, not "None"
    per = next(d.value for d in again.dataframe if "learning rate from" in d.value.columns)
    rows = {r["strategy"]: r for r in per.to_dict("records")}
    assert rows["Freeze, variant B"]["LoRA rank"] == "—" and rows["LoRA"]["LoRA rank"] == "4"
    assert "replay samples (structures)" not in per.columns  # no multihead strategy chosen


def test_run_labels_say_what_tells_runs_apart(weak_model):
    from mlipft_ui.labels import run_label, run_labels

    ws = Workspace()
    t = 1_700_000_000.0
    a = recorded(ws, "naive", created=t, lr=3e-3, foundation=weak_model)
    b = recorded(ws, "naive", created=t + 60, lr=1e-3, foundation=weak_model)
    assert run_label(a) == "Naive fine-tuning"  # alone: the strategy in words
    assert run_label(a, [a, b]) == "Naive fine-tuning · lr 3e-3"
    assert run_label(b, [a, b]) == "Naive fine-tuning · lr 1e-3"
    # a seed, an E0 method, a training size, a foundation model: whatever differs is said
    c = recorded(ws, "naive-s1", created=t + 120, lr=3e-3, seed=1, foundation=weak_model)
    assert run_label(c, [a, c]) == "Naive fine-tuning · seed 1"
    d = recorded(ws, "naive-e0", created=t + 180, e0s="average-0123456789",
                 foundation=weak_model)
    assert run_label(d, [a, d]) == "Naive fine-tuning · average E0s"
    assert run_label(a, [a, d]) == "Naive fine-tuning · estimated E0s"
    e = recorded(ws, "naive-n5", created=t + 240, train_size=5, foundation=weak_model)
    assert run_label(e, [a, e]) == "Naive fine-tuning · 5 training structures"
    assert run_label(a, [a, e]) == "Naive fine-tuning · whole training set"
    f = recorded(ws, "naive-strong", created=t + 300,
                 foundation=str(Path(weak_model).with_name("demo-gfn1-strong.model")))
    assert run_label(f, [a, f]) == "Naive fine-tuning · from Demo strong (GFN1-xTB)"
    # the same settings twice: the time it was launched
    g = recorded(ws, "naive", created=t + 3600, lr=3e-3, foundation=weak_model)

    when = datetime.fromtimestamp(t + 3600).strftime("%H:%M:%S")
    assert run_label(g, [a, g]) == f"Naive fine-tuning · launched {when}"
    # a pilot's runs: labelled as such, with their learning rate, apart from the finals
    pilots = [recorded(ws, f"tune-naive-lr{lr:g}".replace(".", "p"), created=t + 400 + i,
                       lr=lr, sweep="tune-naive-20240101-000000-abcdef", foundation=weak_model)
              for i, lr in enumerate((1e-4, 3e-4, 1e-3))]
    names = run_labels([a, *pilots])
    assert names[a.id] == "Naive fine-tuning · lr 3e-3"
    assert [names[p.id] for p in pilots] == [
        f"Naive fine-tuning · learning-rate pilot · lr {x}" for x in ("1e-4", "3e-4", "1e-3")]
    # every name differs, whatever is shown together; no raw names
    everything = run_labels(jobs.list_runs(ws))
    assert len(set(everything.values())) == len(everything)
    assert not any("tune-" in n or "None" in n or "naive-" in n for n in everything.values())


def test_runs_page_names_runs_split_and_e0s_in_words(tiny_split, weak_model, tiny):
    ws = Workspace()
    fit = e0mod.compute(e0mod.prepare(str(tiny / "train.xyz"), weak_model, trusted=True),
                        "estimated")
    choice = e0mod.save_choice(ws, fit, model="demo-gfn1-weak", head=None,
                               data=str(tiny / "train.xyz"))
    t = time.time() - 3600
    for i, lr in enumerate((1e-4, 3e-4, 1e-3, 3e-3, 1e-2)):
        recorded(ws, f"tune-naive-lr{lr:g}".replace(".", "p"), created=t + i, lr=lr,
                 sweep="tune-naive-20240101-000000-abcdef", foundation=weak_model)
    recorded(ws, "naive", created=t + 10, e0s=choice["id"], foundation=weak_model)
    recorded(ws, "naive", created=t + 20, e0s=choice["id"], foundation=weak_model, lr=1e-3)
    at = page("runs.py")
    head = next(m.value for m in at.markdown if m.value.startswith("Model **"))
    side = " ".join(m.value for m in at.sidebar.markdown)
    for text in (head, side):
        assert tiny_split.id not in text and choice["id"] not in text, text
        assert "tiny: 20 training, 5 validation structures" in text, text
        assert "estimated E0s, fitted on train.xyz, saved" in text, text
    table = at.dataframe[-1].value
    names = list(table["run"])
    assert len(set(names)) == len(names) == 7
    assert "Naive fine-tuning · learning-rate pilot · lr 1e-4" in names
    assert {"Naive fine-tuning · lr 3e-3", "Naive fine-tuning · lr 1e-3"} <= set(names)
    cells = [str(v) for col in table.columns for v in table[col]]
    assert not any(v in ("None", "nan") or "tune-" in v for v in cells), cells
    run_box = by_label(at.selectbox, "Run")
    assert len(run_box.options) == 7 and not any("tune-" in o for o in run_box.options)


def _with_isolated_atoms(tiny, demo) -> Path:
    """The tiny training set with the SN2 target's B3LYP isolated atoms in it, as a user's
    file might hold them."""
    path = tiny / "train_with_atoms.xyz"
    write(path, read(tiny / "train.xyz", ":8") + read(demo["sn2_isolated_atoms"], ":"))
    return path


def test_isolated_atoms_in_a_training_file_do_not_replace_the_chosen_e0s(tiny, demo):
    """mace_run_train takes IsolatedAtom energies of a training file as the model's E0s,
    whatever --E0s says: the run hands it a copy without them, says so, and the saved model
    carries exactly the E0s run.json records (a real 1-epoch training)."""
    train = _with_isolated_atoms(tiny, demo)
    out = subprocess.run(mlipft_cmd() + ["train", "--strategy", "scratch", "--model",
                                         "demo-gfn1-weak", "--train", str(train),
                                         "--valid", str(tiny / "valid.xyz"), "--epochs", "1",
                                         "--batch-size", "4", "--wait", "--json"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    row = json.loads(out.stdout)
    assert row["status"] == "done", row["reason"]
    rec = jobs.get_run(row["id"])
    e0 = rec.spec["e0_values"]
    iso = {a.get_chemical_symbols()[0]: a.info["REF_energy"]
           for a in read(train, ":") if a.info.get("config_type") == "IsolatedAtom"}
    diffs = {el: abs(iso[el] - e0[el]) for el in iso}
    worst = max(diffs, key=diffs.get)
    # the model carries the E0s the run records, not the file's isolated atoms
    saved = model_e0s(load_model(rec.model_path, trusted=True))["Default"]
    for el, value in e0.items():  # the model is float32: equal to its precision
        assert saved[el] == pytest.approx(value, rel=1e-6), el
    assert abs(saved[worst] - iso[worst]) == pytest.approx(diffs[worst], rel=1e-3)
    folder = Workspace().runs / rec.id
    log = (folder / "train.log").read_text()
    assert "Using isolated atom energies from training file" not in log
    # what mace was given
    cfg = (folder / "config.yaml").read_text()
    used = rec.spec["mace_train_file"]
    assert f"train_file: {used}" in cfg and used != str(train)
    assert not [a for a in read(used, ":") if a.info.get("config_type") == "IsolatedAtom"]
    assert len(read(used, ":")) == 8
    assert rec.spec["isolated_atoms_left_out"] == pytest.approx(iso)
    assert sorted(iso) == sorted(e0)
    # the warning, in --json and in run.json, with the largest difference it names
    assert row["warnings"] == rec.spec["warnings"] and len(row["warnings"]) == 1
    text = row["warnings"][0]
    assert f"holds IsolatedAtom configurations of {len(iso)} elements ({', '.join(iso)})" in text
    assert f"up to {format_energy_per_atom(diffs[worst]).lstrip('+')} ({worst})" in text


def test_training_files_without_isolated_atoms_are_handed_over_as_they_are(tiny, weak_model):
    rec = jobs.prepare(RunSpec("naive", weak_model, str(tiny / "train.xyz"),
                               settings={"max_num_epochs": 1}))
    assert f"train_file: {tiny / 'train.xyz'}" in (Workspace().runs / rec.id /
                                                    "config.yaml").read_text()
    assert "warnings" not in rec.spec and "mace_train_file" not in rec.spec


@pytest.mark.slow
def test_fine_tuning_from_a_chosen_head_of_a_two_head_foundation_model(tiny, weak_model):
    """A two-head model (a replay fine-tune: ``pt_head`` and ``Default``) as the foundation:
    ``--foundation-head`` picks the head mace starts from, and the run's E0s are that head's;
    an unknown head is refused before anything runs."""
    first = subprocess.run(mlipft_cmd() + [
        "train", "--strategy", "multihead-replay", "--model", weak_model, "--train",
        str(tiny / "train.xyz"), "--valid", str(tiny / "valid.xyz"), "--replay",
        str(tiny / "replay.xyz"), "--epochs", "1", "--wait", "--json"],
        capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    two_heads = json.loads(first.stdout)["model_path"]
    e0s = inspect_model(two_heads, trusted=True).e0s
    assert set(e0s) == {"pt_head", "Default"} and e0s["pt_head"] != e0s["Default"]
    bad = subprocess.run(mlipft_cmd() + [
        "train", "--strategy", "naive", "--model", two_heads, "--train",
        str(tiny / "train.xyz"), "--foundation-head", "omat_pbe", "--epochs", "1"],
        capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "no head 'omat_pbe'" in bad.stderr
    assert "pt_head, Default" in bad.stderr
    out = subprocess.run(mlipft_cmd() + [
        "train", "--strategy", "naive", "--model", two_heads, "--train",
        str(tiny / "train.xyz"), "--valid", str(tiny / "valid.xyz"), "--foundation-head",
        "pt_head", "--e0", "foundation", "--epochs", "1", "--wait", "--json"],
        capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert row["status"] == "done", row
    folder = Path(row["model_path"]).parent
    assert "foundation_head: pt_head\n" in (folder / "config.yaml").read_text()
    trained = inspect_model(row["model_path"], trusted=True).e0s
    (only,) = trained.values()
    elements = set(only)
    assert {k: round(v, 4) for k, v in only.items()} == {
        k: round(v, 4) for k, v in e0s["pt_head"].items() if k in elements}
    assert any(abs(only[k] - e0s["Default"][k]) > 1.0 for k in elements)
    # the study fine-tunes from the chosen head too: its E0 fit and every run of the
    # foundation model start from it; an unknown head is refused with the model's heads
    from mlipft_core import study as studymod
    from mlipft_core.defaults import study_inputs
    from mlipft_core.errors import MlipftError

    def inputs(head):
        return studymod._absolute(study_inputs(
            model=two_heads, train=str(tiny / "train.xyz"), test=str(tiny / "valid.xyz"),
            strategies=["naive"], foundation_head=head, trust=lambda _m: True))

    pt, default = inputs("pt_head"), inputs("Default")
    assert pt.study_id() != default.study_id()
    fit_pt, fit_default = studymod.fit_e0s(pt), studymod.fit_e0s(default)
    assert fit_pt["anchored"] != fit_default["anchored"]
    spec = studymod._spec(pt, "naive", e0=fit_pt["anchored"])
    assert spec.settings["foundation_head"] == "pt_head"
    with pytest.raises(MlipftError, match="no head 'omat_pbe'"):
        studymod.check(inputs("omat_pbe"))
