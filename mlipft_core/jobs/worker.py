"""The local execution backend: a huey queue (SQLite, in the workspace) and its consumers.

Runs are ``mace_run_train`` processes started by a consumer that is itself a detached process,
so they outlive the browser session and a restart of the app. One consumer per device:
``cuda`` runs one at a time by default, ``cpu`` runs ``MLIPFT_CPU_SLOTS`` at a time (default
2 on 2+ cores) with ``cores / slots`` threads each (oversubscribed threads slow torch down
many times over).

Start a consumer by hand with ``python -m mlipft_core.jobs.worker --device cpu``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..workspace import Workspace, read_json
from .progress import read_progress
from .records import RunStore, log_tail, pid_alive

TASK_NAME = "mlipft.execute_run"
_TASKS: dict[tuple[str, str], object] = {}


def cpu_slots() -> int:
    env = os.environ.get("MLIPFT_CPU_SLOTS")
    if env:
        return max(1, int(env))
    return min(2, os.cpu_count() or 1)


def slots(device: str) -> int:
    if device == "cuda":
        return max(1, int(os.environ.get("MLIPFT_GPU_SLOTS", "1")))
    return cpu_slots()


def threads_per_run(device: str) -> int:
    cores = os.cpu_count() or 1
    if device == "cuda":
        return max(1, min(4, cores))
    return max(1, cores // cpu_slots())


def queue_dir(root: Path) -> Path:
    d = Path(root) / "queue"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _task(root: str | Path, device: str):
    """The huey task (bound to its queue) of a workspace and device."""
    from huey import SqliteHuey

    key = (str(Path(root).resolve()), device)
    if key not in _TASKS:
        h = SqliteHuey(name=f"mlipft-{device}", filename=str(queue_dir(Path(root)) / "queue.db"),
                       results=False, utc=True)
        _TASKS[key] = h.task(name=TASK_NAME, retries=0)(execute_run)
    return _TASKS[key]


def get_huey(root: str | Path, device: str):
    """The huey instance of a workspace and device, with the run task registered."""
    return _task(root, device).huey


def enqueue(root: str | Path, device: str, run_id: str) -> None:
    """Put a run on its device's queue (persisted in SQLite until a consumer takes it)."""
    _task(root, device)(str(root), run_id)


# ----------------------------------------------------------------------------- execution
def execute_run(root: str, run_id: str) -> None:
    """Run one queued run to its end (called in a consumer worker thread)."""
    store = RunStore(Workspace(root))
    folder = store.folder(run_id)
    rec = store.get(run_id)
    if rec.status != "queued":
        return  # cancelled or already handled
    threads = threads_per_run(rec.device)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONUNBUFFERED="1")
    if rec.kind == "md":
        cmd = [sys.executable, "-m", "mlipft_core.md", str(folder)]
    else:
        cmd = [sys.executable, "-m", "mace.cli.run_train", "--config",
               str(folder / "config.yaml")]
    log_path = folder / "train.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    started = store.transition(run_id, ("queued",), status="running", pid=proc.pid,
                               started=time.time(), threads=threads, worker_pid=os.getpid())
    if started is None:  # cancelled between the check and the start
        _kill(proc)
        return
    cancelled = False
    while True:
        try:
            rc = proc.wait(timeout=0.5)  # returns as soon as the process ends
            break
        except subprocess.TimeoutExpired:
            if (folder / "cancel").exists():
                cancelled = True
                _kill(proc)
                rc = proc.wait()
                break
    finish(store, run_id, rc, cancelled)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def finish(store: RunStore, run_id: str, rc: int | None, cancelled: bool,
           reason: str | None = None) -> None:
    """Record the end of a run: done with its model, failed with the reason, or cancelled."""
    rec = store.get(run_id)
    folder = store.folder(run_id)
    tail = log_tail(folder / "train.log")
    if rec.kind == "md":
        model = folder / "result.json"  # an MD run's product
        result = read_json(model) or {}
        metrics = {k: result.get(k) for k in ("survived_steps", "steps", "failure",
                                               "steps_per_second")}
    else:
        model = folder / f"{rec.name}.model"
        prog = read_progress(folder, rec.max_epochs)
        metrics = {"epochs_done": None if prog.epoch is None else prog.epoch + 1,
                   "valid": prog.last_valid()}
    if cancelled:
        store.transition(run_id, ("queued", "running"), status="cancelled",
                         finished=time.time(), returncode=rc, reason="cancelled by the user",
                         log_tail=tail, metrics=metrics)
    elif rc in (0, None) and model.is_file():
        store.transition(run_id, ("running",), status="done", finished=time.time(),
                         returncode=rc, model_path=None if rec.kind == "md" else str(model),
                         metrics=metrics, log_tail=tail)
    else:
        if reason is None:
            if rc is not None and rc < 0:
                reason = f"mace_run_train was killed by signal {-rc} ({signal.Signals(-rc).name})"
            elif rc == 0:
                reason = ("the MD process ended without a result" if rec.kind == "md" else
                          "mace_run_train ended without writing a model file")
            else:
                last = [ln for ln in tail.splitlines() if ln.strip()]
                reason = f"mace_run_train exited with code {rc}" + (
                    f": {last[-1].strip()[:300]}" if last else "")
        store.transition(run_id, ("queued", "running"), status="failed", finished=time.time(),
                         returncode=rc, reason=reason, log_tail=tail, metrics=metrics)


