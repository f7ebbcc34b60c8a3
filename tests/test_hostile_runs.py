"""Nothing loads a model nobody confirmed, and no action is done twice or half: the board,
``compare RUN_ID``, two study starts at once and a refused workshop set-up, through the real
command line."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import time
from pathlib import Path

from conftest import mlipft_cmd
from mlipft_core import jobs, workshop
from mlipft_core.demo import demo_paths
from mlipft_core.jobs.records import RunStore
from mlipft_core.strategies import RunSpec
from mlipft_core.workspace import Workspace


class _Marker:
    """Unpickling this writes a marker file: a stand-in for a model file that runs code."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('loaded')",))


def _evil_model(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps(_Marker(marker)))
    return path


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(mlipft_cmd() + list(args), capture_output=True, text=True,
                          timeout=timeout)


def _one_line_error(out: subprocess.CompletedProcess) -> str:
    line = out.stderr.strip()
    assert out.returncode == 2, out.stdout + out.stderr
    assert line.startswith("error: ") and "\n" not in line, line
    assert "Error:" not in line and "Exception" not in line, line
    return line


def test_the_board_never_loads_a_participants_model(tmp_path, weak_model):
    assert _cli("workshop", "create", "--participants", "1", "--json").returncode == 0
    shop = workshop.load(Workspace().root)
    ws = shop.workspace_of("p01")
    marker = tmp_path / "loaded"
    # a finished run whose foundation model and trained model are files that run code when
    # loaded (the participant's own upload, which only they confirmed)
    rec = jobs.prepare(RunSpec("naive", weak_model, str(_train_set(tmp_path))), workspace=ws)
    store = RunStore(ws)
    folder = store.folder(rec.id)
    evil = _evil_model(folder / f"{rec.name}.model", marker)
    data = json.loads((folder / "run.json").read_text())
    data["spec"]["foundation_model"] = str(_evil_model(tmp_path / "upload.model", marker))
    (folder / "run.json").write_text(json.dumps(data))
    store.transition(rec.id, ("queued",), status="done", model_path=str(evil),
                     finished=time.time())
    # what the run measured itself (figures.json) is what the board shows
    (folder / workshop.FIGURES).write_text(json.dumps({
        "head": "Default", "target_forces_rmse_mev_per_a": 123.5,
        "target_energy_rmse_mev_per_atom": "abc", "forgetting_ratio": 1.25}))
    out = _cli("workshop", "board", "--json")
    assert out.returncode == 0, out.stderr
    assert not marker.exists(), "the board loaded a participant's model"
    row = json.loads(out.stdout)["runs"][0]
    assert row["status"] == "done" and row["target_forces_rmse_mev_per_a"] == 123.5
    assert row["forgetting_ratio"] == 1.25 and row["target_energy_rmse_mev_per_atom"] is None
    # without figures the row is there, without numbers, and still nothing is loaded
    (folder / workshop.FIGURES).unlink()
    out = _cli("workshop", "board", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["runs"][0]["target_forces_rmse_mev_per_a"] is None
    assert not marker.exists()


def _train_set(tmp_path: Path) -> Path:
    from ase.io import read, write

    path = tmp_path / "ten.xyz"
    if not path.exists():
        write(path, read(demo_paths()["sn2_train"], ":10"))
    return path


def test_compare_refuses_a_run_model_file_replaced_after_the_run(tmp_path, weak_model, demo):
    foundation = tmp_path / "copy.model"
    shutil.copy(weak_model, foundation)
    marker = tmp_path / "loaded"
    train = _train_set(tmp_path)
    rec = jobs.submit(RunSpec("naive", str(foundation), str(train), name="naive",
                              settings={"max_num_epochs": 1}))
    done = jobs.wait(rec.id, timeout=900)
    assert done.status == "done", done.reason
    recorded = json.loads((RunStore().folder(rec.id) / "models.json").read_text())
    assert set(recorded) == {"foundation_model", "model"}

    def compare_run() -> subprocess.CompletedProcess:
        return _cli("compare", rec.id, "--target", str(train), "--json")

    # the trained model replaced by another pickle in the run folder
    model = Path(done.model_path)
    original = model.read_bytes()
    _evil_model(model, marker)
    line = _one_line_error(compare_run())
    assert "changed after the run" in line and str(model.resolve()) in line, line
    assert not marker.exists()
    model.write_bytes(original)
    # the foundation model the run started from replaced under the same name
    kept = foundation.read_bytes()
    _evil_model(foundation, marker)
    line = _one_line_error(compare_run())
    assert "foundation model" in line and "changed after the run" in line, line
    assert not marker.exists()
    foundation.write_bytes(kept)
    # the run's record edited to name another file, and a link to another file: the check
    # goes by what the run used, not by the path
    evil = tmp_path / "evil.model"
    _evil_model(evil, marker)
    run_json = RunStore().folder(rec.id) / "run.json"
    original_record = run_json.read_text()
    edited = json.loads(original_record)
    edited["spec"]["foundation_model"] = str(evil)
    run_json.write_text(json.dumps(edited))
    line = _one_line_error(compare_run())
    assert "foundation model" in line and "changed after the run" in line, line
    run_json.write_text(original_record)
    foundation.unlink()
    foundation.symlink_to(evil)
    line = _one_line_error(compare_run())
    assert "foundation model" in line and "changed after the run" in line, line
    assert not marker.exists()
    foundation.unlink()
    foundation.write_bytes(kept)
    # without the record of what the run used, nothing of it is loaded
    (RunStore().folder(rec.id) / "models.json").unlink()
    line = _one_line_error(compare_run())
    assert "holds no record of its content" in line, line
    assert not marker.exists()


def test_study_starts_at_once_queue_one_set_of_pilots(tmp_path, demo, weak_model,
                                                         strong_model):
    from ase.io import read, write

    for name, key, sel in (("train", "sn2_train", ":20"), ("valid", "sn2_valid", ":5"),
                           ("test", "sn2_test", ":5"), ("pretrain", "pretrain_test", ":5"),
                           ("replay", "replay_pool", ":10")):
        write(tmp_path / f"{name}.xyz", read(demo[key], sel))
    cmd = mlipft_cmd() + [
        "study", "--model", strong_model, "--train", str(tmp_path / "train.xyz"),
        "--valid", str(tmp_path / "valid.xyz"), "--test", str(tmp_path / "test.xyz"),
        "--pretrain", str(tmp_path / "pretrain.xyz"), "--replay", str(tmp_path / "replay.xyz"),
        "--isolated-file", demo["sn2_isolated_atoms"], "--strategies", "naive",
        "--lrs", "1e-3,1e-2", "--pilot-epochs", "1", "--epochs", "1", "--small-size", "10",
        "--no-wait", "--json"]
    procs = []
    for i in range(3):  # each starts while another fits its E0s or queues its pilots
        if i:
            time.sleep(1.5)
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    ids = {json.loads(o[0])["id"] for o in outs}
    assert len(ids) == 1  # the same study
    runs = jobs.list_runs()
    assert len(runs) == 2, [(r.id, r.sweep) for r in runs]  # one pilot: 2 learning rates
    assert len({r.sweep for r in runs}) == 1


def test_a_refused_workshop_set_up_leaves_nothing_behind(tmp_path, weak_model):
    line = _one_line_error(_cli("workshop", "create", "--participants", "1",
                                "--stage-model", str(tmp_path / "nonexistent.model")))
    assert "nonexistent.model" in line and "no such file" in line, line
    assert not (Workspace().root / workshop.FILE).exists()
    out = _cli("workshop", "create", "--participants", "1", "--stage-model", weak_model,
               "--json")
    assert out.returncode == 0, out.stderr
    assert [Path(p).name for p in json.loads(out.stdout)["staged"]["models"]] == [
        Path(weak_model).name]
    # a typed path with a NUL byte is refused like any other path outside the space
    shop = workshop.load(Workspace().root)
    try:
        shop.check_path("p01", "/etc/passwd\0.xyz")
    except workshop.AccessError as exc:
        assert "outside your workshop space" in str(exc) and "\0" not in str(exc)
    else:
        raise AssertionError("a path with a NUL byte was not refused")
