"""Bad inputs through the real ``mlipft`` command: each gets its own finding or message.

Every case runs the installed command in a subprocess (the test's own workspace) and checks
the finding code that ``mlipft validate --json`` reports, or the one-line ``error: ...`` the
other commands exit with, or (for inputs that must work) the result.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import mlipft_cmd
from mlipft_core.jobs import provenance

H2 = "H 0 0 0 0 0 0.1\nH 0 0 0.74 0 0 -0.1\n"
PROPS = "Properties=species:S:1:pos:R:3:REF_forces:R:3"


def xyz(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def molecule(lattice: str | None = None, atoms: str = H2, energy: str = "-1.0",
             props: str = PROPS) -> str:
    n = len(atoms.strip().splitlines())
    cell = f'Lattice="{lattice}" pbc="T T T" ' if lattice else ""
    return f"{n}\n{cell}{props} REF_energy={energy}\n{atoms}"


def sn2_subset(tmp: Path, demo: dict, name: str, n: int) -> str:
    from ase.io import read, write

    path = tmp / name
    write(path, read(demo["sn2_train"], f":{n}"), format="extxyz")
    return str(path)


def done_run(root: Path, run_id: str, model: str, metrics: dict | None = None) -> Path:
    """A finished run folder with a model (as the runner leaves it)."""
    folder = root / run_id
    folder.mkdir(parents=True)
    shutil.copy(model, folder / f"{run_id}.model")
    rec = {"id": run_id, "name": run_id, "strategy": "naive", "status": "done",
           "created": 1.0, "finished": 2.0, "model_path": str(folder / f"{run_id}.model"),
           "metrics": metrics or {}, "spec": {}}
    (folder / "run.json").write_text(json.dumps(rec))  # NaN stays NaN (Python's json)
    provenance.record(folder, "model", folder / f"{run_id}.model")  # as the runner records it
    return folder


def workspace() -> Path:
    return Path(os.environ["MLIPFT_WORKSPACE"])


def finding(code: str, *needles: str, rc: int = 1):
    """Expect ``validate --json`` to report ``code`` with ``needles`` in its message."""
    return ("finding", code, needles, rc)


def error(*needles: str):
    """Expect exit code 2, nothing on stdout, and one ``error:`` line with ``needles``."""
    return ("error", None, needles, 2)


def works(check):
    """Expect exit code 0 and ``check(parsed JSON, tmp)`` to hold."""
    return ("works", check, (), 0)


# Each case: (id, setup(tmp, demo, weak_model) -> argv, expectation)
CASES = [
    # forces with the wrong number of columns: a forces_shape error naming the shape
    ("forces_two_columns", lambda t, d, m: ["validate", xyz(t, "f2.xyz", molecule(
        atoms="H 0 0 0 0.1 0.2\nH 0 0 0.74 0.1 0.2\n",
        props="Properties=species:S:1:pos:R:3:REF_forces:R:2"))],
     finding("forces_shape", "(2, 2) for 2 atoms", "expected (2, 3)")),
    ("forces_two_columns_evaluate", lambda t, d, m: ["evaluate", m, xyz(t, "f2.xyz", molecule(
        atoms="H 0 0 0 0.1 0.2\nH 0 0 0.74 0.1 0.2\n",
        props="Properties=species:S:1:pos:R:3:REF_forces:R:2"))],
     error("configuration #0", "shape (2, 2)", "expected (2, 3)")),
    # overlapping atoms, also through a periodic boundary
    ("overlapping_atoms", lambda t, d, m: ["validate", xyz(t, "ov.xyz", molecule(
        atoms="O 0 0 0 0 0 0\nH 0 0 0.05 0 0 0\nH 0.9 0 0 0 0 0\n"))],
     finding("overlapping_atoms", "atoms 0 and 1 are 0.050 Å apart")),
    ("overlapping_atoms_periodic", lambda t, d, m: ["validate", xyz(t, "ovp.xyz", molecule(
        "8 0 0 0 8 0 0 0 8", atoms="H 0.01 0.01 0.01 0 0 0\nH 7.98 7.99 7.995 0 0 0\n"))],
     finding("overlapping_atoms", "atoms 0 and 1 are 0.039 Å apart")),
    ("overlapping_atoms_evaluate", lambda t, d, m: ["evaluate", m, xyz(t, "ov.xyz", molecule(
        atoms="O 0 0 0 0 0 0\nH 0 0 0 0 0 0\nH 0.9 0 0 0 0 0\n"))],
     error("configuration #0 has overlapping atoms", "0.000 Å")),
    # singular or degenerate periodic cells
    ("zero_cell_vector", lambda t, d, m: ["validate", xyz(t, "c0.xyz", molecule(
        "10 0 0 0 10 0 0 0 0"))],
     finding("bad_cell", "periodic cell vector c has length 0")),
    ("coplanar_cell", lambda t, d, m: ["validate", xyz(t, "cp.xyz", molecule(
        "10 0 0 0 10 0 10 10 0"))],
     finding("bad_cell", "singular")),
    ("bad_cell_evaluate", lambda t, d, m: ["evaluate", m, xyz(t, "c0.xyz", molecule(
        "10 0 0 0 10 0 0 0 0"))],
     error("configuration #0 has a degenerate periodic cell")),
    # a cell whose neighbour list would not fit in memory: refused before any graph
    ("huge_cell", lambda t, d, m: ["validate", xyz(t, "huge.xyz", molecule(
        "10000 0 0 0 10000 0 0 0 10000"))],
     finding("huge_cell", "10000 × 10000 × 10000 Å", "neighbour-list bins")),
    ("huge_cell_evaluate", lambda t, d, m: ["evaluate", m, xyz(t, "huge.xyz", molecule(
        "3000 0 0 0 3000 0 0 0 3000"))],
     error("configuration #0 is too large for mace's neighbour list", "3000 × 3000 × 3000")),
    # NaN positions: evaluate refuses them
    ("nan_positions_evaluate", lambda t, d, m: ["evaluate", m, xyz(t, "nan.xyz", molecule(
        atoms="H 0 0 nan 0 0 0\nH 0 0 0.74 0 0 0\n"))],
     error("configuration #0 has NaN or infinite positions")),
    # an IsolatedAtom needs no forces: no forces_shape (nor missing_forces) finding
    ("isolated_atom_without_forces", lambda t, d, m: ["validate", xyz(
        t, "iso.xyz", molecule() + "1\nProperties=species:S:1:pos:R:3 REF_energy=-13.6 "
        "config_type=IsolatedAtom\nH 0 0 0\n")],
     works(lambda out, t: out["ok"] and {f["code"] for f in out["findings"]}
           == {"isolated_atom"})),
    # label keys named by the user that the file does not have
    ("unknown_energy_key", lambda t, d, m: ["evaluate", m, d["sn2_test"],
                                            "--energy-key", "nosuch_energy"],
     error("'nosuch_energy'", "energy keys in the file: REF_energy")),
    ("unknown_forces_key", lambda t, d, m: ["evaluate", m, d["sn2_test"],
                                            "--forces-key", "nosuch_forces"],
     error("'nosuch_forces'", "forces keys in the file: REF_forces")),
    ("unknown_key_validate", lambda t, d, m: ["validate", d["sn2_test"],
                                              "--energy-key", "nosuch_energy"],
     finding("unknown_key", "'nosuch_energy'", "REF_energy")),
    # batch sizes that are not a positive number of structures
    ("batch_size_zero", lambda t, d, m: ["evaluate", m, d["sn2_test"], "--batch-size", "0"],
     error("--batch-size must be at least 1", "not 0")),
    ("batch_size_negative", lambda t, d, m: ["evaluate", m, d["sn2_test"],
                                             "--batch-size", "-3"],
     error("--batch-size must be at least 1", "not -3")),
    # a folder where a file belongs
    ("folder_evaluate", lambda t, d, m: ["evaluate", m, str(t)],
     error(": is a folder, not a file")),
    ("folder_validate", lambda t, d, m: ["validate", str(t)],
     finding("unreadable", "is a folder, not a file")),
    # a non-text file: the message names the path
    ("binary_file", lambda t, d, m: ["evaluate", m, _binary(t)],
     error("bin.xyz: not a text file")),
    ("binary_file_validate", lambda t, d, m: ["validate", _binary(t)],
     finding("unreadable", "bin.xyz: not a text file")),
    # a file with a header and no atoms
    ("header_only", lambda t, d, m: ["evaluate", m, xyz(t, "hdr.xyz", f"3\n{PROPS}\n")],
     error("hdr.xyz: configuration #0 (lines 1-2) is only a header", "declares 3 atoms")),
    ("count_line_only", lambda t, d, m: ["validate", xyz(t, "cnt.xyz", "3\n")],
     finding("unreadable", "ends after its atom count")),
    # an unknown element symbol, with its line and configuration
    ("unknown_element", lambda t, d, m: ["evaluate", m, xyz(t, "xx.xyz", molecule() + molecule(
        atoms="Xx 0 0 0 0 0 0\nH 0 0 0.74 0 0 0\n"))],
     error("xx.xyz, line 7 (configuration #1): unknown element symbol 'Xx'")),
    # a training set of one configuration: the E0 fits need two
    ("one_configuration_e0", lambda t, d, m: ["e0", sn2_subset(t, d, "one.xyz", 1),
                                              "--model", m, "--method", "estimated"],
     error("'estimated' E0s", "at least 2", "the data has 1")),
    # compare: model paths (relative ones too), registry names and run ids all resolve
    ("compare_model_path", lambda t, d, m: ["compare", _copy_model(t, m), "demo-gfn1-weak",
                                            _run(m), "--target", sn2_subset(t, d, "t.xyz", 3)],
     works(lambda out, t: [r["name"] for r in out] == ["my.model", "demo-gfn1-weak", "fine"])),
    ("compare_missing_path", lambda t, d, m: ["compare", "nowhere/none.model",
                                              "--target", d["sn2_test"]],
     error("model file not found: nowhere/none.model")),
    ("compare_unknown_name", lambda t, d, m: ["compare", "no-such-run-or-model",
                                              "--target", d["sn2_test"]],
     error("'no-such-run-or-model' is neither a model file, a registry name", "nor a run id")),
    ("compare_unreadable_run", lambda t, d, m: ["compare", _unreadable_run(),
                                                "--target", d["sn2_test"]],
     error("run broken: run.json holds a list, not a run record")),
    ("compare_run_outside_runs", lambda t, d, m: ["compare", _escaping_run(t, m),
                                                  "--target", d["sn2_test"]],
     error("run id 'evil' does not name a folder in")),
]


def _binary(tmp: Path) -> str:
    path = tmp / "bin.xyz"
    path.write_bytes(b"\x00\x01\xff\xfe\x80binary" * 64)
    return str(path)


def _copy_model(tmp: Path, model: str) -> str:
    shutil.copy(model, tmp / "my.model")
    return "my.model"  # relative: the command runs in tmp


def _run(model: str) -> str:
    done_run(workspace() / "runs", "fine", model)
    return "fine"


def _unreadable_run() -> str:
    folder = workspace() / "runs" / "broken"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("[1, 2]")
    return "broken"


def _escaping_run(tmp: Path, model: str) -> str:
    outside = done_run(tmp / "elsewhere", "evil", model)
    (workspace() / "runs").mkdir(parents=True, exist_ok=True)
    (workspace() / "runs" / "evil").symlink_to(outside, target_is_directory=True)
    return "evil"


def run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(mlipft_cmd() + args, capture_output=True, text=True, timeout=300,
                          cwd=cwd, check=False)


@pytest.mark.parametrize("setup, expect", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_its_own_finding_or_message(tmp_path, demo, weak_model, setup, expect):
    kind, check, needles, rc = expect
    argv = setup(tmp_path, demo, weak_model) + ["--json"]
    proc = run(argv, cwd=tmp_path)
    assert proc.returncode == rc, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    if kind == "error":
        assert proc.stdout.strip() == ""
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
        for needle in needles:
            assert needle in last, last
        return
    out = json.loads(proc.stdout)
    if kind == "works":
        assert check(out, tmp_path), out
        return
    hits = [f for f in out["findings"] if f["code"] == check]
    assert hits, out["findings"]
    assert hits[0]["severity"] == "error"
    for needle in needles:
        assert needle in hits[0]["message"], hits[0]["message"]


def strict_loads(text: str):
    """``json.loads`` that refuses NaN, Infinity and -Infinity (not JSON)."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.slow