def reconcile(store: RunStore) -> None:
    """Record the end of runs whose watcher is gone and whose process has ended too.

    A run's consumer records its end itself (a killed training process included). When the
    consumer died, a new consumer adopts the still-running training processes (see
    :func:`adopt_orphans`); runs whose process is gone as well are closed here.
    """
    for rec in store.list():
        if rec.status != "running" or pid_alive(rec.pid):
            continue
        if rec.worker_pid and pid_alive(rec.worker_pid):
            continue
        fresh = store.get(rec.id)
        if fresh.status == "running" and not pid_alive(fresh.pid):
            finish(store, rec.id, None, False,
                   reason="the queue worker stopped while the run was going; the training "
                          "process is gone")


def _watch(store: RunStore, run_id: str, pid: int) -> None:
    """Watch a training process this consumer did not start, until it ends."""
    folder = store.folder(run_id)
    cancelled = False
    while pid_alive(pid):
        if (folder / "cancel").exists() and not cancelled:
            cancelled = True
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    finish(store, run_id, None, cancelled)


def requeue_lost(store: RunStore, device: str) -> list[str]:
    """Queue again the queued runs whose task was lost (taken by a consumer that was killed)."""
    h = get_huey(store.workspace.root, device)
    pending = {t.args[1] for t in h.pending() if len(t.args) > 1}
    lost = [r.id for r in store.list()
            if r.status == "queued" and r.device == device and r.id not in pending]
    for rid in lost:
        enqueue(store.workspace.root, device, rid)
    return lost


def adopt_orphans(store: RunStore, device: str) -> list[str]:
    """Take over running runs of this device whose consumer died (their process lives on)."""
    import threading

    adopted = []
    for rec in store.list():
        if rec.status == "running" and rec.device == device and pid_alive(rec.pid) and \
                not (rec.worker_pid and pid_alive(rec.worker_pid)):
            store.update(rec.id, worker_pid=os.getpid())
            threading.Thread(target=_watch, args=(store, rec.id, rec.pid), daemon=True).start()
            adopted.append(rec.id)
    return adopted


# ----------------------------------------------------------------------------- consumers
def consumer_pidfile(root: Path, device: str) -> Path:
    return queue_dir(root) / f"consumer-{device}.pid"


def _lockfile(root: Path, device: str) -> Path:
    return queue_dir(root) / f"consumer-{device}.lock"


def consumer_alive(root: Path, device: str) -> bool:
    """Whether a consumer holds the device's lock (a stale pid file does not count)."""
    import fcntl

    with open(_lockfile(Path(root), device), "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def ensure_consumer(root: str | Path, device: str) -> None:
    """Start the device's consumer as a detached process unless one is running.

    Two callers racing here start two processes; the second exits at once because the first
    holds the device's lock, so one consumer per device runs.
    """
    root = Path(root)
    if consumer_alive(root, device):
        return
    log = open(queue_dir(root) / f"consumer-{device}.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "mlipft_core.jobs.worker", "--root",
                             str(root), "--device", device], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            cwd=str(Path(__file__).resolve().parents[2]))
    for _ in range(50):  # wait until it holds its lock (or has exited: another one does)
        if consumer_alive(root, device) or proc.poll() is not None:
            break
        time.sleep(0.1)


def ensure_consumers_for(store: RunStore) -> None:
    """Start consumers for every device that has queued runs or orphaned running ones."""
    devices = {r.device for r in store.list()
               if r.status == "queued" or (r.status == "running" and pid_alive(r.pid) and
                                           not (r.worker_pid and pid_alive(r.worker_pid)))}
    for dev in devices:
        ensure_consumer(store.workspace.root, dev)


def main(argv: list[str] | None = None) -> int:
    from huey.consumer import Consumer

    parser = argparse.ArgumentParser(description="Run the workbench's training queue.")
    parser.add_argument("--root", default=None, help="workspace folder")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args(argv)
    ws = Workspace(args.root)
    import fcntl

    lock = open(_lockfile(ws.root, args.device), "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held for the consumer's life
    except BlockingIOError:
        return 0  # another consumer serves this device
    consumer_pidfile(ws.root, args.device).write_text(str(os.getpid()))
    store = RunStore(ws)
    reconcile(store)
    adopt_orphans(store, args.device)
    h = get_huey(ws.root, args.device)
    requeue_lost(store, args.device)
    # poll the queue every 0.1 s without huey's idle back-off (up to 10 s by default), so a
    # run starts as soon as it is queued
    Consumer(h, workers=slots(args.device), worker_type="thread", periodic=False,
             initial_delay=0.1, backoff=1.0, max_delay=0.1).run()
    return 0


if __name__ == "__main__":
    # run the package module, not __main__, so that task names match the producer's
    from mlipft_core.jobs import worker as _worker

    raise SystemExit(_worker.main())
