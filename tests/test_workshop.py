"""Workshop mode: links and tokens, isolation, limits, fair dispatch, the board."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import assert_done, mlipft_cmd
from mlipft_core import jobs, workshop
from mlipft_core.jobs import policy, slurm
from mlipft_core.jobs.local import Dispatcher, dispatch_root, dispatcher_alive
from mlipft_core.jobs.records import InvalidRunNameError, RunRecord, RunStore
from mlipft_core.jobs.runner import _record_the_model
from mlipft_core.strategies import STRATEGIES, RunSpec
from mlipft_core.workspace import Workspace

APP = str(Path(__file__).resolve().parent.parent / "app.py")
VIEWS = Path(APP).parent / "views"


def create(n: int = 2, *extra: str) -> dict:
    out = subprocess.run(mlipft_cmd() + ["workshop", "create", "--participants", str(n),
                                         "--name", "test-shop", "--json", *extra],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def app(token: str | None = None, page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    if token:
        at.query_params["token"] = token
    at.run()
    assert not at.exception, at.exception
    if page:
        at.switch_page(str(VIEWS / page))
        at.run()
        assert not at.exception, at.exception
    return at


def token_of(url: str) -> str:
    return url.split("token=", 1)[1]


def test_create_gives_links_and_separate_spaces():
    d = create(3)
    assert d["instructor_url"].startswith("http://localhost:8501/?token=")
    assert [p["name"] for p in d["participants"]] == ["p01", "p02", "p03"]
    tokens = {token_of(p["url"]) for p in d["participants"]} | {token_of(d["instructor_url"])}
    assert len(tokens) == 4 and all(len(t) >= 20 for t in tokens)
    spaces = [Path(p["workspace"]) for p in d["participants"]]
    assert len(set(spaces)) == 3 and all((s / "runs").is_dir() for s in spaces)
    again = subprocess.run(mlipft_cmd() + ["workshop", "create", "--participants", "2"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already holds a workshop" in again.stderr


def test_without_a_valid_token_only_the_join_page():
    create(2)
    for token in (None, "not-a-token"):
        at = app(token)
        assert [t.value for t in at.title] == ["Join the workshop"]
        assert not at.sidebar.markdown  # no pages, no choices
    # a guessed token with the right length is refused as well
    at = app("x" * 24)
    assert [t.value for t in at.title] == ["Join the workshop"]


def test_a_participant_link_keeps_its_own_space(demo):
    d = create(2)
    t1, t2 = (token_of(p["url"]) for p in d["participants"])
    at = app(t1, "foundation_model.py")
    next(b for b in at.button if b.label == "Use this model").click().run()
    assert at.query_params["token"] == [t1] or at.query_params["token"] == t1
    p1 = Workspace(d["participants"][0]["workspace"])
    p2 = Workspace(d["participants"][1]["workspace"])
    assert p1.get("model") == "demo-gfn1-strong" and p2.get("model") is None
    # a second tab (a new session with the same link) sees the same choice; the other
    # participant does not
    assert any("Demo" in m.value or "demo" in m.value
               for m in app(t1).sidebar.markdown if m.value.startswith("**Model:**"))
    assert any(m.value == "**Model:** —" for m in app(t2).sidebar.markdown)


def test_participants_cannot_reach_each_others_files(tiny, weak_model):
    d = create(2)
    shop = workshop.load(Workspace().root)
    p1, p2 = shop.workspace_of("p01"), shop.workspace_of("p02")
    rec = jobs.prepare(RunSpec("freeze-b", weak_model, str(tiny / "train.xyz"),
                               settings={"max_num_epochs": 1}), workspace=p2)
    assert rec.participant == "p02" and rec.time_limit_s == 30 * 60  # the workshop's rules
    other = p2.runs / rec.id
    # typed paths: only the own space, the staged files and the demo world
    with pytest.raises(workshop.AccessError):
        shop.check_path("p01", other / "config.yaml")
    with pytest.raises(workshop.AccessError):
        shop.check_path("p01", p1.root / ".." / "p02" / "state.json")
    assert shop.check_path("p01", p1.root / "uploads" / "x.xyz")
    # run ids never leave the participant's runs folder
    for crafted in (f"../../p02/runs/{rec.id}", f"..%2F..%2Fp02%2Fruns%2F{rec.id}", rec.id):
        with pytest.raises((InvalidRunNameError, jobs.RunNotFoundError)):
            jobs.cancel(crafted, p1)
    assert RunStore(p2).read(rec.id).status == "queued"
    # in the app: the Data page refuses another participant's file
    at = app(token_of(d["participants"][0]["url"]), "data.py")
    at.radio(key="data_source").set_value("File path").run()
    at.text_input[0].input(str(other / "config.yaml")).run()
    assert any("outside your workshop space" in e.value for e in at.error)


def test_run_limit_and_epoch_cap(tiny, weak_model):
    create(2, "--max-runs", "1", "--max-epochs", "3")
    shop = workshop.load(Workspace().root)
    p1 = shop.workspace_of("p01")

    def spec(epochs=1):
        return RunSpec("freeze-b", weak_model, str(tiny / "train.xyz"),
                       settings={"max_num_epochs": epochs})

    with pytest.raises(workshop.WorkshopError, match="caps runs at 3 epochs"):
        jobs.submit(spec(10), workspace=p1)
    first = jobs.submit(spec(), workspace=p1)
    assert first.participant == "p01" and first.time_limit_s == 30 * 60
    with pytest.raises(workshop.WorkshopError, match="allows 1 queued or running"):
        jobs.submit(spec(), workspace=p1)
    with pytest.raises(workshop.WorkshopError, match="allows 1"):
        jobs.submit_sweep([spec(), spec()], workspace=shop.workspace_of("p02"))
    # the one dispatcher of the workshop serves the participant's run, not one of their own
    assert dispatcher_alive(shop.root) and not (p1.root / "queue" / "dispatcher.json").exists()
    assert_done(jobs.wait(first.id, workspace=p1, timeout=300))
    # the run measured the board's figures in its own process (the runner follows the
    # workshop's rules too)
    figures = json.loads((RunStore(p1).folder(first.id) / workshop.FIGURES).read_text())
    assert figures["head"] == "Default" and figures["target_forces_rmse_mev_per_a"] > 0
    jobs.submit(spec(), workspace=p1)  # a slot is free again


def test_the_workshop_sets_the_rules_of_its_runs(tmp_path, monkeypatch):
    """Through the submission policy the run path asks, without knowing the workshop."""
    shop = workshop.create(Workspace().root, ["ann", "bob"],
                           limits=workshop.Limits(max_active_runs=2, max_epochs=5,
                                                  max_run_minutes=10))
    ann = shop.workspace_of("ann")
    rules = policy.policy_for(ann)
    assert isinstance(rules, workshop.ParticipantRules)
    assert (rules.owner(), rules.time_limit_s(), rules.dispatch_root()) == ("ann", 600.0,
                                                                            shop.root)
    assert dispatch_root(ann.root) == shop.root == dispatch_root(shop.root)
    with pytest.raises(workshop.WorkshopError, match="caps runs at 5 epochs"):
        rules.check_submission(1, [{"max_num_epochs": 6}])
    rules.check_submission(2, [{"max_num_epochs": 5}] * 2)
    with pytest.raises(workshop.WorkshopError, match="allows 2 queued or running") as err:
        jobs.check_submission(ann, 3)
    assert err.value.code == "run_limit"
    # the workshop folder's dispatcher serves every participant; a plain workspace only its own
    served = [s.root for s in Dispatcher(shop.root).stores()]
    assert served == [shop.root / "participants" / n / "runs" for n in ("ann", "bob")]
    plain = Workspace(tmp_path / "plain")
    assert isinstance(policy.policy_for(plain), policy.OpenPolicy)
    assert [s.root for s in Dispatcher(plain.root).stores()] == [plain.runs]
    assert dispatch_root(plain.root) == plain.root
    # the processes the run path starts are told to follow the same rules
    assert "mlipft_core.workshop" in policy.child_env({})[policy.ENV_VAR].split(",")
    # a finished training run does what the policy does after a run: the board's figures
    measured = []
    monkeypatch.setattr(workshop, "record_figures",
                        lambda ws, run_id, model: measured.append((ws.root, run_id, model)))
    store = RunStore(ann)
    store.create(RunRecord(id="r1", name="r1", strategy="naive", status="running"))
    model = store.folder("r1") / "r1.model"
    model.write_bytes(b"model")
    _record_the_model(store, store.read("r1"), model)
    assert measured == [(ann.root, "r1", model)]
    assert (store.folder("r1") / "models.json").is_file()  # and its hash, as for every run


def test_fair_dispatch_across_participants(monkeypatch):
    """One participant's sweep does not starve the others: slots go round-robin."""
    create(3)
    monkeypatch.setenv("MLIPFT_CPU_SLOTS", "2")
    shop = workshop.load(Workspace().root)
    t = 1000.0
    for who, n in (("p01", 4), ("p02", 1), ("p03", 1)):
        store = RunStore(shop.workspace_of(who))
        for i in range(n):
            t += 1
            store.create(RunRecord(id=f"{who}-r{i}", name=f"r{i}", strategy="naive",
                                   created=t, participant=who))

    class Proc:
        def poll(self):
            return None

    d = Dispatcher(shop.root)
    started = []

    def fake(rec, gpu):
        started.append(rec.id)
        d.launched[rec.id] = (Proc(), rec.device, gpu)

    d._launch = fake
    d.step()
    assert started == ["p01-r0", "p02-r0"]  # not p01's whole sweep first
    store = RunStore(shop.workspace_of("p01"))
    store.update("p01-r0", status="done")
    d.launched.pop("p01-r0")
    d.step()
    assert started[-1] == "p03-r0"  # p03 has nothing going: it comes before p01's next


