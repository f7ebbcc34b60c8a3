"""Model work from several threads at once (the app's sessions are threads of one process):
every caller gets its correct result and no failure leaves the process broken."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from ase.io import read, write

from mlipft_core import e0, evaluate, probes, registry
from mlipft_core.errors import DataError
from mlipft_core.modelwork import model_turn, waiting, watching
from mlipft_core.workspace import Workspace


@pytest.fixture
def small(tmp_path, demo):
    path = tmp_path / "small.xyz"
    write(path, read(demo["sn2_train"], ":12"))
    return str(path)


def _calls(model: str, data: str, workspace) -> dict:
    """The model-heavy calls of the pages, each giving a number to check."""
    return {
        "e0": lambda: float(e0.prepare(data, model, trusted=True).model_energy.sum()),
        "evaluate": lambda: float(evaluate.evaluate_model(model, data, trusted=True)
                                  .metrics.forces_rmse_mev_per_a),
        "cached": lambda: float(evaluate.evaluate_cached(model, data, workspace=workspace,
                                                         trusted=True).pred_energy.sum()),
        "dimer": lambda: float(probes.dimer_curve(model, "C-H", trusted=True)["energies"][0]),
        "inspect": lambda: float(registry.inspect_model(model, trusted=True).parameter_count),
    }


def test_model_work_from_many_threads_gives_every_caller_its_result(small, strong_model,
                                                                   tmp_path):
    ws = Workspace(tmp_path / "ws")
    calls = _calls(strong_model, small, ws)
    expected = {name: f() for name, f in calls.items()}  # one at a time
    got: list[tuple[str, object]] = []

    def work(name):
        try:
            got.append((name, calls[name]()))
        except Exception as exc:  # noqa: BLE001 - the test reports every failure
            got.append((name, exc))

    for _ in range(3):
        threads = [threading.Thread(target=work, args=(name,))
                   for name in list(calls) + ["e0", "evaluate", "dimer"]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    errors = [(n, v) for n, v in got if isinstance(v, Exception)]
    assert not errors, errors
    assert len(got) == 3 * 8
    for name, value in got:
        assert value == pytest.approx(expected[name], rel=1e-6), name
    # and the process is still sound afterwards
    assert calls["e0"]() == pytest.approx(expected["e0"], rel=1e-6)
    assert waiting() == 0


def test_a_failure_in_one_thread_leaves_the_others_and_the_process_sound(small, strong_model,
                                                                        tmp_path, demo):
    bad = tmp_path / "bad.xyz"
    frames = read(small, ":3")
    frames[1].positions[0] = np.nan
    write(bad, frames)
    expected = float(e0.prepare(small, strong_model, trusted=True).model_energy.sum())
    results: dict[str, object] = {}

    def stop_midway(done, total):
        raise KeyboardInterrupt("the page went away")

    def good(i):
        results[f"good{i}"] = float(e0.prepare(small, strong_model, trusted=True)
                                    .model_energy.sum())

    def broken():
        try:
            evaluate.evaluate_model(strong_model, str(bad), trusted=True)
        except DataError as exc:
            results["bad"] = exc

    def interrupted():
        try:
            e0.prepare(small, strong_model, trusted=True, progress=stop_midway)
        except KeyboardInterrupt as exc:
            results["interrupted"] = exc

    threads = [threading.Thread(target=f) for f in (broken, interrupted)] + \
        [threading.Thread(target=good, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert isinstance(results["bad"], DataError)
    assert isinstance(results["interrupted"], KeyboardInterrupt)
    assert [results[f"good{i}"] for i in range(3)] == [pytest.approx(expected, rel=1e-6)] * 3
    assert float(e0.prepare(small, strong_model, trusted=True).model_energy.sum()) == \
        pytest.approx(expected, rel=1e-6)


def test_turns_are_first_come_first_served_and_say_how_many_are_ahead():
    order: list[str] = []
    seen: dict[str, list[int]] = {}
    holding = threading.Event()

    def holder():
        with model_turn():
            holding.set()
            time.sleep(1.2)
            order.append("holder")

    def waiter(name: str, delay: float):
        time.sleep(delay)
        reports: list[int] = []
        # kept nested on purpose: nested model work of the same caller does not wait
        with watching(reports.append), model_turn():  # noqa: SIM117
            with model_turn():
                order.append(name)
        seen[name] = reports

    first = threading.Thread(target=holder)
    first.start()
    holding.wait()
    others = [threading.Thread(target=waiter, args=(f"w{i}", 0.15 * i)) for i in range(3)]
    for t in others:
        t.start()
    for t in others + [first]:
        t.join(30)
    assert order == ["holder", "w0", "w1", "w2"]
    for i in range(3):  # the most ahead first, then 0 when the wait is over
        assert max(seen[f"w{i}"]) == i + 1 and seen[f"w{i}"][-1] == 0
    assert waiting() == 0


def test_a_wait_abandoned_by_its_caller_frees_its_place():
    holding, release = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def holder():
        with model_turn():
            holding.set()
            release.wait(30)

    def impatient():
        def give_up(ahead):
            raise TimeoutError(f"{ahead} ahead")
        try:
            with model_turn(give_up):
                outcome["impatient"] = "ran"
        except TimeoutError as exc:
            outcome["impatient"] = exc

    first = threading.Thread(target=holder)
    first.start()
    holding.wait()
    t = threading.Thread(target=impatient)
    t.start()
    t.join(10)
    assert isinstance(outcome["impatient"], TimeoutError) and waiting() == 0
    release.set()
    first.join(10)
    with model_turn():  # the turn is free again
        outcome["after"] = True
    assert outcome["after"]
