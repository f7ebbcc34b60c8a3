"""The E0 methods and their fit: per-element values, diagnostics and offsets (:mod:`.e0`).

``compute`` gives one method's E0s for an :class:`E0Inputs` (a training set evaluated with
the foundation model, see :func:`mlipft_core.e0_inputs.prepare`); the fit methods take the
directions the data cannot determine from a prior (the isolated atoms, else the foundation
E0s or zero), as the description of :mod:`mlipft_core.e0` explains.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from .data import LabelKeys
from .errors import MlipftError
from .workspace import read_json_checked

METHODS = ("foundation", "average", "estimated", "isolated", "explicit")
#: Methods that fit E0s to the data by least squares, and the configurations they need.
FIT_METHODS = ("average", "estimated")
MIN_FIT_CONFIGS = 2
#: Offsets above this (eV/atom) mean the data and the model use different levels of theory.
LEVEL_MISMATCH_EV_PER_ATOM = 0.1
ANCHOR_ISOLATED = "isolated atoms"
ANCHOR_FOUNDATION = "foundation E0s"
ANCHOR_NONE = "none"


class E0Error(MlipftError):
    """An E0 method cannot be applied to the given inputs."""

    code = "e0_error"


@dataclass
class FitDiagnostics:
    """Health of a least-squares fit of energies on composition."""

    n_configs: int
    elements: list[str]
    rank: int
    condition_number: float
    singular_values: list[float]
    undetermined: list[str]  # elements whose E0 the data cannot pin down
    explanation: str
    #: why the data cannot pin them down (the relation, an absent element), "" when it can
    reason: str = ""

    @property
    def rank_deficient(self) -> bool:
        return self.rank < len(self.elements)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["rank_deficient"] = self.rank_deficient
        d["condition_number"] = (None if not np.isfinite(self.condition_number)
                                 else self.condition_number)
        return d


@dataclass
class E0Result:
    """E0s of one method and what they do to the model's energies on the data."""

    method: str
    e0: dict[str, float]                 # element -> eV
    foundation_e0: dict[str, float] | None
    n_atoms: np.ndarray                  # per configuration
    offset_before: np.ndarray | None     # (E_ref - E_model) / N, eV/atom, model's own E0s
    offset_after: np.ndarray | None      # same with this method's E0s
    diagnostics: FitDiagnostics | None = None
    warnings: list[str] = field(default_factory=list)
    anchor: str | None = None            # prior of undetermined directions (fit methods)

    @property
    def anchored(self) -> bool:
        """True unless an undetermined fit took its undetermined directions from an
        arbitrary prior (no isolated-atom energies)."""
        return not (self.diagnostics is not None and self.diagnostics.rank_deficient
                    and self.anchor != ANCHOR_ISOLATED)

    @property
    def offset_rmse_before_mev_per_atom(self) -> float | None:
        return _rms_mev(self.offset_before)

    @property
    def offset_rmse_after_mev_per_atom(self) -> float | None:
        return _rms_mev(self.offset_after)

    @property
    def e0_by_z(self) -> dict[int, float]:
        return {atomic_numbers[s]: v for s, v in self.e0.items()}

    def mace_argument(self) -> str:
        """The ``--E0s`` value ``mace_run_train`` accepts: ``{1: -13.6, 6: -1029.0}``."""
        return mace_e0s_argument(self.e0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "e0": self.e0,
            "foundation_e0": self.foundation_e0,
            "offset_rmse_before_mev_per_atom": self.offset_rmse_before_mev_per_atom,
            "offset_rmse_after_mev_per_atom": self.offset_rmse_after_mev_per_atom,
            "diagnostics": None if self.diagnostics is None else self.diagnostics.to_dict(),
            "warnings": self.warnings,
            "anchor": self.anchor,
            "anchored": self.anchored,
            "mace_argument": self.mace_argument(),
        }


def _rms_mev(x: np.ndarray | None) -> float | None:
    if x is None or len(x) == 0:
        return None
    return float(np.sqrt(np.mean(np.square(x))) * 1000)


def mace_e0s_argument(e0: Mapping[str, float]) -> str:
    """E0s keyed by element symbol as the Python-dict string ``--E0s`` takes (keys are Z)."""
    return repr({atomic_numbers[s]: float(v) for s, v in
                 sorted(e0.items(), key=lambda kv: atomic_numbers[kv[0]])})


def composition_matrix(frames: Sequence[Atoms], elements: Sequence[str]) -> np.ndarray:
    """Counts of each element (columns) in each configuration (rows)."""
    zs = [atomic_numbers[e] for e in elements]
    return np.array([[np.count_nonzero(a.numbers == z) for z in zs] for a in frames], float)