@pytest.mark.slow
def test_board_gathers_every_participants_runs(tiny, weak_model):
    create(2)
    shop = workshop.load(Workspace().root)
    recs = []
    # p01 compares two strategies, p02 runs one: only p01's runs tell strategies apart
    for who, strat in (("p01", "naive"), ("p01", "freeze-b"), ("p02", "freeze-b")):
        recs.append((who, jobs.submit(RunSpec(strat, weak_model, str(tiny / "train.xyz"),
                                              str(tiny / "valid.xyz"),
                                              settings={"max_num_epochs": 1}),
                                      workspace=shop.workspace_of(who))))
    for who, r in recs:
        assert_done(jobs.wait(r.id, workspace=shop.workspace_of(who), timeout=600))
    out = subprocess.run(mlipft_cmd() + ["workshop", "board", "--json"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["participants"] == ["p01", "p02"]
    rows = {(r["participant"], r["strategy"]): r for r in d["runs"]}
    assert sorted(rows) == [("p01", "freeze-b"), ("p01", "naive"), ("p02", "freeze-b")]
    for r in rows.values():
        assert r["status"] == "done" and r["target_forces_rmse_mev_per_a"] > 0
        assert r["forgetting_ratio"] > 0
    assert {e["strategy"]: (e["n_runs"], e["n_participants"]) for e in d["table"]} == {
        "naive": (1, 1), "freeze-b": (2, 2)}
    # the findings are read off p01's two runs: each names the strategy that did better

    assert len(d["findings"]) == 2, d["findings"]
    for key, finding in zip(("forgetting_ratio", "target_forces_rmse_mev_per_a"),
                            d["findings"]):
        best = min(("naive", "freeze-b"), key=lambda s: rows[("p01", s)][key])
        assert finding.startswith(STRATEGIES[best].title + " "), finding
        assert finding.endswith("for 1 of 1 participants who compared strategies."), finding
    # the instructor's board page shows the same runs, under the right names
    at = app(token_of(shop.url(shop.instructor_token)), "board.py")
    table = at.dataframe[0].value
    assert set(table["strategy"]) == {"Naive fine-tuning", "Freeze, variant B"}
    # and the instructor can cancel anyone's run
    q = jobs.submit(RunSpec("naive", weak_model, str(tiny / "train.xyz"),
                            settings={"max_num_epochs": 40}), workspace=shop.workspace_of("p02"))
    at = app(token_of(shop.url(shop.instructor_token)), "board.py")
    next(b for b in at.button if b.label == "Cancel this run").click().run()
    deadline = time.time() + 60
    while jobs.get_run(q.id, shop.workspace_of("p02")).status not in jobs.FINAL and \
            time.time() < deadline:
        time.sleep(0.5)
    assert jobs.get_run(q.id, shop.workspace_of("p02")).status == "cancelled"
    # the instructor changes the limits on the board; they hold for the next submission
    at = app(token_of(shop.url(shop.instructor_token)), "board.py")
    nums = {n.label: n for n in at.number_input}
    nums["Runs queued or running per participant"].set_value(1).run()
    next(b for b in at.button if b.label == "Save the limits").click().run()
    assert workshop.load(shop.root).limits.max_active_runs == 1
    jobs.submit(RunSpec("freeze-b", weak_model, str(tiny / "train.xyz"),
                        settings={"max_num_epochs": 30}), workspace=shop.workspace_of("p01"))
    with pytest.raises(workshop.WorkshopError, match="allows 1"):
        jobs.submit(RunSpec("freeze-b", weak_model, str(tiny / "train.xyz"),
                            settings={"max_num_epochs": 1}), workspace=shop.workspace_of("p01"))
    # a participant's link does not open the board
    at = app(token_of(shop.url(shop.participants[0].token)))
    assert "Instructor board" not in [t.value for t in at.title]


def test_slurm_jobs_carry_the_participant(tiny, weak_model):
    ok, why = slurm.available()
    if not ok:
        pytest.skip(f"no SLURM cluster reachable: {why}")
    create(2, "--executor", "slurm", "--slurm-cpus", "1", "--slurm-time", "10")
    shop = workshop.load(Workspace().root)
    rec = jobs.submit(RunSpec("naive", weak_model, str(tiny / "train.xyz"),
                              settings={"max_num_epochs": 40}), workspace=shop.workspace_of("p02"))
    assert rec.executor == "slurm"
    names = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True,
                           check=True).stdout
    assert f"{rec.slurm_job_id} mlipft-p02-" in names
    jobs.cancel(rec.id, shop.workspace_of("p02"))
    assert jobs.wait(rec.id, shop.workspace_of("p02"), timeout=120).status == "cancelled"


def _participant_ready(shop, who: str, tiny) -> Workspace:
    """A participant who chose the weak demo model and the tiny split."""
    from mlipft_core.data import register_files_as_split

    ws = shop.workspace_of(who)
    split = register_files_as_split(ws, {"train": tiny / "train.xyz",
                                         "valid": tiny / "valid.xyz"}, "tiny")
    ws.set(model="demo-gfn1-weak", model_label="Demo weak (GFN1-xTB)", split_id=split.id)
    return ws


def test_the_epoch_default_follows_the_workshop_cap(tiny):
    create(2, "--max-epochs", "1")
    shop = workshop.load(Workspace().root)
    p1 = _participant_ready(shop, "p01", tiny)
    at = app(token_of(shop.url(shop.participants[0].token)), "runs.py")
    epochs = next(n for n in at.number_input if n.label == "Epochs")
    assert epochs.value == 1 and epochs.max == 1
    # the first Launch with the defaults is accepted, not refused by the cap
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("Queued 1 run." in s.value for s in at.success)
    (rec,) = jobs.list_runs(p1)
    assert rec.max_epochs == 1
    jobs.cancel(rec.id, p1)
    # a choice saved above a cap the instructor lowered later is brought down to it
    p1.set(run_epochs=40)
    shop.limits = workshop.Limits(max_epochs=3)
    shop.save()
    at = app(token_of(shop.url(shop.participants[0].token)), "runs.py")
    assert next(n for n in at.number_input if n.label == "Epochs").value == 3


def test_board_tells_runs_apart_and_leaves_pilots_out(weak_model):
    create(1)
    shop = workshop.load(Workspace().root)
    store = RunStore(shop.workspace_of("p01"))
    t = 1_700_000_000.0

    def run(rid, name, lr, sweep=None):
        store.create(RunRecord(
            id=rid, name=name, strategy="naive", status="done", created=t + len(rid),
            max_epochs=1, sweep=sweep, participant="p01",
            spec={"e0s": "estimated-1464c5511a", "foundation_model": weak_model,
                  "settings": {"lr": lr, "seed": 0}}))

    for i, lr in enumerate((1e-4, 3e-4, 1e-3, 3e-3, 1e-2)):
        run(f"p{i}", f"tune-naive-lr{lr:g}".replace(".", "p"), lr,
            sweep="tune-naive-20240101-000000-abcdef")
    run("final-a", "naive", 3e-3)
    at = app(token_of(shop.url(shop.instructor_token)), "board.py")
    tables = {tuple(d.value.columns)[:2]: d.value for d in at.dataframe}
    study = next(v for k, v in tables.items() if k[0] == "strategy")
    # one finished final run; the pilot's five runs are not in the comparison
    assert list(study["runs"]) == [1]
    assert list(study["E0s"]) == ["estimated E0s"]
    assert list(study["foundation model"]) == ["Demo weak (GFN1-xTB)"]
    by_run = next(v for k, v in tables.items() if k == ("participant", "run"))
    names = list(by_run["run"])
    assert len(set(names)) == 6
    assert "Naive fine-tuning · learning-rate pilot · lr 1e-4" in names
    assert "Naive fine-tuning · lr 3e-3" in names
    cells = [str(v) for df in tables.values() for c in df.columns for v in df[c]]
    assert not any(v in ("None", "nan") or "tune-" in v or "1464c5511a" in v for v in cells)


def test_findings_name_the_strategy_that_won_for_each_participant():
    """The findings are computed from the runs: per participant who compared strategies,
    which one did best, pilots and unfinished runs left out."""
    def run(who, strategy, forgetting, target, status="done", pilot=False):
        return workshop.BoardRun(who, f"{who}-{strategy}", strategy, strategy, status, "local",
                                 None, None, None, target_forces_rmse_mev_per_a=target,
                                 forgetting_ratio=forgetting, pilot=pilot)

    runs = [run("p01", "naive", 3.0, 10.0), run("p01", "freeze-b", 1.5, 20.0),
            run("p02", "naive", 2.0, 5.0), run("p02", "lora", 1.0, 9.0),
            run("p03", "naive", 1.0, 1.0),  # one strategy only: compares nothing
            run("p04", "naive", 0.1, 0.1, status="running"), run("p04", "lora", 9.0, 9.0),
            run("p05", "naive", 0.1, 0.1, pilot=True), run("p05", "lora", 9.0, 9.0)]
    assert workshop.findings(runs) == [
        "Freeze, variant B kept pretraining accuracy best (lowest forgetting ratio) for 1 of 2 "
        "participants who compared strategies.",
        "Naive fine-tuning reached the lowest target force error for 2 of 2 participants who "
        "compared strategies."]
    assert workshop.findings(runs[4:]) == []
