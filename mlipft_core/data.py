"""Datasets: reading extxyz, detecting label keys, validation findings, summaries and splits.

Split files are written with the canonical keys that mace reads by default
(``REF_energy``, ``REF_forces``, ``REF_stress``), whatever keys the source file used, so
later steps (E0 fits, training, evaluation) need no key options.
"""

from __future__ import annotations

import io
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from .errors import DataError
from .workspace import Workspace, atomic_write_json, atomic_write_text, file_sha256, read_json

CANONICAL = {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress"}
#: ``key`` value meaning "the calculator results that ASE's reader attached".
CALC = "calc:"
_NOT_LABELS = {"positions", "numbers", "momenta", "velocities", "masses", "initial_charges",
               "initial_magmoms", "tags", "charges", "magmoms"}


# ----------------------------------------------------------------------------- reading
def read_frames(source: str | Path | bytes, name: str = "upload") -> list[Atoms]:
    """Read every configuration of an extxyz file (path or raw bytes).

    Raises
    ------
    DataError
        With code ``unreadable`` (missing, not extxyz, corrupt) or ``empty``.
    """
    from ase.io import read

    label = name if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        if isinstance(source, (bytes, bytearray)):
            text = bytes(source).decode("utf-8")
            label = name
            frames = read(io.StringIO(text), index=":", format="extxyz") if text.strip() else []
        else:
            path = Path(source).expanduser()
            label = str(path)
            if not path.is_file():
                raise DataError(f"{label}: no such file", code="unreadable")
            if path.stat().st_size == 0 or not path.read_bytes().strip():
                frames = []
            else:
                frames = read(path, index=":", format="extxyz")
    except DataError:
        raise
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: not a text file, so not extxyz ({exc.reason})",
                        code="unreadable") from exc
    except Exception as exc:
        raise DataError(f"{label}: cannot be read as extended XYZ "
                        f"({type(exc).__name__}: {exc})", code="unreadable") from exc
    if not frames:
        raise DataError(f"{label}: the file holds no configurations", code="empty")
    return list(frames)


# ----------------------------------------------------------------------------- keys
@dataclass
class LabelKeys:
    """Which info/array keys hold the labels (``calc:energy`` = ASE calculator results)."""

    energy: str | None = None
    forces: str | None = None
    stress: str | None = None
    candidates: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rank(name: str, quantity: str) -> tuple[int, str]:
    """Lower is preferred: exact REF_/DFT_ names, then plain, then others; predictions last."""
    n = name.lower().removeprefix(CALC)
    q = quantity
    if name.startswith(CALC):
        return (2, name)
    order = [f"ref_{q}", f"dft_{q}", q]
    if n in order:
        return (order.index(n), name)
    if n.startswith(("ref_", "dft_")) or n.endswith(("_ref", "_dft")):
        return (3, name)
    if re.search(r"(xtb|gfn|pbe|b3lyp|wb97|ccsd|dft|scan)", n):
        return (4, name)
    if n.startswith(("mace_", "pred", "model_")):
        return (9, name)
    return (5, name)


def key_candidates(frames: Sequence[Atoms]) -> dict[str, list[str]]:
    """All keys that could hold energy, forces or stress, best guess first."""
    found: dict[str, set[str]] = {"energy": set(), "forces": set(), "stress": set()}
    for atoms in frames[:200]:
        n = len(atoms)
        for k, v in atoms.info.items():
            kl = k.lower()
            if "energy" in kl and "weight" not in kl and np.ndim(v) == 0:
                try:
                    float(v)
                    found["energy"].add(k)
                except (TypeError, ValueError):
                    pass
            if ("stress" in kl or "virial" in kl) and "weight" not in kl and np.size(v) in (6, 9):
                if "virial" not in kl:
                    found["stress"].add(k)
        for k, v in atoms.arrays.items():
            if k in _NOT_LABELS:
                continue
            if "force" in k.lower() and np.shape(v) == (n, 3):
                found["forces"].add(k)
        if atoms.calc is not None:
            res = getattr(atoms.calc, "results", {})
            for q in ("energy", "forces", "stress"):
                if q in res:
                    found[q].add(CALC + q)
    return {q: sorted(v, key=lambda name: _rank(name, q)) for q, v in found.items()}


