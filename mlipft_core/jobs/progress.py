"""Live progress of a run from mace's JSON-lines results file.

``mace_run_train`` appends to ``results/{name}_run-{seed}_train.txt`` one JSON object per
optimisation step (``mode: opt``) and one per evaluation and head (``mode: eval``, with
``rmse_e_per_atom`` in eV and ``rmse_f`` in eV/Å; the initial evaluation has ``epoch: null``).
"""

from __future__ import annotations

import json
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

    @property
    def fraction(self) -> float:
        if not self.max_epochs or self.epoch is None:
            return 0.0
        return min(1.0, (self.epoch + 1) / self.max_epochs)

    def series(self, metric: str = "rmse_f_mev_per_a") -> dict[str, list[tuple[int, float]]]:
        """Per head, (epoch, value) of a validation metric; the initial evaluation left out."""
        out = {}
        for head, evals in self.valid.items():
            pts = [(e["epoch"], e[metric]) for e in evals if e["epoch"] is not None]
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
            mode = rec.get("mode")
            ep = rec.get("epoch")
            if mode == "opt" and ep is not None:
                losses.setdefault(int(ep), []).append(float(rec.get("loss", float("nan"))))
            elif mode == "eval":
                head = str(rec.get("head") or "Default")
                entry = {"epoch": ep, "loss": rec.get("loss"),
                         "rmse_e_per_atom_mev": _mev(rec.get("rmse_e_per_atom")),
                         "rmse_f_mev_per_a": _mev(rec.get("rmse_f"))}
                prog.valid.setdefault(head, []).append(entry)
                if ep is not None:
                    prog.epoch = max(prog.epoch if prog.epoch is not None else -1, int(ep))
    prog.train_loss = [(ep, sum(v) / len(v)) for ep, v in sorted(losses.items())]
    return prog


def _mev(v: Any) -> float | None:
    try:
        return float(v) * 1000.0
    except (TypeError, ValueError):
        return None
