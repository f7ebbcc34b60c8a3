"""Live progress of a run from mace's JSON-lines results file.

``mace_run_train`` appends to ``results/{name}_run-{seed}_train.txt`` one JSON object per
optimisation step (``mode: opt``) and one per evaluation and head (``mode: eval``, with
``rmse_e_per_atom`` in eV and ``rmse_f`` in eV/Å; the initial evaluation has ``epoch: null``).
mace writes a diverged loss as ``NaN`` or ``Infinity``, which :func:`read_progress` and
:class:`LossWatch` report as :attr:`Progress.non_finite`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Progress:
    """Where a run stands: epochs done, losses, validation errors per head."""

    epoch: int | None = None          # last completed epoch (0-based), None before the first
    max_epochs: int | None = None
    train_loss: list[tuple[int, float]] = field(default_factory=list)   # (epoch, mean loss)
    valid: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # head -> evals
    #: the first loss that became NaN or infinite, in words (the run diverged), or None
    non_finite: str | None = None

    @property
    def fraction(self) -> float:
        if not self.max_epochs or self.epoch is None:
            return 0.0
        return min(1.0, (self.epoch + 1) / self.max_epochs)

    def series(self, metric: str = "rmse_f_mev_per_a") -> dict[str, list[tuple[int, float]]]:
        """Per head, (epoch, value) of a validation metric; the initial evaluation left out."""
        out = {}
        for head, evals in self.valid.items():
            pts = [(e["epoch"], e[metric]) for e in evals
                   if e["epoch"] is not None and e[metric] is not None]
            if pts:
                out[head] = pts
        return out

    def last_valid(self) -> dict[str, dict[str, Any]]:
        return {h: v[-1] for h, v in self.valid.items() if v}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fraction"] = self.fraction
        return d


def results_files(work_dir: Path) -> list[Path]:
    return sorted((Path(work_dir) / "results").glob("*_train.txt"))


def _number(v: Any) -> float | None:
    """A logged value as a float (NaN and infinities kept), or ``None`` when absent."""
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def non_finite_in(rec: dict[str, Any]) -> str | None:
    """What became NaN or infinite in one line of mace's results file, in words, or
    ``None``: e.g. ``"the training loss became NaN at epoch 0"``.

    Only losses count: an error metric can be NaN for a head without such labels (no
    forces, say) in a run that is fine, while a non-finite loss means the weights are lost.
    """
    mode = rec.get("mode")
    if mode not in ("opt", "eval"):
        return None
    v = _number(rec.get("loss"))
    if v is None or math.isfinite(v):
        return None
    ep = rec.get("epoch")
    what = "training loss" if mode == "opt" else "validation loss" + (
        f" (head {rec['head']})" if rec.get("head") else "")
    when = f"at epoch {ep}" if ep is not None else "in the evaluation before training"
    return f"the {what} became {'NaN' if math.isnan(v) else v} {when}"


def read_progress(work_dir: str | Path, max_epochs: int | None = None) -> Progress:
    """Parse every results file of a run folder (tolerates a half-written last line)."""
    prog = Progress(max_epochs=max_epochs)
    losses: dict[int, list[float]] = {}
    for path in results_files(Path(work_dir)):
        for line in path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict):
                continue
            if prog.non_finite is None:
                prog.non_finite = non_finite_in(rec)
            mode = rec.get("mode")
            ep = rec.get("epoch")
            if mode == "opt" and isinstance(ep, int):
                loss = _number(rec.get("loss"))
                losses.setdefault(ep, []).append(float("nan") if loss is None else loss)
            elif mode == "eval":
                head = str(rec.get("head") or "Default")
                entry = {"epoch": ep, "loss": rec.get("loss"),
                         "rmse_e_per_atom_mev": _mev(rec.get("rmse_e_per_atom")),
                         "rmse_f_mev_per_a": _mev(rec.get("rmse_f"))}
                prog.valid.setdefault(head, []).append(entry)
                if isinstance(ep, int):
                    prog.epoch = max(prog.epoch if prog.epoch is not None else -1, ep)
    prog.train_loss = [(ep, sum(v) / len(v)) for ep, v in sorted(losses.items())]
    return prog


class LossWatch:
    """Follows the results files of a running run as they grow (only what is new is read)
    and tells when a loss became NaN or infinite."""

    def __init__(self, work_dir: str | Path) -> None:
        self.work_dir = Path(work_dir)
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        self.found: str | None = None

    def poll(self) -> str | None:
        """Read what was appended since the last call; the first divergence, or ``None``."""
        if self.found is not None:
            return self.found
        for path in results_files(self.work_dir):
            try:
                with open(path, "rb") as fh:
                    fh.seek(self._offsets.get(path, 0))
                    data = fh.read()
            except OSError:
                continue
            self._offsets[path] = self._offsets.get(path, 0) + len(data)
            lines = (self._partial.pop(path, b"") + data).split(b"\n")
            if lines and lines[-1]:
                self._partial[path] = lines[-1]  # half-written: finished by the next read
            for line in lines[:-1]:
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if isinstance(rec, dict) and (msg := non_finite_in(rec)):
                    self.found = msg
                    return msg
        return None


def _mev(v: Any) -> float | None:
    n = _number(v)
    return None if n is None else n * 1000.0
