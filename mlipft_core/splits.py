"""Datasets, their summaries, and seeded train / valid / test splits kept in the workspace.

Split files are written with the canonical keys that mace reads by default
(``REF_energy``, ``REF_forces``, ``REF_stress``), whatever keys the source file used, so
later steps (E0 fits, training, evaluation) need no key options.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from .errors import DataError
from .extxyz import read_frames, write_extxyz
from .label_keys import (
    CANONICAL,
    LabelKeys,
    canonical_frames,
    check_named_keys,
    detect_keys,
    get_label,
)
from .validation import validate
from .workspace import Workspace, atomic_write_json, file_sha256, read_json


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
    """Counts, composition, config types and label distributions of ``frames``."""
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
        if e is not None and len(a):
            try:
                epa.append(float(e) / len(a))
            except (TypeError, ValueError):
                pass  # validation reports it
        f = get_label(a, keys.forces, "forces")
        if f is not None and np.shape(f) == (len(a), 3):
            fmag.extend(np.linalg.norm(np.asarray(f, dtype=float), axis=1).tolist())
    sizes = [len(a) for a in frames] or [0]
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
    check_named_keys(frames, str(path), energy=energy_key, forces=forces_key, stress=stress_key)
    keys = detect_keys(frames, energy_key, forces_key, stress_key)
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

    Configurations that fail validation (errors), isolated atoms
    (:func:`~mlipft_core.data.is_isolated_atom`) and duplicates are left out and
    listed in ``excluded``. Raises :class:`DataError` when nothing usable remains.
    """
    fractions = fractions or {"train": 0.8, "valid": 0.1, "test": 0.1}
    if fractions.get("train", 0) <= 0:
        raise DataError("the training fraction must be above 0", code="bad_split")
    findings = validate(dataset.frames, dataset.keys)
    if dataset.keys.energy is None:
        raise DataError("cannot split: no energy label (see validation)", code="missing_energy")
    excluded = {f.code: f.indices for f in findings if f.indices
                and (f.severity == "error" or f.code in ("isolated_atom", "duplicates"))}
    drop = {i for idx in excluded.values() for i in idx}
    keep = [i for i in range(dataset.n) if i not in drop]
    if len(keep) < 2:
        raise DataError(f"cannot split: only {len(keep)} usable configurations", code="empty")
    src_hash = file_sha256(dataset.path)
    keys = {q: getattr(dataset.keys, q) for q in ("energy", "forces", "stress")}
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
    """The split ``split_id`` saved in ``workspace``; :class:`DataError` (code ``no_split``)
    when there is none."""
    meta = read_json(workspace.splits / split_id / "split.json")
    if meta is None:
        raise DataError(f"no saved split {split_id!r} in {workspace.splits}", code="no_split")
    return _split_from_meta(meta, workspace.splits / split_id)


def register_files_as_split(workspace: Workspace, files: dict[str, str | Path],
                            name: str) -> Split:
    """Record already split files (e.g. the bundled SN2 target) as a split, without copying."""
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