def detect_keys(frames: Sequence[Atoms], energy: str | None = None, forces: str | None = None,
                stress: str | None = None) -> LabelKeys:
    """Best guess of the label keys; explicit arguments override the guess."""
    cands = key_candidates(frames)
    return LabelKeys(
        energy=energy or (cands["energy"][0] if cands["energy"] else None),
        forces=forces or (cands["forces"][0] if cands["forces"] else None),
        stress=stress or (cands["stress"][0] if cands["stress"] else None),
        candidates=cands,
    )


def get_label(atoms: Atoms, key: str | None, quantity: str) -> Any:
    """Value of a label for one configuration, or ``None`` when absent."""
    if key is None:
        return None
    if key.startswith(CALC):
        res = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
        return res.get(key[len(CALC):])
    if quantity == "forces":
        return atoms.arrays.get(key)
    return atoms.info.get(key)


def stress_3x3(value: Any) -> np.ndarray:
    """A stress label (3x3, 9 values or Voigt 6) as a 3x3 array."""
    from ase.stress import voigt_6_to_full_3x3_stress

    v = np.asarray(value, dtype=float)
    return voigt_6_to_full_3x3_stress(v) if v.size == 6 else v.reshape(3, 3)


def canonical_frames(frames: Sequence[Atoms], keys: LabelKeys) -> list[Atoms]:
    """Copies of ``frames`` with labels under ``REF_energy``/``REF_forces``/``REF_stress``."""
    out = []
    for atoms in frames:
        a = Atoms(atoms.get_chemical_symbols(), positions=atoms.get_positions(),
                  cell=atoms.cell, pbc=atoms.pbc)
        for k, v in atoms.info.items():
            if k not in (keys.energy, keys.stress) and not k.startswith("REF_"):
                a.info[k] = v
        for k, v in atoms.arrays.items():
            if k not in _NOT_LABELS and k != keys.forces and not k.startswith("REF_"):
                a.arrays[k] = v
        for q in ("energy", "forces", "stress"):
            v = get_label(atoms, getattr(keys, q), q)
            if v is None:
                continue
            if q == "energy":
                a.info[CANONICAL[q]] = float(v)
            elif q == "forces":
                a.arrays[CANONICAL[q]] = np.asarray(v, dtype=float)
            else:
                a.info[CANONICAL[q]] = stress_3x3(v)
        out.append(a)
    return out


# ----------------------------------------------------------------------------- validation
@dataclass
class Finding:
    """One validation finding with a stable ``code``."""

    code: str
    severity: str  # "error" | "warning" | "info"
    message: str
    indices: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Stable finding codes and what they mean.
FINDING_CODES = {
    "unreadable": "the file cannot be read as extended XYZ",
    "empty": "the file holds no configurations",
    "missing_energy": "no energy label, or configurations without one",
    "missing_forces": "no forces label (training would use energies only)",
    "forces_shape": "forces whose shape is not (number of atoms, 3)",
    "non_finite": "NaN or infinite positions, energies, forces or stresses",
    "elements_not_covered": "elements the chosen foundation model does not know",
    "isolated_atom": "IsolatedAtom configurations, which override the E0 choice in mace",
    "stress_non_periodic": "a stress label on a structure that is not periodic",
    "duplicates": "structures that appear more than once",
}


def _structure_key(atoms: Atoms) -> bytes:
    return (atoms.numbers.tobytes() + np.round(atoms.positions, 5).tobytes()
            + np.round(np.asarray(atoms.cell), 5).tobytes())


