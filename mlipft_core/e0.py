"""Atomic reference energies (E0s): every method mace offers, with diagnostics.

A MACE model predicts ``E = sum_i E0[Z_i] + E_interaction``. When the reference method of the
target data differs from the foundation model's (another functional, xTB, CCSD(T)), absolute
energies disagree by eV to keV per atom; the E0s must absorb that offset.

Methods (the names of ``mace_run_train --E0s``):

``foundation``
    the model's own E0s (first head when it has several);
``average``
    least squares of total reference energy on composition, ignoring the model;
``estimated``
    model-aware re-estimation: foundation E0s plus a least-squares correction fitted to
    ``E_ref - E_foundation`` (what ``mace_run_train --E0s estimated`` does);
``isolated``
    energies of ``IsolatedAtom`` configurations in the data (or a separate file);
``explicit``
    values given by the user (a dict or a JSON file).

For each method the module reports per-element values, the rank and condition number of the
least-squares problem, the per-configuration offset ``(E_ref - E_model) / N`` before and after
replacing the model's E0s, its RMSE, and which elements the data cannot determine.

Rank-deficient fits and the physical anchor
-------------------------------------------
When the compositions of the training data obey a linear relation (in the SN2 demo every
configuration has ``n_H = 3 n_C``), least squares determines only some combinations of E0s;
any value along the undetermined directions fits the data equally well. Those directions are
not harmless: they set the asymptote of every dimer curve and the energy of every structure
whose composition lies outside the family. The fit methods therefore take the undetermined
directions from a *prior* and fit only what the data determines::

    E0 = prior + pinv(A) (b - A prior)

which leaves the residual of the fit exactly as it is. The prior, in order of preference:

1. the isolated-atom energies of the reference method (``IsolatedAtom`` configurations in the
   data or ``isolated_file``), the physical zero of the E0 decomposition (``anchor =
   "isolated atoms"``);
2. for ``estimated``, the foundation model's own E0s, i.e. the foundation E0s change as little
   as possible (``anchor = "foundation E0s"``); across levels of theory that split is arbitrary,
   so the result carries a warning naming what the data cannot determine and what to supply;
3. for ``average``, zero (the minimum-norm solution, ``anchor = "none"``), with the same warning.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from .data import LabelKeys, detect_keys, get_label, read_frames
from .errors import DataError, MlipftError
from .workspace import (Workspace, atomic_write_json, damaged_notice, note, read_json_checked,
                        set_aside_if_damaged)

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


def _isolated_prior(inputs: "E0Inputs") -> tuple[np.ndarray | None, list[str]]:
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


def isolated_energies(frames: Sequence[Atoms], keys: LabelKeys | None = None) -> dict[str, float]:
    """Energies of single-atom ``IsolatedAtom`` configurations."""
    keys = keys or detect_keys(frames)
    out = {}
    for a in frames:
        if a.info.get("config_type") == "IsolatedAtom" and len(a) == 1:
            e = get_label(a, keys.energy, "energy")
            if e is not None:
                out[a.get_chemical_symbols()[0]] = float(e)
    return out


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


def prepare(data: str | Path | Sequence[Atoms], model: str | Path | None = None, *,
            head: str | None = None, keys: LabelKeys | None = None, trusted: bool = False,
            isolated_file: str | Path | None = None, batch_size: int | None = None,
            device: str | None = None, progress=None,
            workspace: Workspace | None = None) -> E0Inputs:
    """Read the training data and evaluate the foundation model on it (batched).

    ``IsolatedAtom`` configurations are set aside (mace would use them as E0s).

    With a ``workspace`` and a data file, the foundation model's predictions come from the
    workspace's prediction cache (:func:`~mlipft_core.evaluate.evaluate_cached`, keyed by the
    SHA-256 of the model file, the head and the SHA-256 of the data file) and its elements,
    heads and E0s from the cached inspection: a second preparation of the same inputs (a
    reload, another tab, a launch) spends no model time.
    """
    all_frames = read_frames(data) if isinstance(data, (str, Path)) else list(data)
    keys = keys or detect_keys(all_frames)
    if keys.energy is None:
        raise DataError("no energy label: E0s cannot be fitted", code="missing_energy")
    isolated = isolated_energies(all_frames, keys)
    if isolated_file is not None:
        isolated.update(isolated_energies(read_frames(isolated_file)))
    kept = [i for i, a in enumerate(all_frames) if a.info.get("config_type") != "IsolatedAtom"
            and get_label(a, keys.energy, "energy") is not None]
    frames = [all_frames[i] for i in kept]
    if not frames:
        raise DataError("no configurations with an energy label", code="missing_energy")
    for i, a in enumerate(all_frames):
        v = get_label(a, keys.energy, "energy")
        if v is None:
            continue
        try:
            ok = bool(np.isfinite(float(v)))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise DataError(f"E0s cannot be fitted: configuration #{i} has a NaN, infinite or "
                            f"non-numeric energy label ({keys.energy!r}); fix or remove it "
                            "(mlipft validate lists every such configuration)",
                            code="non_finite")
    elements = sorted({s for a in frames for s in a.get_chemical_symbols()},
                      key=lambda s: atomic_numbers[s])
    ref = np.array([float(get_label(a, keys.energy, "energy")) for a in frames])
    model_e = found = model_elements = None
    cached = None
    if model is not None and workspace is not None and device is None \
            and isinstance(data, (str, Path)):
        cached = _cached_predictions(data, model, head=head, trusted=trusted,
                                     workspace=workspace, elements=elements, kept=kept,
                                     n_frames=len(all_frames), batch_size=batch_size,
                                     progress=progress, frames=all_frames)
    if cached is not None:
        model_e, found, model_elements = cached
    elif model is not None:
        from .evaluate import predict
        from .registry import check_head, load_model, model_e0s

        net = load_model(model, trusted=trusted, device=device or "cpu")
        head = check_head(net, head)
        model_elements = [chemical_symbols[int(z)] for z in net.atomic_numbers]
        _check_covered(elements, model_elements, data=data, frames=all_frames, model=model)
        model_e, _ = predict(net, frames, head=head, batch_size=batch_size, device=device,
                             progress=progress)
        found = model_e0s(net)[head]
    return E0Inputs(frames, keys, elements, ref, model_e, found, isolated, model_elements)


def _check_covered(elements: Sequence[str], model_elements: Sequence[str], *,
                   data: str | Path | None = None, frames: Sequence[Atoms] = (),
                   model: str | Path | None = None) -> None:
    """:class:`DataError` naming the elements of the data the model does not cover, the file
    (and first configuration) that holds them and the model."""
    missing = [e for e in elements if e not in model_elements]
    if not missing:
        return
    where = f"the training file {Path(data).name}" if isinstance(data, (str, Path)) \
        else "the training data"
    first = next((i for i, a in enumerate(frames)
                  if set(a.get_chemical_symbols()) & set(missing)), None)
    at = f" (first in configuration #{first})" if first is not None else ""
    who = f"the foundation model {_model_name(model)}" if model is not None \
        else "the foundation model"
    raise DataError(f"{where} holds {', '.join(missing)}{at}, which {who} does not cover "
                    f"(it covers {', '.join(model_elements)}): choose a model that covers "
                    "every element of the data, or leave those configurations out",
                    code="elements_not_covered")


def _model_name(model: str | Path) -> str:
    """A model as the user named it: a registry name, else the file's name."""
    text = str(model)
    return Path(text).name if ("/" in text or text.endswith(".model")) else text