def test_json_output_is_strict_on_a_file_with_nan_labels(tmp_path, demo, weak_model):
    from ase.io import read, write

    frames = read(demo["sn2_train"], ":6")
    frames[1].info["REF_energy"] = float("nan")
    frames[3].arrays["REF_forces"][0, 0] = float("inf")
    nan_file = tmp_path / "nan_labels.xyz"
    write(nan_file, frames, format="extxyz")
    assert "nan" in nan_file.read_text().lower()  # the labels really are NaN in the file
    done_run(workspace() / "runs", "nanrun", weak_model,
             metrics={"valid": {"rmse_e_per_atom": float("nan"), "rmse_f": float("inf")}})

    # validate: strict JSON, and the NaN and infinite labels are a finding
    proc = run(["validate", str(nan_file), "--json"])
    assert proc.returncode == 1, proc.stderr
    out = strict_loads(proc.stdout)
    bad = next(f for f in out["findings"] if f["code"] == "non_finite")
    assert bad["indices"] == [1, 3] and bad["severity"] == "error"

    # evaluate, e0 and compare refuse the labels clearly instead of printing NaN
    for args, needle in (
            (["evaluate", weak_model, str(nan_file)],
             "configuration #1: its energy label 'REF_energy' is nan"),
            (["e0", str(nan_file), "--model", weak_model, "--method", "estimated"],
             "configuration #1 has a NaN, infinite or non-numeric energy label"),
            (["compare", weak_model, "--target", str(nan_file)],
             "configuration #1: its energy label 'REF_energy' is nan")):
        proc = run(args + ["--json"])
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stdout.strip() == "" and needle in proc.stderr, (args, proc.stderr)

    # without the bad configurations, each prints strict JSON
    clean = tmp_path / "clean.xyz"
    write(clean, [a for i, a in enumerate(frames) if i not in (1, 3)], format="extxyz")
    for args in (["validate", str(clean)], ["evaluate", weak_model, str(clean)],
                 ["e0", str(clean), "--model", weak_model, "--method", "average"],
                 ["compare", weak_model, "nanrun", "--target", str(clean)]):
        proc = run(args + ["--json"])
        assert proc.returncode == 0, (args, proc.stderr)
        assert strict_loads(proc.stdout), args

    # runs: a run whose metrics hold NaN and infinity is listed with null in their place
    proc = run(["runs", "--json"])
    assert proc.returncode == 0, proc.stderr
    rows = strict_loads(proc.stdout)
    row = next(r for r in rows if r["id"] == "nanrun")
    assert row["metrics"]["valid"] == {"rmse_e_per_atom": None, "rmse_f": None}
