"""Reading, key detection, validation findings, summaries and splits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from mlipft_core import registry
from mlipft_core.data import (
    detect_keys,
    load_dataset,
    make_split,
    read_frames,
    split_indices,
    summarize,
    validate,
)
from mlipft_core.errors import DataError
from mlipft_core.workspace import Workspace


def water(shift: float = 0.0, energy: float = -10.0, **info) -> Atoms:
    a = Atoms("OH2", positions=[[0, 0, 0], [0.96 + shift, 0, 0], [-0.24, 0.93, 0]])
    a.info.update(REF_energy=energy, **info)
    a.arrays["REF_forces"] = np.full((3, 3), 0.1)
    return a


def codes(findings):
    return {f.code for f in findings}


def write_frames(path, frames):
    write(path, frames, format="extxyz")
    return path


def test_unreadable_and_empty(tmp_path):
    binary = tmp_path / "garbage.xyz"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError) as e:
        read_frames(binary)
    assert e.value.code == "unreadable"
    text = tmp_path / "notes.xyz"
    text.write_text("this is not\nan xyz file at all\n")
    with pytest.raises(DataError) as e:
        read_frames(text)
    assert e.value.code == "unreadable"
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(DataError) as e:
        read_frames(empty)
    assert e.value.code == "empty" and "no configurations" in str(e.value)
    with pytest.raises(DataError) as e:
        read_frames(tmp_path / "missing.xyz")
    assert e.value.code == "unreadable"


def test_key_detection_variants(tmp_path):
    # DFT_* keys
    a = water()
    a.info["DFT_energy"] = a.info.pop("REF_energy")
    a.arrays["DFT_forces"] = a.arrays.pop("REF_forces")
    keys = detect_keys([a])
    assert (keys.energy, keys.forces) == ("DFT_energy", "DFT_forces")
    # *_xtb keys, with a prediction key that must not win
    b = water()
    b.info["energy_xtb"] = b.info.pop("REF_energy")
    b.info["MACE_energy"] = 1.0
    b.arrays["forces_xtb"] = b.arrays.pop("REF_forces")
    keys = detect_keys([b])
    assert keys.energy == "energy_xtb" and keys.forces == "forces_xtb"
    assert "MACE_energy" in keys.candidates["energy"]
    # plain energy/forces written by ASE end up as calculator results after reading
    c = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    c.calc = SinglePointCalculator(c, energy=-5.0, forces=np.zeros((3, 3)))
    p = write_frames(tmp_path / "calc.xyz", [c])
    frames = read(p, ":")
    keys = detect_keys(frames)
    assert keys.energy == "calc:energy" and keys.forces == "calc:forces"
    # REF_ preferred over others, and an explicit override wins
    d = water()
    d.info["energy"] = 3.0
    assert detect_keys([d]).energy == "REF_energy"
    assert detect_keys([d], energy="energy").energy == "energy"


def test_each_bad_input_has_its_message():
    good = [water(0.01 * i) for i in range(3)]
    keys = detect_keys(good)
    assert validate(good, keys) == []

    no_e = [water(), water(0.1)]
    del no_e[1].info["REF_energy"]
    f = validate(no_e, detect_keys(no_e))
    assert "missing_energy" in codes(f)
    assert "1 of 2 configurations" in next(x.message for x in f if x.code == "missing_energy")

    bad_f = [water(), water(0.1)]
    bad_f[1].arrays["REF_forces"] = np.zeros((3, 3))
    bad_f[1].arrays.pop("REF_forces")
    bad_f[1].info["REF_forces"] = [1.0, 2.0]  # not per-atom
    f = validate(bad_f, detect_keys(bad_f))
    assert "forces_shape" in codes(f)

    nan = [water(), water(0.1, energy=float("nan"))]
    f = validate(nan, detect_keys(nan))
    assert "non_finite" in codes(f)
    assert next(x for x in f if x.code == "non_finite").indices == [1]

    inf_f = [water(), water(0.1)]
    inf_f[0].arrays["REF_forces"][0, 0] = np.inf
    assert "non_finite" in codes(validate(inf_f, detect_keys(inf_f)))

    f = validate(good, keys, model_elements=["H", "C"])
    cov = next(x for x in f if x.code == "elements_not_covered")
    assert "O" in cov.message and cov.severity == "error"

    iso = good + [Atoms("H", info={"config_type": "IsolatedAtom", "REF_energy": -13.6})]
    f = validate(iso, detect_keys(iso))
    assert "isolated_atom" in codes(f)
    assert "override" in next(x.message for x in f if x.code == "isolated_atom")

    stress = [water(), water(0.1)]
    stress[0].info["REF_stress"] = np.zeros((3, 3))
    f = validate(stress, detect_keys(stress))
    assert "stress_non_periodic" in codes(f)

    dup = [water(), water(0.1), water()]
    f = validate(dup, detect_keys(dup))
    d = next(x for x in f if x.code == "duplicates")
    assert d.indices == [2] and "#2 = #0" in d.message

    assert "missing_energy" in codes(validate([Atoms("H")], detect_keys([Atoms("H")])))


def test_summary_counts():
    frames = [water(0.01 * i, energy=-9.0 - i, config_type="w") for i in range(4)]
    s = summarize(frames, detect_keys(frames))
    assert s.n_configs == 4 and s.n_atoms_total == 12
    assert s.element_atoms == {"H": 8, "O": 4} and s.elements == ["H", "O"]
    assert s.config_types == {"w": 4}
    assert np.allclose(s.energy_per_atom, [(-9.0 - i) / 3 for i in range(4)])
    assert len(s.force_magnitudes) == 12
    assert np.allclose(s.force_magnitudes, np.sqrt(3) * 0.1)


def test_split_is_deterministic_and_saved(tmp_path):
    frames = [water(0.001 * i, energy=-10 - 0.01 * i) for i in range(50)]
    frames[7].info["DFT_energy"] = frames[7].info.pop("REF_energy")  # one bad config
    src = write_frames(tmp_path / "d.xyz", frames)
    ws = Workspace(tmp_path / "ws")
    ds = load_dataset(src)
    s1 = make_split(ds, ws, {"train": 0.6, "valid": 0.2, "test": 0.2}, seed=3)
    s2 = make_split(load_dataset(src), ws, {"train": 0.6, "valid": 0.2, "test": 0.2}, seed=3)
    assert s1.id == s2.id and s1.counts == s2.counts
    assert sum(s1.counts.values()) == 49 and s1.excluded["missing_energy"] == [7]
    t1 = read(s1.file("test"), ":")
    assert all("REF_energy" in a.info for a in t1)
    s3 = make_split(ds, ws, {"train": 0.6, "valid": 0.2, "test": 0.2}, seed=4)
    assert s3.id != s1.id
    assert split_indices(10, {"a": 0.5, "b": 0.5}, 1) == split_indices(10, {"a": 0.5, "b": 0.5}, 1)
    assert split_indices(10, {"a": 0.5, "b": 0.5}, 1) != split_indices(10, {"a": 0.5, "b": 0.5}, 2)
    # calculator-result labels are written under canonical keys
    c = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    frames2 = []
    for i in range(5):
        x = c.copy()
        x.positions[1, 0] += 0.01 * i
        x.calc = SinglePointCalculator(x, energy=-5.0 - i, forces=np.ones((3, 3)) * i)
        frames2.append(x)
    src2 = tmp_path / "calc.xyz"
    write(src2, frames2, format="extxyz")
    s4 = make_split(load_dataset(src2), ws, {"train": 0.6, "test": 0.4}, seed=0)
    tr = read(s4.file("train"), ":")
    assert all("REF_energy" in a.info and "REF_forces" in a.arrays for a in tr)


def test_override_to_unknown_key_is_refused(tmp_path):
    src = write_frames(tmp_path / "d.xyz", [water(), water(0.1)])
    with pytest.raises(DataError) as e:
        load_dataset(src, energy_key="nonexistent")
    assert "nonexistent" in str(e.value) and "REF_energy" in str(e.value)


def test_data_page_opens_without_torch_once_the_model_was_inspected(demo):
    """A fresh server process (a restart, another worker) draws the Data page from the
    workspace's inspection of the model: no torch import, no unpickling."""
    ws = Workspace()
    ws.set(model="demo-gfn1-strong", model_label="Demo strong (GFN1-xTB)")
    info = registry.inspect_cached("demo-gfn1-strong", workspace=ws)
    assert info.elements == ["H", "C", "N", "O", "F", "Cl"] and info.heads == ["Default"]
    assert list((ws.cache / "inspect").glob("*.json"))
    root = Path(__file__).resolve().parent.parent
    child = (
        "import json, sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(root / 'app.py')!r}, default_timeout=300)\n"
        "at.run()\n"
        f"at.switch_page({str(root / 'views' / 'data.py')!r})\n"
        "at.run()\n"
        "print(json.dumps({'exception': [str(e.value) for e in at.exception],\n"
        "  'subheaders': [s.value for s in at.subheader],\n"
        "  'checks': [s.value for s in at.success],\n"
        "  'torch': 'torch' in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                         timeout=600, cwd=root)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert not seen["exception"], seen["exception"]
    assert "Zero-shot evaluation" in seen["subheaders"]  # the page went all the way down
    assert any("train set: 132 configurations" in c for c in seen["checks"])
    assert seen["torch"] is False


def test_mace_cache_folder_is_mace_own(tmp_path, monkeypatch):
    from mace.tools.utils import get_cache_dir

    from mlipft_core.registry import mace_cache_dir

    assert mace_cache_dir() == Path(get_cache_dir()) == tmp_path / "xdg-cache" / "mace"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mace_cache_dir() == Path(get_cache_dir()) == tmp_path / "home" / ".cache" / "mace"