def _model_head(model: str | Path, head: str | None, *, trusted: bool,
                workspace: Workspace):
    """(inspection, head) of a model from the workspace's inspection cache; the head is
    checked as :func:`~mlipft_core.registry.check_head` does on a loaded model."""
    from types import SimpleNamespace

    from .registry import check_head, inspect_cached

    info = inspect_cached(model, workspace=workspace, trusted=trusted)
    return info, check_head(SimpleNamespace(heads=info.heads), head)


def _cached_predictions(data: str | Path, model: str | Path, *, head: str | None,
                        trusted: bool, workspace: Workspace, elements: Sequence[str],
                        kept: Sequence[int], n_frames: int, batch_size: int | None,
                        progress, frames: Sequence[Atoms] = ()
                        ) -> tuple[np.ndarray, dict[str, float], list[str]] | None:
    """The foundation model's energies of the configurations ``kept`` (indices into the
    file), its E0s and elements, through the workspace's caches; ``None`` when the cached
    evaluation refuses the file (e.g. overlapping atoms), which is then predicted directly."""
    from .evaluate import evaluate_cached, prediction_cache_file
    from .registry import model_path

    info, head = _model_head(model, head, trusted=trusted, workspace=workspace)
    _check_covered(elements, info.elements, data=data, frames=frames, model=model)
    energies = None
    cache = prediction_cache_file(model_path(model, trusted=trusted), data, head, workspace)
    try:  # a hit: the energies alone (evaluate_cached would read the file once more)
        with np.load(cache, allow_pickle=False) as z:
            energies = np.asarray(z["pred_energy"], float)
    except (OSError, KeyError, ValueError):
        try:
            energies = np.asarray(evaluate_cached(
                model, data, head=head, workspace=workspace, trusted=trusted,
                batch_size=batch_size, progress=progress).pred_energy, float)
        except DataError:
            return None
    if len(energies) != n_frames:
        return None  # the file changed since it was read: predict what was read
    return energies[list(kept)], dict(info.e0s[head]), list(info.elements)


