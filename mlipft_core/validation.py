"""Validation of a dataset: findings with stable codes, and the one check of a configuration.

:func:`configuration_errors` is what makes a configuration unusable; :func:`validate` turns it
(and what is wrong with the dataset as a whole) into :class:`Finding` objects, and
:func:`first_error` is how training and evaluation refuse a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from .label_keys import CALC, STRESS_SIZES, LabelKeys, get_label, is_isolated_atom
from .structure_checks import (
    MAX_NEIGHBOUR_BINS,
    MIN_CELL_LENGTH,
    NO_ATOMS,
    OVERLAP_DISTANCE,
    structure_problem,
)


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
    "no_atoms": "a configuration with no atoms (an atom count of 0)",
    "missing_energy": "no energy label, or configurations without one",
    "missing_forces": "no forces label, or configurations without one (those train on "
                      "energies only)",
    "forces_shape": "forces whose shape is not (number of atoms, 3)",
    "stress_shape": "a stress label that is not 6 (Voigt), 9 or 3x3 values",
    "non_finite": "NaN or infinite positions, cells, energies, forces or stresses",
    "unknown_key": "a label key named by the user (--energy-key, --forces-key, --stress-key) "
                   "that no configuration has",
    "overlapping_atoms": f"atoms closer than {OVERLAP_DISTANCE} Å (periodic images included)",
    "bad_cell": "a periodic structure with a singular or degenerate cell (zero volume, or a "
                f"cell vector shorter than {MIN_CELL_LENGTH} Å)",
    "huge_cell": f"a cell so large that mace's neighbour list would need more than "
                 f"{MAX_NEIGHBOUR_BINS:.0e} bins (memory) at the model's cutoff",
    "elements_not_covered": "elements the chosen foundation model does not know",
    "isolated_atom": "IsolatedAtom configurations, which override the E0 choice in mace",
    "stress_non_periodic": "a stress label on a structure that is not periodic",
    "duplicates": "structures that appear more than once",
}

#: What validation says when no key holds energies (the data is then unusable).
NO_ENERGY_MESSAGE = ("no energy label found: name the key that holds total energies "
                     "(e.g. REF_energy, energy, DFT_energy)")


def _structure_key(atoms: Atoms) -> bytes:
    return (atoms.numbers.tobytes() + np.round(atoms.positions, 5).tobytes()
            + np.round(np.asarray(atoms.cell), 5).tobytes())


def _finite_array(value: Any) -> bool | None:
    """Whether every entry of a label is finite; ``None`` when it is not numeric."""
    try:
        return bool(np.all(np.isfinite(np.asarray(value, dtype=float))))
    except (TypeError, ValueError):
        return None


def _forces_value(atoms: Atoms, key: str) -> Any:
    """The forces label, also when it sits where a per-atom array cannot (``atoms.info``)."""
    f = get_label(atoms, key, "forces")
    if f is None and not key.startswith(CALC):
        f = atoms.info.get(key)
    return f


def configuration_errors(atoms: Atoms, keys: LabelKeys, *, cutoff: float | None = None,
                         centered: bool = False, known_numbers: Iterable[int] | None = None,
                         geometry: bool = True) -> list[tuple[str, str]]:
    """Everything that makes one configuration unusable for training or scoring.

    The one check behind :func:`validate` (its errors, which training refuses through
    :func:`first_error`) and :func:`mlipft_core.evaluate.scan` (evaluation), so that what
    validation calls an error is refused everywhere.

    Parameters
    ----------
    atoms
        The configuration.
    keys
        Its label keys; a label whose key is ``None`` is not checked.
    cutoff
        The model's cutoff (Å) for the neighbour-list estimate (:data:`NOMINAL_CUTOFF`
        when ``None``).
    centered
        Whether a non-periodic structure is centred on the origin before its neighbour
        list is built (evaluation does that, ``mace_run_train`` does not).
    known_numbers
        Atomic numbers the model covers (``None``: not checked).
    geometry
        Check positions and cell too (``False``: the labels only).

    Returns
    -------
    list of (str, str)
        ``(finding code, what is wrong)``, the second phrased to follow "configuration #i"
        (see :func:`configuration_text`), e.g. ``("overlapping_atoms", "has overlapping
        atoms: ...")`` or ``("forces_shape", ": its forces 'F' have shape (2, 2) for 2 atoms;
        expected (2, 3)")``. Empty when the configuration is usable.
    """
    if len(atoms) == 0:
        return [("no_atoms", NO_ATOMS)]
    out = _label_errors(atoms, keys)
    if geometry:
        out.extend(_geometry_errors(atoms, cutoff=cutoff, centered=centered,
                                    known_numbers=known_numbers))
    return out


def _label_errors(atoms: Atoms, keys: LabelKeys) -> list[tuple[str, str]]:
    """What is wrong with the energy, forces and stress labels of a configuration with
    atoms (see :func:`configuration_errors`)."""
    n = len(atoms)
    out: list[tuple[str, str]] = []
    if keys.energy is not None:
        e = get_label(atoms, keys.energy, "energy")
        if e is None:
            out.append(("missing_energy", f"has no '{keys.energy}' value"))
        else:
            try:
                ev = float(e)
            except (TypeError, ValueError):
                out.append(("non_finite", f": its energy label '{keys.energy}' is not a "
                                          f"number ({str(e)[:40]!r})"))
            else:
                if not np.isfinite(ev):
                    out.append(("non_finite", f": its energy label '{keys.energy}' is {ev}"))
    if keys.forces is not None:
        f = _forces_value(atoms, keys.forces)
        if f is not None:
            shape = np.shape(f)
            if shape != (n, 3):
                out.append(("forces_shape", f": its forces '{keys.forces}' have shape {shape} "
                                            f"for {n} atoms; expected ({n}, 3)"))
            elif not _finite_array(f):
                out.append(("non_finite", f": its forces '{keys.forces}' hold NaN, infinite "
                                          "or non-numeric values"))
    if keys.stress is not None:
        s = get_label(atoms, keys.stress, "stress")
        if s is not None:
            if np.size(s) not in STRESS_SIZES:
                out.append(("stress_shape", f": its stress '{keys.stress}' has {np.size(s)} "
                                            "values; mace reads 6 (Voigt), 9 or 3x3 values"))
            elif not _finite_array(s):
                out.append(("non_finite", f": its stress '{keys.stress}' holds NaN, infinite "
                                          "or non-numeric values"))
    return out


def _geometry_errors(atoms: Atoms, *, cutoff: float | None, centered: bool,
                     known_numbers: Iterable[int] | None) -> list[tuple[str, str]]:
    """What is wrong with the positions and cell of a configuration with atoms (see
    :func:`configuration_errors`)."""
    if not np.all(np.isfinite(atoms.positions)):
        return [("non_finite", "has NaN or infinite positions")]
    if not np.all(np.isfinite(atoms.cell.array)):
        return [("non_finite", "has a NaN or infinite cell")]
    problem = structure_problem(atoms, cutoff=cutoff, centered=centered,
                                known_numbers=known_numbers)
    return [problem] if problem else []


#: How :func:`validate` words each error found configuration by configuration:
#: ``(what the configurations have, a hint)``.
_ERROR_WORDING = {
    "no_atoms": ("have no atoms", "mace can neither train nor evaluate on an empty structure: "
                                  "remove them"),
    "forces_shape": ("have forces of the wrong shape", ""),
    "stress_shape": ("have a stress of the wrong shape", ""),
    "non_finite": ("contain NaN or infinite values", ""),
    "bad_cell": ("have a singular or degenerate periodic cell", ""),
    "huge_cell": ("are too large for mace's neighbour list", ""),
    "overlapping_atoms": (f"have atoms closer than {OVERLAP_DISTANCE} Å", ""),
}


def configuration_text(index: int, what: str, word: str = "configuration #") -> str:
    """``"configuration #3 has ..."`` or ``"configuration #3: its ..."`` for a problem
    ``what`` of :func:`configuration_errors`."""
    return f"{word}{index}{'' if what.startswith(':') else ' '}{what}"


def _configurations(count: int, wording: str) -> str:
    """``"1 configuration has ..."`` / ``"3 configurations have ..."``."""
    if count != 1:
        return f"{count} configurations {wording}"
    verb, _, rest = wording.partition(" ")
    return f"1 configuration {({'have': 'has', 'are': 'is'}).get(verb, verb + 's')} {rest}"


def validate(frames: Sequence[Atoms], keys: LabelKeys,
             model_elements: Iterable[str] | None = None, *,
             cutoff: float | None = None) -> list[Finding]:
    """All findings for a dataset (an empty list means it is fine to use).

    Errors found configuration by configuration come from :func:`configuration_errors`.
    ``cutoff`` (Å, the model's) sizes the neighbour-list estimate of ``huge_cell``;
    :data:`NOMINAL_CUTOFF` when not given.
    """
    bad: dict[str, list[int]] = {}
    first: dict[str, str] = {}
    for i, a in enumerate(frames):
        seen: set[str] = set()
        for code, what in configuration_errors(a, keys, cutoff=cutoff):
            if code not in seen:
                seen.add(code)
                bad.setdefault(code, []).append(i)
                first.setdefault(code, what)
    findings = _label_findings(frames, keys, bad)
    for code in ("forces_shape", "stress_shape", "non_finite", "bad_cell", "huge_cell",
                 "overlapping_atoms"):
        if code in bad:
            idx = bad[code]
            wording, _ = _ERROR_WORDING[code]
            findings.append(Finding(code, "error", f"{_configurations(len(idx), wording)} "
                                    f"(first: {configuration_text(idx[0], first[code], '#')})",
                                    idx))
    if model_elements is not None:
        findings.extend(_element_findings(frames, model_elements))
    findings.extend(_dataset_findings(frames, keys))
    return findings


def _label_findings(frames: Sequence[Atoms], keys: LabelKeys, bad: dict[str, list[int]]
                    ) -> list[Finding]:
    """Findings about empty configurations and missing energies and forces; ``bad``: the
    configurations with each error code of :func:`configuration_errors`."""
    findings: list[Finding] = []
    n = len(frames)
    if "no_atoms" in bad:
        idx = bad["no_atoms"]
        wording, hint = _ERROR_WORDING["no_atoms"]
        findings.append(Finding("no_atoms", "error", f"{_configurations(len(idx), wording)} "
                                f"(first: #{idx[0]}); {hint}", idx))
    if keys.energy is None:
        findings.append(Finding("missing_energy", "error", NO_ENERGY_MESSAGE))
    elif "missing_energy" in bad:
        missing = bad["missing_energy"]
        findings.append(Finding("missing_energy", "error",
                                f"{len(missing)} of {n} configurations have no "
                                f"'{keys.energy}' value (first: #{missing[0]})", missing))
    # a single atom feels no force: it needs no forces label
    if keys.forces is None and not all(len(a) == 1 for a in frames if len(a)):
        findings.append(Finding("missing_forces", "warning",
                                "no forces label found: fitting and evaluation will use "
                                "energies only"))
    elif keys.forces is not None:
        absent = [i for i, a in enumerate(frames)
                  if len(a) > 1 and _forces_value(a, keys.forces) is None]
        if absent:
            findings.append(Finding("missing_forces", "warning",
                                    f"{len(absent)} of {n} configurations have no "
                                    f"'{keys.forces}' value (first: #{absent[0]}); they train "
                                    "on energies only", absent))
    return findings


def _element_findings(frames: Sequence[Atoms], model_elements: Iterable[str]
                      ) -> list[Finding]:
    """The ``elements_not_covered`` finding, when the data holds elements the model lacks."""
    known = set(model_elements)
    present = sorted({s for a in frames for s in a.get_chemical_symbols()})
    missing_el = [e for e in present if e not in known]
    if not missing_el:
        return []
    idx = [i for i, a in enumerate(frames) if set(a.get_chemical_symbols()) - known]
    return [Finding("elements_not_covered", "error",
                    f"the foundation model does not cover {', '.join(missing_el)}"
                    f" ({len(idx)} configurations)", idx)]


def _dataset_findings(frames: Sequence[Atoms], keys: LabelKeys) -> list[Finding]:
    """Warnings about the dataset as a whole: isolated atoms, stresses of non-periodic
    structures, duplicates."""
    findings: list[Finding] = []
    iso = [i for i, a in enumerate(frames) if is_isolated_atom(a)]
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
    seen_structures: dict[bytes, int] = {}
    dups = []
    for i, a in enumerate(frames):
        k = _structure_key(a)
        if k in seen_structures:
            dups.append(i)
        else:
            seen_structures[k] = i
    if dups:
        findings.append(Finding("duplicates", "warning",
                                f"{len(dups)} structures duplicate an earlier one (first: "
                                f"#{dups[0]} = #{seen_structures[_structure_key(frames[dups[0]])]}"
                                "); duplicates can leak between train and test", dups))
    return findings


def first_error(findings: Sequence[Finding], allow: Iterable[str] = ()) -> Finding | None:
    """The first error among ``findings`` (of :func:`validate`), or ``None``.

    Parameters
    ----------
    findings
        Validation findings of one file.
    allow
        Error codes that do not count (e.g. ``missing_energy`` for a replay file that is
        labelled by the foundation model).

    Returns
    -------
    Finding or None
        What makes the file unusable: training and evaluation refuse it with its message.
    """
    allowed = set(allow)
    return next((f for f in findings if f.severity == "error" and f.code not in allowed), None)
