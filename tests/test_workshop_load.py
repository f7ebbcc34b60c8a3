"""A room of participants pressing the model-heavy buttons at the same moment.

Six workshop participants (headless Chromium contexts on the served app: every browser
session is a thread of the one server process) press Evaluate (zero-shot), Compute E0s,
Launch and Compare together; each must get its own, correct result, and a second round of
Evaluate afterwards works on the same server.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench._workshop_session import (
    CHROMIUM,
    Room,
    Server,
    cancel_own_runs,
    demo_files,
    make_room,
    rounds,
    stage_finished_run,
)
from conftest import assert_done
from mlipft_core import jobs
from mlipft_core.jobs.records import RunRecord, RunStore
from mlipft_core.strategies import RunSpec
from mlipft_core.workspace import Workspace

N = 6


def _same_for_everyone(presses, action) -> str:
    """What the page showed after ``action``: the same for every participant."""
    values = [p.value for p in presses if p.action == action]
    assert len(values) == N, action
    assert len(set(values)) == 1, f"{action}: participants saw different results: {values}"
    return values[0]


def _errors(presses) -> str:
    return "\n".join(f"{p.participant} {p.action} after {p.seconds:.0f} s: {p.error}"
                     for p in presses if p.error)


@pytest.fixture
def served():
    server = Server(Workspace().root)
    yield server
    server.stop()


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed")
def test_participants_pressing_model_buttons_together_each_get_their_result(tmp_path,
                                                                          weak_model, served):
    files = demo_files(tmp_path / "data", train=16, valid=6, test=8, pretrain=10)
    trainer = Workspace(tmp_path / "trainer")
    finished = jobs.submit(RunSpec("naive", weak_model, files["train"],
                                   valid_file=files["valid"], name="naive",
                                   settings={"max_num_epochs": 1}), workspace=trainer)
    assert_done(jobs.wait(finished.id, workspace=trainer, timeout=900))
    room = make_room(Workspace().root, N, files)
    stage_finished_run(trainer.runs / finished.id, room)

    launched = {}

    def cancel_at_once(press):
        """A participant's Launch settled: what it queued is noted and cancelled, so that the
        cores go back to the pages still waiting."""
        if press.action == "launch" and not press.error:
            launched[press.participant] = cancel_own_runs(room, press.participant)

    def before_compare(action, presses):
        """Whether cancelled or already done, each launched run is removed, so that Compare
        shows the one staged run, alike for everyone."""
        if action == "launch":
            for ws in room.workspaces.values():
                for run in jobs.list_runs(ws):
                    if run.id not in room.staged_run.values():
                        jobs.wait(run.id, workspace=ws, timeout=120)
                        jobs.delete(run.id, workspace=ws)

    first = rounds(room, served, ("evaluate", "e0", "launch", "compare"),
                   after_press=cancel_at_once, after_each=before_compare)
    assert not _errors(first), _errors(first)
    zero_shot = _same_for_everyone(first, "evaluate")
    force_rmse = re.search(r"Force RMSE \(meV/Å\) ([\d,.]+)", zero_shot)
    assert force_rmse and float(force_rmse.group(1).replace(",", "")) > 0, zero_shot
    e0_table = _same_for_everyone(first, "e0")
    assert re.search(r"-\d+\.\d{4}", e0_table), e0_table  # E0s in eV, on every page alike
    # every Launch queued exactly one run of its own participant, with the room's epoch cap
    assert set(launched) == set(room.workspaces)
    for name, mine in launched.items():
        assert len(mine) == 1, (name, [r.id for r in mine])
        assert mine[0].participant == name and mine[0].max_epochs == 1
        assert mine[0].status in ("queued", "running", "done"), mine[0].reason
    compared = _same_for_everyone(first, "compare")
    assert "Naive fine-tuning" in compared and re.search(r"\d+\.\d", compared), compared

    # a second round on the same server still works, with the same result: the zero-shot
    # evaluation loads the model and predicts again (nothing of it is cached)
    second = rounds(room, served, ("evaluate",))
    assert not _errors(second), _errors(second)
    assert _same_for_everyone(second, "evaluate") == zero_shot



def test_cancel_own_runs_cancels_what_is_active_and_keeps_the_staged_run():
    """The load test's and the bench's callback: a participant's queued runs are cancelled,
    the staged run and a run that already ended are left as they are."""
    ws = Workspace()
    store = RunStore(ws)
    for i, (rid, status) in enumerate((("staged", "done"), ("ended", "done"),
                                       ("queued", "queued"))):
        store.create(RunRecord(id=rid, name=rid, strategy="naive", status=status,
                               created=1_700_000_000.0 + i))
    room = Room(ws.root, {"p01": "token"}, {"p01": ws}, staged_run={"p01": "staged"})
    mine = cancel_own_runs(room, "p01")
    assert [(r.id, r.status) for r in mine] == [("ended", "done"), ("queued", "queued")]
    assert {r.id: r.status for r in jobs.list_runs(ws)} == {
        "staged": "done", "ended": "done", "queued": "cancelled"}
