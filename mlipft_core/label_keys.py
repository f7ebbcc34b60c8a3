"""Labels of configurations: which keys hold energies, forces and stresses, their values,
copies under mace's canonical keys, and which configurations are isolated atoms.

A key is the name of an ``atoms.info`` entry (energy, stress) or an ``atoms.arrays`` entry
(forces); ``calc:energy`` and the like name the calculator results that ASE's reader attached
(a plain ``energy=`` in the file).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from .errors import DataError
from .extxyz import check_file, iter_frames
from .workspace import file_version

CANONICAL = {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress"}
#: ``key`` value meaning "the calculator results that ASE's reader attached".
CALC = "calc:"
_NOT_LABELS = {"positions", "numbers", "momenta", "velocities", "masses", "initial_charges",
               "initial_magmoms", "tags", "charges", "magmoms"}
#: The ``config_type`` of an isolated atom (see :func:`is_isolated_atom`).
ISOLATED_ATOM = "IsolatedAtom"


@dataclass
class LabelKeys:
    """Which info/array keys hold the labels (``calc:energy`` = ASE calculator results)."""

    energy: str | None = None
    forces: str | None = None
    stress: str | None = None
    candidates: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Sizes of a stress label that mace reads: Voigt 6, 9 values or a 3x3 matrix
#: (``mace.tools.torch_tools.voigt_to_matrix``).
STRESS_SIZES = (6, 9)


def _numeric(value: Any) -> bool:
    """Whether a label value is a number or an array of numbers."""
    try:
        return bool(np.issubdtype(np.asarray(value).dtype, np.number))
    except (TypeError, ValueError):
        return False


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
    misshapen: set[str] = set()
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
            if "stress" in kl and "virial" not in kl and "weight" not in kl and _numeric(v):
                if np.size(v) in STRESS_SIZES:
                    found["stress"].add(k)
                elif k == CANONICAL["stress"]:
                    # a REF_stress of the wrong size (e.g. 4 values) is still the stress
                    # label: mace reads that key by default and would fail on it, so
                    # validation reports its shape (another name is not read, so ignored)
                    found["stress"].add(k)
                    misshapen.add(k)
        for k, v in atoms.arrays.items():
            if k in _NOT_LABELS:
                continue
            if "force" in k.lower() and np.issubdtype(np.asarray(v).dtype, np.number):
                # a per-atom array of the wrong width (e.g. REF_forces:R:2) is still the
                # forces label: validation reports its shape instead of "no forces"
                found["forces"].add(k)
                if np.shape(v) != (n, 3):
                    misshapen.add(k)
        if atoms.calc is not None:
            res = getattr(atoms.calc, "results", {})
            for q in ("energy", "forces", "stress"):
                if q in res:
                    found[q].add(CALC + q)
    return {q: sorted(v, key=lambda name: (name in misshapen, _rank(name, q)))
            for q, v in found.items()}


def present_keys(frames: Sequence[Atoms]) -> list[str]:
    """Every info and per-atom array key of the first configurations (labels or not)."""
    keys: dict[str, None] = {}
    for atoms in frames[:200]:
        for k in atoms.info:
            keys.setdefault(k, None)
        for k in atoms.arrays:
            if k not in ("numbers", "positions"):
                keys.setdefault(k, None)
        if atoms.calc is not None:
            for k in getattr(atoms.calc, "results", {}):
                keys.setdefault(CALC + k, None)
    return list(keys)


def unknown_key_message(frames: Sequence[Atoms], quantity: str, key: str, label: str = "data"
                        ) -> str | None:
    """A message when the named ``key`` for ``quantity`` is in none of ``frames`` (the first
    200 are looked at), else ``None``."""
    head = frames[:200]
    if any(get_label(a, key, quantity) is not None or key in a.info or key in a.arrays
           for a in head):
        return None
    cands = key_candidates(head).get(quantity, [])
    others = [k for k in present_keys(head) if k not in cands]
    where = "no configuration" if len(frames) <= 200 else "none of the first 200 configurations"
    return (f"{label}: {where} has the {quantity} key {key!r}; {quantity} keys in the file: "
            f"{', '.join(cands) or 'none'}; other keys: {', '.join(others) or 'none'}")


def check_named_keys(frames: Sequence[Atoms], label: str = "data", *, energy: str | None = None,
                     forces: str | None = None, stress: str | None = None) -> None:
    """:class:`DataError` (code ``unknown_key``) when a key the user named is not in the file."""
    for q, k in (("energy", energy), ("forces", forces), ("stress", stress)):
        if k is not None:
            msg = unknown_key_message(frames, q, k, label)
            if msg:
                raise DataError(msg, code="unknown_key")


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


def mace_key_options(keys: LabelKeys) -> dict[str, str]:
    """The ``mace_run_train`` options (``energy_key``, ``forces_key``, ``stress_key``) that
    make mace read the labels ``keys`` names.

    A label ASE's reader attached as a calculator result (``calc:energy``, from a plain
    ``energy=`` in the file) is read by mace under the plain name (``energy``, ``forces``,
    ``stress``: mace asks ASE's calculator for them). A quantity without a label keeps
    mace's default (``REF_energy``, ...), which the file then does not hold either.
    """
    out = {}
    for q in ("energy", "forces", "stress"):
        k = getattr(keys, q)
        out[f"{q}_key"] = (CANONICAL[q] if k is None else
                           k[len(CALC):] if k.startswith(CALC) else k)
    return out


def file_label_keys(path: str | Path) -> LabelKeys:
    """The label keys detected in an extxyz file (:func:`detect_keys` on its first 200
    configurations), remembered per file version in this process.

    Raises
    ------
    DataError
        When the file cannot be read.
    """
    try:
        version = file_version(path)
    except OSError:
        check_file(path)  # the typed error for a missing file or a folder
        raise DataError(f"{path}: cannot be read", code="unreadable") from None
    keys = _file_label_keys(*version)
    return LabelKeys(keys.energy, keys.forces, keys.stress,
                     {q: list(v) for q, v in keys.candidates.items()})


@functools.lru_cache(maxsize=64)
def _file_label_keys(path: str, size: int, mtime_ns: int) -> LabelKeys:
    """:func:`file_label_keys` of one file version (cached)."""
    return detect_keys(list(islice(iter_frames(path), 200)))


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


def is_isolated_atom(atoms: Atoms) -> bool:
    """Whether ``atoms`` is an isolated atom: exactly one atom, with
    ``config_type=IsolatedAtom`` in its info.

    This is what ``mace_run_train`` takes for one (mace 0.3.16,
    ``mace.data.utils.load_from_xyz``): it uses the energy of such a configuration in a
    training file as the E0 of its element, in place of the E0s it was given, and does not
    train on it. The cell is not looked at (mace does not either): a periodic single atom
    marked ``IsolatedAtom`` counts too. A configuration of more atoms marked
    ``IsolatedAtom`` is not one: mace trains on it like any other.

    Parameters
    ----------
    atoms
        One configuration.

    Returns
    -------
    bool
        ``True`` for an isolated atom.
    """
    return len(atoms) == 1 and atoms.info.get("config_type") == ISOLATED_ATOM