def cached_inputs(data: str | Path, model: str | Path, *, head: str | None = None,
                  trusted: bool = False, isolated_file: str | Path | None = None,
                  workspace: Workspace) -> E0Inputs | None:
    """:func:`prepare` when the foundation model's predictions on ``data`` are already in
    the workspace's cache (no model time), else ``None``: what a page shows on opening."""
    from .evaluate import prediction_cache_file
    from .registry import model_path

    if head is None:  # the first head (a page that shows a head passes it: no inspection)
        _, head = _model_head(model, head, trusted=trusted, workspace=workspace)
    if not prediction_cache_file(model_path(model, trusted=trusted), data, head,
                                 workspace).is_file():
        return None
    return prepare(data, model, head=head, trusted=trusted, isolated_file=isolated_file,
                   workspace=workspace)


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
        if abs(np.mean(before)) > LEVEL_MISMATCH_EV_PER_ATOM and method == "foundation":
            warnings.append(f"The data and the model differ by {np.mean(before):+.3f} eV/atom "
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


@dataclass
class Verdict:
    """The method the data supports best, how sure that is, and why."""

    best: str | None
    level: str          # "success" | "warning" | "info"
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess(results: Mapping[str, E0Result]) -> Verdict:
    """:func:`verdict` with a level: a success only when the best method is anchored.

    A rank-deficient fit without isolated-atom energies is a warning, whatever its residual:
    it fits this composition family and is arbitrary outside it.
    """
    best, notes = verdict(results)
    if best is None:
        return Verdict(None, "info", notes)
    r = results[best]
    if not r.anchored:
        return Verdict(best, "warning", notes)
    return Verdict(best, "success" if best == "estimated" else "info", notes)


def verdict(results: Mapping[str, E0Result]) -> tuple[str | None, list[str]]:
    """Which method the data supports, and why, in plain language."""
    notes: list[str] = []
    scored = {m: r.offset_rmse_after_mev_per_atom for m, r in results.items()
              if r.offset_rmse_after_mev_per_atom is not None}
    if not scored:
        return None, ["Choose a foundation model to compare methods on the data."]
    best = min(scored, key=scored.get)
    f = results.get("foundation")
    if f is not None and f.offset_before is not None:
        mean = float(np.mean(f.offset_before))
        if abs(mean) > LEVEL_MISMATCH_EV_PER_ATOM:
            notes.append(f"The reference data and the foundation model disagree by "
                         f"{format_energy_per_atom(mean)} on average: different levels of theory "
                         "(or a different energy zero). The foundation E0s are wrong for "
                         "this data.")
        else:
            notes.append("The data and the foundation model agree on absolute energies to "
                         f"{abs(mean) * 1000:.0f} meV/atom: the foundation E0s are usable.")
    est = results.get("estimated")
    if best != "estimated" and est is not None and \
            scored.get("estimated", np.inf) <= scored[best] * 1.05 + 1.0:
        best = "estimated"  # as good as the best, and keeps the model's energy decomposition
    notes.append(f"'{best}' leaves the smallest offset: "
                 f"{scored[best]:.1f} meV/atom RMSE after the E0s.")
    if best == "estimated":
        notes.append("Model-aware re-estimation keeps the foundation model's split of energy "
                     "into E0s and interaction energy; the study behind this workbench found "
                     "it essential.")
    r = results[best]
    if r.diagnostics is not None and r.diagnostics.rank_deficient:
        if r.anchor == ANCHOR_ISOLATED:
            notes.append(f"The data cannot separate the E0s of "
                         f"{', '.join(r.diagnostics.undetermined)} "
                         f"({r.diagnostics.reason}); "
                         "the undetermined part comes from the isolated-atom energies of the "
                         "reference method, so the E0s stay physical outside this family.")
        else:
            notes.append(_unanchored_warning(r.diagnostics, r.anchor or ANCHOR_NONE, []))
    return best, notes


# ----------------------------------------------------------------------------- saving
def save_choice(workspace: Workspace, result: E0Result, *, model: str | None, head: str | None,
                data: str | None) -> dict[str, Any]:
    """Save an E0 choice in the workspace (``e0/<method>-<hash>.json`` + a mace JSON file)."""
    import hashlib

    payload = {"method": result.method, "e0": result.e0, "model": model, "head": head,
               "data": data, "mace_argument": result.mace_argument(),
               "offset_rmse_after_mev_per_atom": result.offset_rmse_after_mev_per_atom}
    cid = result.method + "-" + hashlib.sha256(
        json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    folder = workspace.root / "e0"
    mace_json = folder / f"{cid}.mace.json"
    atomic_write_json(mace_json, {str(z): v for z, v in result.e0_by_z.items()})
    payload.update(id=cid, mace_json=str(mace_json))
    set_aside_if_damaged(folder / f"{cid}.json")
    atomic_write_json(folder / f"{cid}.json", payload)
    workspace.set(e0_choice=cid)
    return payload


#: a saved E0 choice's id: ``<method>-<hex>`` (:func:`save_choice`)
_CHOICE_ID = re.compile(r"^(%s)-[0-9a-f]{6,64}$" % "|".join(METHODS))


def is_choice_id(value: Any) -> bool:
    """Whether ``value`` reads as a saved E0 choice's id (``estimated-1464c5511a``)."""
    return isinstance(value, str) and bool(_CHOICE_ID.match(value.strip()))


def choice_file(workspace: Workspace, cid: str) -> Path:
    """Where the saved E0 choice ``cid`` is kept."""
    return workspace.root / "e0" / f"{cid}.json"


def _choice_problem(data: dict[str, Any]) -> str | None:
    """Why a parsed saved E0 choice cannot be used (completing "<file> ..."), or ``None``."""
    e0 = data.get("e0")
    if not isinstance(e0, dict) or not e0:
        return "holds no E0 values"
    for el, v in e0.items():
        if el not in atomic_numbers or el == "X":
            return f"names {el!r}, which is not an element"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            return f"gives {v!r} for {el}, not a finite number"
    for key in ("data", "model", "head", "mace_json", "method", "id"):
        if data.get(key) is not None and not isinstance(data[key], str):
            return f"has a {key!r} that is not text"
    return None


def read_choice(workspace: Workspace, cid: str | None = None
                ) -> tuple[dict[str, Any] | None, str | None]:
    """A saved E0 choice (the selected one when ``cid`` is None) and, when it cannot be
    used, why.

    Returns
    -------
    tuple
        ``(choice, None)``; ``(None, None)`` when none is selected or ``cid`` is no saved
        choice's id or there is no such file; ``(None, problem)`` when the file is damaged
        (not UTF-8, not JSON, not an object, values that are not numbers for elements).
    """
    cid = cid or workspace.get("e0_choice")
    if not is_choice_id(cid):
        return None, None
    path = choice_file(workspace, cid.strip())
    data, problem = read_json_checked(path, dict, "a saved E0 choice")
    if problem is None and data is not None:
        why = _choice_problem(data)
        problem = None if why is None else f"{path.name} {why}"
    return (None, problem) if problem is not None else (data, None)


def choice_problem(workspace: Workspace, cid: str | None = None) -> str | None:
    """A one-line message when the saved E0 choice (the selected one when ``cid`` is None)
    is damaged, else ``None``: what a page shows."""
    cid = cid or workspace.get("e0_choice")
    problem = read_choice(workspace, cid)[1]
    if problem is None:
        return None
    return damaged_notice(choice_file(workspace, str(cid).strip()), problem,
                          "runs use the estimated E0s until an E0 choice is saved again",
                          rewritten=False)


def load_choice(workspace: Workspace, cid: str | None = None) -> dict[str, Any] | None:
    """A saved E0 choice (the selected one when ``cid`` is None).

    A damaged selected choice counts as none (runs use the default E0s) and is said
    (:func:`~mlipft_core.workspace.note`; :func:`choice_problem` for a page). A damaged
    choice named by ``cid`` raises :class:`E0Error` saying what is wrong with it: the caller
    asked for exactly that choice.
    """
    data, problem = read_choice(workspace, cid)
    if problem is None:
        return data
    if cid is not None:
        path = choice_file(workspace, cid.strip())
        raise E0Error(f"the saved E0 choice {cid.strip()} cannot be used: {path}"
                      f"{problem.removeprefix(path.name)}; fit and save the E0s again (E0s "
                      "page), or give another E0 method", code="damaged_e0_choice")
    note(choice_problem(workspace))
    return None


def series_energies(model: str | Path, frames: Sequence[Atoms] | str | Path,
                    results: Mapping[str, E0Result], *, head: str | None = None,
                    trusted: bool = False, keys: LabelKeys | None = None,
                    workspace: Workspace | None = None) -> dict[str, np.ndarray]:
    """Total energies along a series of structures (e.g. a reaction-path scan).

    Returns ``reference`` (labels, NaN where missing) and, for every method, the foundation
    model's prediction with that method's E0s in place of its own. ``frames`` may be an
    extxyz file; with a ``workspace`` too, the predictions come from the workspace's cache.
    """
    from .evaluate import predict
    from .registry import load_model

    path = frames if isinstance(frames, (str, Path)) else None
    frames = read_frames(path) if path is not None else list(frames)
    keys = keys or detect_keys(frames)
    if path is not None and workspace is not None:
        from .evaluate import evaluate_cached

        pred = np.asarray(evaluate_cached(model, path, head=head, workspace=workspace,
                                          trusted=trusted).pred_energy, float)
    else:
        net = load_model(model, trusted=trusted)
        pred, _ = predict(net, frames, head=head)
    out = {"reference": np.array([np.nan if (v := get_label(a, keys.energy, "energy")) is None
                                  else float(v) for a in frames])}
    for name, r in results.items():
        if r.foundation_e0 is None:
            continue
        elements = list(r.e0)
        A = composition_matrix(frames, elements)
        delta = np.array([r.e0[e] - r.foundation_e0[e] for e in elements])
        out[name] = pred + A @ delta
    return out
