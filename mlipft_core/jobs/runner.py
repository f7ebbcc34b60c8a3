"""The runner: executes one prepared run folder, wherever an executor starts it.

``python -m mlipft_core.jobs.runner RUN_FOLDER`` (started by the local dispatcher) and
:func:`run_folder` (called inside a SLURM job through submitit) do the same thing:

1. **claim** the run: ``queued`` → ``running`` under the run's lock, recording this process's
   pid, start time and host. A run that is not ``queued`` (already claimed, cancelled) is left
   alone, so a run can never be started twice;
2. start the training (``mace_run_train --config config.yaml``, after
   ``mace_finetuning_select`` where the run replays a subset of its replay file) or MD
   process, each in its own process group, tied to the runner (killed if the runner dies);
3. watch for cancellation (a ``cancel`` marker in the folder, or SIGTERM/SIGINT, which is what
   ``scancel`` sends) and for the SLURM time-limit warning (SIGUSR2);
4. watch mace's results for a loss that became NaN or infinite (the run diverged): such a
   run is stopped at once and recorded as failed, whatever mace's exit code;
5. record the end: ``done`` with the model, ``failed`` with the reason, or ``cancelled``.

Nothing else writes a run's state once it is claimed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..replay import ReplaySubset
from ..workspace import Workspace, read_json
from . import policy, provenance
from .progress import LossWatch, read_progress
from .records import RunRecord, RunStore, current_process_identity, log_tail

#: Seconds between two looks at a running training's results for a diverged loss.
WATCH_S = 2.0


def _child_setup() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the runner
    except OSError:
        pass


def _slurm_job_id() -> str | None:
    arr, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if arr and task:
        return f"{arr}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def command_for(kind: str, folder: Path) -> list[str]:
    if kind == "md":
        return [sys.executable, "-m", "mlipft_core.md", str(folder)]
    return [sys.executable, "-m", "mace.cli.run_train", "--config", str(folder / "config.yaml")]


def execute(folder: str | Path) -> str:
    """Claim and execute the run in ``folder``; return its final status (or ``skipped``)."""
    folder = Path(folder).resolve()
    policy.load_named()  # the submission policies of the process that started this one
    store = RunStore(Workspace(folder.parent.parent))
    run_id = folder.name
    pid, started, host = current_process_identity()
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or None
    claim = {"status": "running", "pid": pid, "pid_started": started, "host": host,
             "started": time.time(), "threads": threads,
             "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") or None}
    job = _slurm_job_id()
    if job:
        claim["slurm_job_id"] = job
    rec = store.transition(run_id, ("queued",), **claim)
    if rec is None:
        return "skipped"  # claimed by another runner, or cancelled before it started

    stop: dict[str, str] = {}

    def on_signal(signum, _frame) -> None:
        stop.setdefault("why", "timeout" if signum == getattr(signal, "SIGUSR2", None)
                        else "cancel")

    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR2", None)):
        if sig is not None:
            signal.signal(sig, on_signal)

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    rc: int | None = None
    failed_step: str | None = None
    try:
        t_start = time.monotonic()
        steps = steps_of(rec, folder)
        watch = LossWatch(folder) if rec.kind != "md" else None
        for k, (what, argv) in enumerate(steps):
            if (folder / "cancel").exists():
                stop.setdefault("why", "cancel")
            if "why" in stop:
                break
            rc = _run_step(argv, folder, env, rec, stop, t_start,
                           watch if what == "training" else None)
            if rc != 0 and "why" not in stop and k < len(steps) - 1:
                failed_step = what  # a step before the training: the training cannot start
                break
    except BaseException as exc:  # record the end even when something here goes wrong
        finish(store, run_id, rc, cancelled=False,
               reason=f"the runner stopped on an unforeseen error: {exc or type(exc).__name__}")
        raise
    if failed_step is not None:
        return finish(store, run_id, rc, cancelled=False,
                      reason=exit_reason(failed_step, rc, log_tail(folder / "train.log"),
                                         ", so training did not start"))
    why = stop.get("why")
    if why == "cap":
        return finish(store, run_id, rc, cancelled=False,
                      reason=f"stopped at the run-time cap of {rec.time_limit_s / 60:g} min")
    if why == "timeout":
        return finish(store, run_id, rc, cancelled=False,
                      reason="the SLURM time limit was reached before the run ended")
    if why == "diverged":
        return finish(store, run_id, rc, cancelled=False,
                      reason=diverged_reason(watch.found, rec.spec))
    return finish(store, run_id, rc, cancelled=why == "cancel")


def steps_of(rec: RunRecord, folder: Path) -> list[tuple[str, list[str]]]:
    """The processes of a run, in order, as ``(what, command line)``: the selection of its
    replay subset where it has one (:mod:`mlipft_core.replay`), then the training or MD."""
    steps = []
    replay = (rec.spec or {}).get("replay") if rec.kind != "md" else None
    if isinstance(replay, dict):
        select = ReplaySubset.from_dict(replay).command()
        if select is not None:
            steps.append(("the replay selection (mace_finetuning_select)", select))
    steps.append(("MD" if rec.kind == "md" else "training", command_for(rec.kind, folder)))
    return steps


def _run_step(argv: list[str], folder: Path, env: dict[str, str], rec: RunRecord,
              stop: dict[str, str], t_start: float, watch: LossWatch | None) -> int:
    """Run one process of the run in the folder (output appended to ``train.log``) until it
    ends or ``stop`` gets a reason (cancel, the run-time cap, a diverged loss); its exit
    code."""
    with open(folder / "train.log", "ab") as log:
        proc = subprocess.Popen(argv, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                preexec_fn=_child_setup)
    next_look = time.monotonic() + WATCH_S
    while True:
        try:
            return proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            if "why" not in stop and (folder / "cancel").exists():
                stop["why"] = "cancel"
            if "why" not in stop and rec.time_limit_s and \
                    time.monotonic() - t_start > rec.time_limit_s:
                stop["why"] = "cap"
            if "why" not in stop and watch is not None and time.monotonic() >= next_look:
                next_look = time.monotonic() + WATCH_S
                if watch.poll() is not None:
                    stop["why"] = "diverged"
            if "why" in stop:
                return _kill(proc)


def exit_reason(tool: str, rc: int | None, tail: str, consequence: str = "") -> str:
    """Why a run failed when ``tool`` exited with code ``rc``: with the last line of its log
    ``tail``, and ``consequence`` (e.g. ", so training did not start") after the code."""
    last = [ln for ln in tail.splitlines() if ln.strip()]
    return f"{tool} exited with code {rc}{consequence}" + (
        f": {last[-1].strip()[:300]}" if last else "")


def diverged_reason(what: str | None, spec: dict | None) -> str:
    """Why a run whose loss became NaN or infinite failed, and what to do."""
    lr = ((spec or {}).get("settings") or {}).get("lr") if isinstance(spec, dict) else None
    at = f" (it was {lr:g})" if isinstance(lr, (int, float)) else ""
    return (f"training diverged: {what or 'a loss became NaN or infinite'}, so the model is "
            f"not usable; lower the learning rate{at} and run it again")


def _kill(proc: subprocess.Popen) -> int:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait(timeout=10)
    except ProcessLookupError:
        return proc.wait()
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait()


def finish(store: RunStore, run_id: str, rc: int | None, cancelled: bool,
           reason: str | None = None) -> str:
    """Record the end of a run: done with its model, failed with the reason, or cancelled."""
    rec = store.read(run_id)
    folder = store.folder(run_id)
    tail = log_tail(folder / "train.log")
    if rec.kind == "md":
        product = folder / "result.json"
        result = read_json(product) or {}
        metrics = {k: result.get(k) for k in ("survived_steps", "steps", "failure",
                                               "steps_per_second")}
    else:
        product = folder / f"{rec.name}.model"
        prog = read_progress(folder, rec.max_epochs)
        metrics = {"epochs_done": None if prog.epoch is None else prog.epoch + 1,
                   "valid": prog.last_valid()}
        if prog.non_finite is not None and reason is None and not cancelled:
            reason = diverged_reason(prog.non_finite, rec.spec)  # mace ended "fine"
    now = time.time()
    if cancelled:
        status, extra = "cancelled", {"reason": "cancelled by the user"}
    elif reason is None and rc == 0 and product.is_file():
        status, extra = "done", {"model_path": None if rec.kind == "md" else str(product)}
        if rec.kind != "md":
            _record_the_model(store, rec, product)
    else:
        status = "failed"
        if reason is None:
            tool = "the MD process" if rec.kind == "md" else "mace_run_train"
            if rc is not None and rc < 0:
                reason = f"{tool} was killed by signal {-rc} ({signal.Signals(-rc).name})"
            elif rc == 0:
                reason = (f"{tool} ended without a result" if rec.kind == "md" else
                          "mace_run_train ended without writing a model file")
            else:
                reason = exit_reason(tool, rc, tail)
        extra = {"reason": reason}
    store.transition(run_id, ("queued", "running"), status=status, finished=now,
                     returncode=rc, log_tail=tail, metrics=metrics, **extra)
    return status


def _record_the_model(store: RunStore, rec: RunRecord, product: Path) -> None:
    """Keep the trained model's content hash with the run (files loaded through the run
    later are checked against it), then do what the workspace's submission policy does after
    a training run (:meth:`~mlipft_core.jobs.policy.SubmissionPolicy.after_run`, e.g.
    measure figures in this process, so that whoever shows them loads no model)."""
    folder = store.folder(rec.id)
    provenance.record(folder, "model", product)
    try:
        policy.policy_for(store.workspace).after_run(folder, product)
    except Exception as exc:  # noqa: BLE001 - the run is done whatever comes after it
        print(f"what follows the run could not be done: {exc}", file=sys.stderr)


def run_folder(folder: str) -> str:
    """Entry point of a SLURM job (pickled by submitit): execute one run folder."""
    return execute(folder)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mlipft_core.jobs.runner RUN_FOLDER", file=sys.stderr)
        return 2
    status = execute(args[0])
    return 0 if status in ("done", "cancelled", "skipped") else 1


if __name__ == "__main__":
    raise SystemExit(main())
