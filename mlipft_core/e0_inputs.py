"""A training set read once and evaluated once with the foundation model, for every E0 method.

:func:`prepare` gives the :class:`~mlipft_core.e0_fit.E0Inputs` that
:func:`~mlipft_core.e0_fit.compute` fits, the isolated atoms of the data (what mace takes
for one: :func:`is_isolated_atom`) set aside with their energies. With a workspace the
foundation model's predictions come from its prediction cache, so a second preparation
spends no model time. :func:`series_energies` shows what each method's E0s do to the model's
energies along a scan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from .data import LabelKeys, detect_keys, get_label, is_isolated_atom, read_frames
from .e0_fit import E0Inputs, E0Result, composition_matrix
from .errors import DataError
from .evaluate import evaluate_cached, predict, prediction_cache_file
from .registry import check_head, inspect_cached, load_model, model_e0s, model_path
from .workspace import Workspace


def isolated_mask(frames: Sequence[Atoms]) -> list[bool]:
    """Which configurations of ``frames`` are isolated atoms
    (:func:`mlipft_core.data.is_isolated_atom`): their energy is that element's E0, not a
    configuration to train or fit on."""
    return [is_isolated_atom(a) for a in frames]


def isolated_energies(frames: Sequence[Atoms], keys: LabelKeys | None = None) -> dict[str, float]:
    """Energies of the isolated atoms (:func:`isolated_mask`) among ``frames``."""
    keys = keys or detect_keys(frames)
    out = {}
    for a, iso in zip(frames, isolated_mask(frames)):
        if iso:
            e = get_label(a, keys.energy, "energy")
            if e is not None:
                out[a.get_chemical_symbols()[0]] = float(e)
    return out


def prepare(data: str | Path | Sequence[Atoms], model: str | Path | None = None, *,
            head: str | None = None, keys: LabelKeys | None = None, trusted: bool = False,
            isolated_file: str | Path | None = None, batch_size: int | None = None,
            device: str | None = None, progress=None,
            workspace: Workspace | None = None) -> E0Inputs:
    """Read the training data and evaluate the foundation model on it (batched).

    Isolated atoms (:func:`is_isolated_atom`) are set aside (mace would
    use them as E0s).

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
    kept = [i for i, (a, iso) in enumerate(zip(all_frames, isolated_mask(all_frames)))
            if not iso and get_label(a, keys.energy, "energy") is not None]
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


def model_head(model: str | Path, head: str | None, *, trusted: bool,
                workspace: Workspace):
    """(inspection, head) of a model from the workspace's inspection cache; the head is
    checked as :func:`~mlipft_core.registry.check_head` does on a loaded model."""
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
    info, head = model_head(model, head, trusted=trusted, workspace=workspace)
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
    if head is None:  # the first head (a page that shows a head passes it: no inspection)
        _, head = model_head(model, head, trusted=trusted, workspace=workspace)
    if not prediction_cache_file(model_path(model, trusted=trusted), data, head,
                                 workspace).is_file():
        return None
    return prepare(data, model, head=head, trusted=trusted, isolated_file=isolated_file,
                   workspace=workspace)


def series_energies(model: str | Path, frames: Sequence[Atoms] | str | Path,
                    results: Mapping[str, E0Result], *, head: str | None = None,
                    trusted: bool = False, keys: LabelKeys | None = None,
                    workspace: Workspace | None = None) -> dict[str, np.ndarray]:
    """Total energies along a series of structures (e.g. a reaction-path scan).

    Returns ``reference`` (labels, NaN where missing) and, for every method, the foundation
    model's prediction with that method's E0s in place of its own. ``frames`` may be an
    extxyz file; with a ``workspace`` too, the predictions come from the workspace's cache.
    """
    path = frames if isinstance(frames, (str, Path)) else None
    frames = read_frames(path) if path is not None else list(frames)
    keys = keys or detect_keys(frames)
    if path is not None and workspace is not None:
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
