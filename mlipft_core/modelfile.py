"""Surgery on MACE model files: a copy of a model with some of its buffers changed.

This is the one place that unpickles a model to change it and saves it again; loading a
model to use it is :func:`mlipft_core.registry.load_model`. Unpickling traces code with
``torch.fx`` for the whole process, so the work is done inside the process's model turn
(:func:`mlipft_core.modelwork.model_turn`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ase.data import atomic_numbers

from .errors import WorkspaceError, model_write_message
from .modelwork import model_turn

__all__ = ["foundation_with_e0s"]


def foundation_with_e0s(model_path: str | Path, e0: Mapping[str, float], out: Path,
                        head: str | None = None) -> Path:
    """Copy of the foundation model whose head ``head`` (default: the first) carries the
    chosen E0s.

    mace_run_train 0.3.16 copies every foundation buffer of matching shape into the new
    model; with all foundation elements kept, that includes the E0 table, so E0s given with
    ``--E0s`` would be silently replaced by the foundation's. Writing the chosen E0s into the
    foundation copy (and passing ``--E0s foundation``) makes them stick.

    Parameters
    ----------
    model_path
        The foundation model file (trusted: it is unpickled).
    e0
        Element -> E0 in eV; elements the model does not cover are left out.
    out
        Where the copy is written.
    head
        The head whose E0s are set (a multi-head model fine-tuned from that head).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    WorkspaceError
        The copy cannot be written (e.g. a full disk).
    """
    import mace  # noqa: F401  (heavy: the model's classes, only when a copy is made)
    import torch

    with model_turn():  # unpickling traces code with torch.fx, process-wide
        net = torch.load(model_path, map_location="cpu", weights_only=False)
        table = net.atomic_energies_fn.atomic_energies
        heads = list(getattr(net, "heads", None) or [])
        row = heads.index(head) if head in heads else 0
        zs = [int(z) for z in net.atomic_numbers]
        with torch.no_grad():
            for sym, value in e0.items():
                z = atomic_numbers[sym]
                if z in zs:
                    if table.ndim == 1:
                        table[zs.index(z)] = value
                    else:
                        table[row, zs.index(z)] = value
        try:
            torch.save(net, out)
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as RuntimeError
            raise WorkspaceError(model_write_message(out.parent)) from exc
    return out