def validate(frames: Sequence[Atoms], keys: LabelKeys,
             model_elements: Iterable[str] | None = None) -> list[Finding]:
    """All findings for a dataset (an empty list means it is fine to use)."""
    findings: list[Finding] = []
    n = len(frames)
    if keys.energy is None:
        findings.append(Finding("missing_energy", "error",
                                "no energy label found: name the key that holds total energies "
                                "(e.g. REF_energy, energy, DFT_energy)"))
    else:
        missing = [i for i, a in enumerate(frames) if get_label(a, keys.energy, "energy") is None]
        if missing:
            findings.append(Finding("missing_energy", "error",
                                    f"{len(missing)} of {n} configurations have no "
                                    f"'{keys.energy}' value (first: #{missing[0]})", missing))
    if keys.forces is None:
        findings.append(Finding("missing_forces", "warning",
                                "no forces label found: fitting and evaluation will use "
                                "energies only"))
    else:
        bad = []
        for i, a in enumerate(frames):
            f = get_label(a, keys.forces, "forces")
            if f is None or np.shape(f) != (len(a), 3):
                bad.append(i)
        if bad:
            a = frames[bad[0]]
            shape = np.shape(get_label(a, keys.forces, "forces"))
            findings.append(Finding("forces_shape", "error",
                                    f"{len(bad)} configurations have forces of the wrong shape "
                                    f"(#{bad[0]}: {shape} for {len(a)} atoms; expected "
                                    f"({len(a)}, 3))", bad))
    nonfinite = []
    for i, a in enumerate(frames):
        vals = [a.positions]
        for q in ("energy", "forces", "stress"):
            v = get_label(a, getattr(keys, q), q)
            if v is not None:
                try:
                    vals.append(np.asarray(v, dtype=float))
                except (TypeError, ValueError):
                    vals.append(np.array([np.nan]))
        if not all(np.all(np.isfinite(v)) for v in vals):
            nonfinite.append(i)
    if nonfinite:
        findings.append(Finding("non_finite", "error",
                                f"{len(nonfinite)} configurations contain NaN or infinite "
                                f"values (first: #{nonfinite[0]})", nonfinite))
    if model_elements is not None:
        known = set(model_elements)
        present = sorted({s for a in frames for s in a.get_chemical_symbols()})
        missing_el = [e for e in present if e not in known]
        if missing_el:
            idx = [i for i, a in enumerate(frames) if set(a.get_chemical_symbols()) - known]
            findings.append(Finding("elements_not_covered", "error",
                                    f"the foundation model does not cover {', '.join(missing_el)}"
                                    f" ({len(idx)} configurations)", idx))
    iso = [i for i, a in enumerate(frames) if a.info.get("config_type") == "IsolatedAtom"]
    if iso:
        findings.append(Finding("isolated_atom", "warning",
                                f"{len(iso)} IsolatedAtom configurations: mace would take their "
                                "energies as E0s and silently override the E0 choice; they are "
                                "left out of splits", iso))
    if keys.stress is not None:
        np_idx = [i for i, a in enumerate(frames)
                  if get_label(a, keys.stress, "stress") is not None and not a.pbc.all()]
        if np_idx:
            findings.append(Finding("stress_non_periodic", "warning",
                                    f"{len(np_idx)} non-periodic structures carry a stress "
                                    f"label (first: #{np_idx[0]}); stress is meaningless "
                                    "without a periodic cell", np_idx))
    seen: dict[bytes, int] = {}
    dups = []
    for i, a in enumerate(frames):
        k = _structure_key(a)
        if k in seen:
            dups.append(i)
        else:
            seen[k] = i
    if dups:
        findings.append(Finding("duplicates", "warning",
                                f"{len(dups)} structures duplicate an earlier one (first: "
                                f"#{dups[0]} = #{seen[_structure_key(frames[dups[0]])]}); "
                                "duplicates can leak between train and test", dups))
    return findings