def diagnose(A: np.ndarray, elements: Sequence[str]) -> FitDiagnostics:
    """Rank, condition number and, for rank-deficient fits, which elements are coupled."""
    n, m = A.shape
    s = np.linalg.svd(A, compute_uv=False) if n else np.zeros(0)
    tol = (s.max() if s.size else 0.0) * max(A.shape) * np.finfo(float).eps
    rank = int(np.sum(s > tol))
    cond = float(s[0] / s[-1]) if s.size == m and s[-1] > tol else float("inf")
    undetermined: list[str] = []
    explanation = "All E0s are determined by the data."
    reason = ""
    if rank < m:
        _, _, vt = np.linalg.svd(A)
        null = vt[rank:]
        involved = [elements[j] for j in range(m) if np.any(np.abs(null[:, j]) > 1e-8)]
        undetermined = involved
        absent = [elements[j] for j in range(m) if not A[:, j].any()]
        parts = []
        if absent:
            parts.append(f"{', '.join(absent)} never appear{'s' if len(absent) == 1 else ''} "
                         "in the data")
        coupled = [e for e in involved if e not in absent]
        rows = A[A.sum(axis=1) > 0]
        if len(rows) and len({tuple(np.round(r / r.sum(), 10)) for r in rows}) == 1:
            parts.append("every configuration has the same composition, so only the sum of "
                         "E0s weighted by that composition is determined")
        elif coupled:
            rel = composition_relations(A, elements)
            parts.append(f"the counts of {', '.join(coupled)} obey "
                         f"{'; '.join(rel) if rel else 'a linear relation'} in every "
                         "configuration, so their E0s cannot be separated")
        reason = "; ".join(parts)
        explanation = (f"Rank {rank} of {m}: {reason}. A least-squares fit returns the "
                       "minimum-norm split, which is arbitrary for these elements.")
    return FitDiagnostics(n, list(elements), rank, cond, [float(x) for x in s],
                          undetermined, explanation, reason)


def composition_relations(A: np.ndarray, elements: Sequence[str]) -> list[str]:
    """Exact linear relations between element counts, e.g. ``n_H = 3 n_C``."""
    import sympy

    rows = np.unique(A.astype(int), axis=0)
    basis = sympy.Matrix(rows.tolist()).nullspace()
    out = []
    for v in basis:
        v = v * sympy.ilcm(*[sympy.fraction(x)[1] for x in v])
        left = [(int(c), elements[j]) for j, c in enumerate(v) if c > 0]
        right = [(-int(c), elements[j]) for j, c in enumerate(v) if c < 0]
        if not left or not right:
            continue

        def side(terms):
            return " + ".join(f"{'' if c == 1 else str(c) + ' '}n_{e}" for c, e in terms)

        out.append(f"{side(left)} = {side(right)}")
    return out