def has_errors(findings: Sequence[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


# ----------------------------------------------------------------------------- summary
@dataclass
class DatasetSummary:
    """Counts, composition, config types and label distributions of a dataset."""

    n_configs: int
    n_atoms_total: int
    n_atoms_min: int
    n_atoms_max: int
    n_periodic: int
    elements: list[str]
    element_atoms: dict[str, int]
    element_configs: dict[str, int]
    config_types: dict[str, int]
    energy_per_atom: list[float]
    force_magnitudes: list[float]

    def to_dict(self, with_arrays: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_arrays:
            d.pop("energy_per_atom")
            d.pop("force_magnitudes")
        return d


def summarize(frames: Sequence[Atoms], keys: LabelKeys) -> DatasetSummary:
    from collections import Counter

    atoms_count: Counter = Counter()
    config_count: Counter = Counter()
    ctypes: Counter = Counter()
    epa, fmag = [], []
    for a in frames:
        syms = a.get_chemical_symbols()
        atoms_count.update(syms)
        config_count.update(set(syms))
        ctypes[str(a.info.get("config_type", "Default"))] += 1
        e = get_label(a, keys.energy, "energy")
        if e is not None:
            epa.append(float(e) / len(a))
        f = get_label(a, keys.forces, "forces")
        if f is not None and np.shape(f) == (len(a), 3):
            fmag.extend(np.linalg.norm(np.asarray(f, dtype=float), axis=1).tolist())
    sizes = [len(a) for a in frames]
    elements = sorted(atoms_count, key=lambda s: atomic_numbers[s])
    return DatasetSummary(
        n_configs=len(frames), n_atoms_total=int(sum(sizes)), n_atoms_min=int(min(sizes)),
        n_atoms_max=int(max(sizes)), n_periodic=int(sum(bool(a.pbc.all()) for a in frames)),
        elements=elements, element_atoms={e: atoms_count[e] for e in elements},
        element_configs={e: config_count[e] for e in elements}, config_types=dict(ctypes),
        energy_per_atom=epa, force_magnitudes=fmag,
    )


# ----------------------------------------------------------------------------- datasets
@dataclass
class Dataset:
    """A dataset read from a file, with its label keys."""

    path: Path
    frames: list[Atoms]
    keys: LabelKeys

    @property
    def n(self) -> int:
        return len(self.frames)


def load_dataset(path: str | Path, energy_key: str | None = None,
                 forces_key: str | None = None, stress_key: str | None = None) -> Dataset:
    """Read a file and detect (or take) its label keys."""
    frames = read_frames(path)
    keys = detect_keys(frames, energy_key, forces_key, stress_key)
    for q, k in (("energy", energy_key), ("forces", forces_key), ("stress", stress_key)):
        if k is not None and k not in keys.candidates.get(q, []) and not any(
                get_label(a, k, q) is not None for a in frames[:50]):
            raise DataError(f"{path}: no configuration has a {q} key {k!r}; found: "
                            f"{', '.join(keys.candidates.get(q, [])) or 'none'}",
                            code=f"missing_{q}")
    return Dataset(Path(path), frames, keys)


# ----------------------------------------------------------------------------- splits
@dataclass
class Split:
    """A saved train / valid / test split in the workspace (canonical REF_* keys)."""

    id: str
    folder: Path
    source: str
    seed: int
    fractions: dict[str, float]
    counts: dict[str, int]
    keys: dict[str, str | None]
    excluded: dict[str, list[int]] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)  # files kept outside the folder

    def file(self, part: str) -> Path:
        if part in self.paths:
            return Path(self.paths[part])
        return self.folder / f"{part}.xyz"

    @property
    def files(self) -> dict[str, str]:
        return {p: str(self.file(p)) for p in self.counts if self.counts[p] > 0}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["folder"] = str(self.folder)
        d["files"] = self.files
        return d


def write_extxyz(path: Path, frames: Sequence[Atoms]) -> None:
    from ase.io import write

    buf = io.StringIO()
    write(buf, list(frames), format="extxyz")
    atomic_write_text(path, buf.getvalue())


def split_indices(n: int, fractions: dict[str, float], seed: int) -> dict[str, list[int]]:
    """Seeded random partition of ``range(n)`` (same seed, same split)."""
    total = sum(fractions.values())
    if total <= 0 or any(v < 0 for v in fractions.values()):
        raise DataError("split fractions must be non-negative and sum to more than 0",
                        code="bad_split")
    perm = np.random.default_rng(seed).permutation(n)
    out, start, names = {}, 0, list(fractions)
    for i, name in enumerate(names):
        size = n - start if i == len(names) - 1 else int(round(fractions[name] / total * n))
        out[name] = sorted(int(j) for j in perm[start:start + size])
        start += size
    return out


def make_split(dataset: Dataset, workspace: Workspace, fractions: dict[str, float] | None = None,
               seed: int = 0) -> Split:
    """Split a dataset (seeded) and save it in the workspace; an identical request reuses it.

    Configurations that fail validation (errors) and IsolatedAtom configurations are left out
    and listed in ``excluded``. Raises :class:`DataError` when nothing usable remains.
    """
    fractions = fractions or {"train": 0.8, "valid": 0.1, "test": 0.1}
    if fractions.get("train", 0) <= 0:
        raise DataError("the training fraction must be above 0", code="bad_split")
    findings = validate(dataset.frames, dataset.keys)
    if dataset.keys.energy is None:
        raise DataError("cannot split: no energy label (see validation)", code="missing_energy")
    excluded = {f.code: f.indices for f in findings
                if f.indices and (f.severity == "error" or f.code in ("isolated_atom", "duplicates"))}
    drop = {i for idx in excluded.values() for i in idx}
    keep = [i for i in range(dataset.n) if i not in drop]
    if len(keep) < 2:
        raise DataError(f"cannot split: only {len(keep)} usable configurations", code="empty")
    src_hash = file_sha256(dataset.path)
    keys = {q: getattr(dataset.keys, q) for q in ("energy", "forces", "stress")}
    import hashlib
    import json

    sid = hashlib.sha256(json.dumps([src_hash, keys, fractions, seed], sort_keys=True)
                         .encode()).hexdigest()[:12]
    folder = workspace.splits / sid
    meta_path = folder / "split.json"
    meta = read_json(meta_path)
    if meta is not None:
        return _split_from_meta(meta, folder)
    parts = split_indices(len(keep), fractions, seed)
    canon = canonical_frames([dataset.frames[i] for i in keep], dataset.keys)
    counts = {}
    for name, idx in parts.items():
        if idx:
            write_extxyz(folder / f"{name}.xyz", [canon[i] for i in idx])
        counts[name] = len(idx)
    meta = {"id": sid, "source": str(dataset.path), "source_sha256": src_hash, "seed": seed,
            "fractions": fractions, "counts": counts, "keys": keys, "excluded": excluded,
            "indices": {name: [keep[i] for i in idx] for name, idx in parts.items()}}
    atomic_write_json(meta_path, meta)  # written last: a split without it does not exist
    return _split_from_meta(meta, folder)


def _split_from_meta(meta: dict[str, Any], folder: Path) -> Split:
    return Split(id=meta["id"], folder=folder, source=meta["source"], seed=meta["seed"],
                 fractions=meta["fractions"], counts=meta["counts"], keys=meta["keys"],
                 excluded=meta.get("excluded", {}), paths=meta.get("files", {}))


def load_split(workspace: Workspace, split_id: str) -> Split:
    meta = read_json(workspace.splits / split_id / "split.json")
    if meta is None:
        raise DataError(f"no saved split {split_id!r} in {workspace.splits}", code="no_split")
    return _split_from_meta(meta, workspace.splits / split_id)


def list_splits(workspace: Workspace) -> list[Split]:
    out = []
    for meta_path in sorted(workspace.splits.glob("*/split.json")):
        meta = read_json(meta_path)
        if meta:
            out.append(_split_from_meta(meta, meta_path.parent))
    return out


def register_files_as_split(workspace: Workspace, files: dict[str, str | Path],
                            name: str) -> Split:
    """Record already split files (e.g. the bundled SN2 target) as a split, without copying."""
    import hashlib
    import json

    hashes = {p: file_sha256(Path(f)) for p, f in files.items()}
    sid = name + "-" + hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:8]
    folder = workspace.splits / sid
    meta = read_json(folder / "split.json")
    if meta is None:
        counts = {p: len(read_frames(f)) for p, f in files.items()}
        meta = {"id": sid, "source": name, "seed": 0, "fractions": {}, "counts": counts,
                "keys": dict(CANONICAL), "excluded": {},
                "files": {p: str(Path(f).resolve()) for p, f in files.items()}}
        atomic_write_json(folder / "split.json", meta)
    return _split_from_meta(meta, folder)