def _lstsq(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(A, b, rcond=None)[0]


def anchored_lstsq(A: np.ndarray, b: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Least squares of ``A x = b`` whose undetermined directions take the ``prior`` values.

    ``x = prior + pinv(A) (b - A prior)``: the residual equals that of plain least squares,
    and ``x - prior`` lies in the row space of ``A`` (the part the data determines). For a
    full-rank ``A`` the prior has no effect.
    """
    prior = np.asarray(prior, float)
    return prior + _lstsq(A, b - A @ prior)


def _isolated_prior(inputs: E0Inputs) -> tuple[np.ndarray | None, list[str]]:
    missing = [e for e in inputs.elements if e not in inputs.isolated]
    if missing:
        return None, missing
    return np.array([inputs.isolated[e] for e in inputs.elements]), []


def _unanchored_warning(diag: FitDiagnostics, anchor: str, missing: list[str]) -> str:
    what = ("the foundation model's E0s (changed as little as the data allows)"
            if anchor == ANCHOR_FOUNDATION else "the minimum-norm solution")
    supply = ("isolated-atom energies of the reference method (a file with one IsolatedAtom "
              "configuration per element" + (f"; missing now: {', '.join(missing)}"
                                             if missing and len(missing) < len(diag.elements)
                                             else "") + ")")
    return (f"Not anchored: the data cannot determine the E0s of "
            f"{', '.join(diag.undetermined)} separately "
            f"({diag.reason}). "
            f"Their split comes from {what}, which is arbitrary. It fits these configurations "
            "but sets the asymptote of dimer curves and the energy of every composition outside "
            f"this family. Supply {supply} to anchor it.")


def load_explicit(values: Mapping[str | int, float] | str | Path) -> dict[str, float]:
    """Explicit E0s from a dict (keys: symbols or Z), JSON text or a JSON file."""
    if isinstance(values, (str, Path)):
        text = str(values).strip()
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            try:
                p = Path(text).expanduser()
                is_file = p.is_file()
            except (OSError, ValueError):
                is_file = False
            if not is_file:
                if is_choice_id(text):
                    raise E0Error(f"there is no saved E0 choice {text} in this workspace: fit "
                                  "and save the E0s (E0s page), or give an E0 method "
                                  "(foundation, average, estimated, isolated)",
                                  code="unknown_e0_choice") from None
                why = (exc.msg if isinstance(exc, json.JSONDecodeError)
                       else "nested too deeply")
                raise E0Error(f"explicit E0s {text[:60]!r} are neither valid JSON nor a file "
                              f"({why}): give a method name, a saved choice, JSON such as "
                              "'{\"H\": -13.6}' or a JSON file") from None
            raw, problem = read_json_checked(p, object)
            if problem is not None:
                raise E0Error(f"explicit E0s: {p}{problem.removeprefix(p.name)}") from None
    else:
        raw = values
    if not isinstance(raw, Mapping):
        raise E0Error("explicit E0s must be a mapping of element (symbol or Z) to energy in eV")
    out = {}
    for k, v in raw.items():
        key = str(k).strip()
        if key.isdigit():
            if len(key) > 3 or not 1 <= int(key) < len(chemical_symbols):
                raise E0Error(f"explicit E0s: {key[:20]!r} is not an atomic number")
            sym = chemical_symbols[int(key)]
        else:
            sym = key
        if sym not in atomic_numbers or sym == "X":
            raise E0Error(f"explicit E0s: {k!r} is not an element")
        try:
            out[sym] = float(v)
        except OverflowError:
            raise E0Error(f"explicit E0s: the value for {sym} is too large to be an energy "
                          "in eV; give it in eV, e.g. -13.6") from None
        except (TypeError, ValueError) as exc:
            raise E0Error(f"explicit E0s: value for {sym} is not a number: {v!r}") from exc
        if not np.isfinite(out[sym]):
            raise E0Error(f"explicit E0s: value for {sym} is not finite")
    return out


def level_offset_ev_per_atom(offsets: Sequence[float] | np.ndarray | None) -> float | None:
    """The mean offset (eV/atom) between reference and model energies per atom,
    ``(E_ref - E_model) / N``, over the configurations where it is finite; ``None`` without
    any."""
    if offsets is None:
        return None
    values = np.asarray(offsets, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def levels_differ(offset_ev_per_atom: float | None) -> bool:
    """Whether a mean offset (:func:`level_offset_ev_per_atom`) says the data and the model
    use different levels of theory (more than :data:`LEVEL_MISMATCH_EV_PER_ATOM`)."""
    return offset_ev_per_atom is not None and abs(offset_ev_per_atom) > LEVEL_MISMATCH_EV_PER_ATOM


def relative_per_atom(energy: np.ndarray, inputs: E0Inputs, e0: Mapping[str, float]
                      ) -> np.ndarray:
    """Energies per atom relative to E0s, ``(E - Σ n_el E0_el) / N``: the reference's against
    the chosen E0s, the model's against its own (its interaction energy)."""
    vec = np.array([e0[e] for e in inputs.elements])
    return (np.asarray(energy, dtype=float) - inputs.A @ vec) / inputs.n_atoms


@dataclass
class E0Inputs:
    """A training set evaluated once with the foundation model (shared by all methods)."""

    frames: list[Atoms]
    keys: LabelKeys
    elements: list[str]
    ref_energy: np.ndarray
    model_energy: np.ndarray | None
    foundation_e0: dict[str, float] | None
    isolated: dict[str, float]
    model_elements: list[str] | None = None

    @property
    def n_atoms(self) -> np.ndarray:
        return np.array([len(a) for a in self.frames])

    @property
    def A(self) -> np.ndarray:
        return composition_matrix(self.frames, self.elements)


#: a saved E0 choice's id: ``<method>-<hex>`` (:func:`mlipft_core.e0_choices.save_choice`)
_CHOICE_ID = re.compile(r"^(" + "|".join(METHODS) + r")-[0-9a-f]{6,64}$")


def is_choice_id(value: Any) -> bool:
    """Whether ``value`` reads as a saved E0 choice's id (``estimated-1464c5511a``)."""
    return isinstance(value, str) and bool(_CHOICE_ID.match(value.strip()))


def compute(inputs: E0Inputs, method: str,
            explicit: Mapping[str | int, float] | str | Path | None = None) -> E0Result:
    """E0s of one method, with offsets before/after and fit diagnostics."""
    if method not in METHODS:
        raise E0Error(f"unknown E0 method {method!r}; choose from {', '.join(METHODS)}")
    A, elements = inputs.A, inputs.elements
    warnings: list[str] = []
    diag = None
    anchor: str | None = None
    found = inputs.foundation_e0
    if method in ("foundation", "estimated") and found is None:
        raise E0Error(f"the {method!r} method needs a foundation model")
    if method in FIT_METHODS and len(inputs.frames) < MIN_FIT_CONFIGS:
        raise E0Error(f"the {method!r} E0s are a least-squares fit over configurations and need "
                      f"at least {MIN_FIT_CONFIGS} with an energy label (IsolatedAtom ones "
                      f"aside); the data has {len(inputs.frames)}",
                      code="too_few_configurations")
    if method == "foundation":
        e0 = {e: found[e] for e in elements}
    elif method in FIT_METHODS:
        diag = diagnose(A, elements)
        iso_prior, iso_missing = _isolated_prior(inputs)
        # fit a correction x to a base: 0 for 'average', the foundation E0s for 'estimated'
        if method == "average":
            target, base = inputs.ref_energy, np.zeros(len(elements))
        else:
            target = inputs.ref_energy - inputs.model_energy
            base = np.array([found[e] for e in elements])
        if iso_prior is not None:
            prior, anchor = iso_prior - base, ANCHOR_ISOLATED
        else:  # keep the base where the data is silent
            prior = np.zeros(len(elements))
            anchor = ANCHOR_NONE if method == "average" else ANCHOR_FOUNDATION
        x = anchored_lstsq(A, target, prior)
        e0 = {e: float(b + c) for e, b, c in zip(elements, base, x)}
        if diag.rank_deficient and anchor != ANCHOR_ISOLATED:
            warnings.append(_unanchored_warning(diag, anchor, iso_missing))
        elif diag.rank_deficient:
            warnings.append(f"Anchored to isolated-atom energies: the data determines "
                            f"{diag.rank} of {len(elements)} combinations of E0s and the rest "
                            "come from the isolated atoms of the reference method.")
        if method == "average" and found is not None:
            warnings.append("'average' E0s absorb the interaction energy of the training "
                            "data into per-element constants and ignore the model; mace "
                            "refuses them for multihead fine-tuning.")
    elif method == "isolated":
        if not inputs.isolated:
            raise E0Error("the data has no IsolatedAtom configurations; give isolated-atom "
                          "energies as a file or use explicit values")
        missing = [e for e in elements if e not in inputs.isolated]
        if missing:
            raise E0Error(f"no isolated-atom energy for {', '.join(missing)}")
        e0 = {e: inputs.isolated[e] for e in elements}
    else:
        if explicit is None:
            raise E0Error("the 'explicit' method needs values (a dict or a JSON file)")
        given = load_explicit(explicit)
        missing = [e for e in elements if e not in given]
        if missing:
            raise E0Error(f"explicit E0s miss {', '.join(missing)}")
        e0 = {e: given[e] for e in elements}
    before = after = None
    if inputs.model_energy is not None and found is not None:
        n = inputs.n_atoms
        before = (inputs.ref_energy - inputs.model_energy) / n
        delta = np.array([e0[e] - found[e] for e in elements])
        after = (inputs.ref_energy - (inputs.model_energy + A @ delta)) / n
        offset = level_offset_ev_per_atom(before)
        if method == "foundation" and levels_differ(offset):
            warnings.append(f"The data and the model differ by {offset:+.3f} eV/atom "
                            "on average: different levels of theory. Keeping the foundation "
                            "E0s would make the network learn this offset.")
    return E0Result(method, e0, None if found is None else {e: found[e] for e in elements},
                    inputs.n_atoms, before, after, diag, warnings,
                    anchor if method in FIT_METHODS else None)


def compute_all(inputs: E0Inputs, explicit=None) -> dict[str, E0Result]:
    """Every method that applies to the inputs.

    Methods without their inputs (no model, no isolated atoms, no explicit values) are
    skipped; explicit values that were given but are wrong raise :class:`E0Error`.
    """
    out = {}
    for m in METHODS:
        if m == "explicit" and explicit is None:
            continue
        try:
            out[m] = compute(inputs, m, explicit=explicit)
        except E0Error:
            if m == "explicit":
                raise
            continue
    return out


def format_energy_per_atom(ev: float) -> str:
    """``-2.71 keV/atom``, ``+1.21 eV/atom`` or ``33.6 meV/atom``, whichever reads best."""
    a = abs(ev)
    if a >= 1000:
        return f"{ev / 1000:+.2f} keV/atom"
    if a >= 1:
        return f"{ev:+.2f} eV/atom"
    return f"{ev * 1000:+.1f} meV/atom"
