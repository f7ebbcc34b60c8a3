"""Learning-rate pilot: a short log-spaced sweep on the real data, and the best value.

The study behind the workbench found per-strategy hyperparameters, above all the learning
rate, to matter more than the choice of strategy. A pilot runs one strategy at several
learning rates for a fraction of the epochs, through the ordinary executor (this machine or
SLURM), and reads the validation error of each run. The best learning rate is the one with the
lowest validation force RMSE of the target head at the epoch mace keeps (its lowest
validation loss).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import jobs
from .errors import MlipftError
from .jobs.records import FINAL
from .strategies import RunSpec, get_strategy
from .workspace import Workspace

#: Learning rates a grid is drawn from: 1 and 3 per decade (about half a decade apart).
LADDER = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def default_grid(lr: float) -> list[float]:
    """Five log-spaced learning rates around ``lr``: three below it, one above (learning
    rates that are too high fail fast; too low ones only look slow)."""
    i = min(range(len(LADDER)), key=lambda k: abs(math.log(LADDER[k] / float(lr))))
    i = min(max(i, 3), len(LADDER) - 2)
    return list(LADDER[i - 3:i + 2])


#: The default pilot length as a fraction of the run's epochs (at least MIN_EPOCHS, at most
#: the run's own length).
EPOCH_FRACTION = 0.25
MIN_EPOCHS = 2


class TuneError(MlipftError):
    """A pilot that cannot be set up or read (too few learning rates, no finished run)."""

    code = "tune_error"


@dataclass
class PilotPoint:
    """One learning rate of a pilot and what its run reached."""

    lr: float
    run_id: str
    status: str
    valid_forces_rmse_mev_per_a: float | None = None
    valid_energy_rmse_mev_per_atom: float | None = None
    epoch: int | None = None


@dataclass
class TuneResult:
    """A pilot's outcome: every point and the best learning rate (``None`` until one run
    has finished with a finite validation error)."""

    strategy: str
    sweep: str
    epochs: int
    best_lr: float | None
    results: list[PilotPoint] = field(default_factory=list)
    finished: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def record(self) -> dict[str, Any]:
        """What a run launched at the tuned value records about it."""
        return {"pilot_sweep": self.sweep, "best_lr": self.best_lr, "epochs": self.epochs,
                "grid": [p.lr for p in self.results],
                "valid_forces_rmse_mev_per_a": {f"{p.lr:g}": p.valid_forces_rmse_mev_per_a
                                                for p in self.results}}


def count_of(n: int, unit: str, units: str | None = None) -> str:
    """``n`` with its unit in the right number: ``"1 epoch"``, ``"2 epochs"``
    (``units``: the plural where it is not ``unit + "s"``)."""
    return f"{n:,} {unit if n == 1 else units or unit + 's'}"


def run_epochs(spec: RunSpec) -> int:
    """The epochs of the run ``spec`` describes (its setting, or the strategy's default)."""
    return int(spec.settings.get("max_num_epochs")
               or get_strategy(spec.strategy).defaults["max_num_epochs"])


def pilot_epochs(spec: RunSpec) -> int:
    """The default pilot length: a quarter of the run's epochs, at least 2 (never more than
    the run itself)."""
    full = run_epochs(spec)
    return min(full, max(MIN_EPOCHS, int(round(full * EPOCH_FRACTION))))


def pilot_length(spec: RunSpec, epochs: int | None = None) -> str:
    """How long each pilot run of ``spec`` is, against the run it tunes: ``"5 of 20 epochs
    each"`` or ``"2 epochs each, the full length of a 2-epoch run"`` (``epochs``: the pilot's
    length when not the default, :func:`pilot_epochs`)."""
    full = run_epochs(spec)
    n = pilot_epochs(spec) if epochs is None else int(epochs)
    if n < full:
        return f"{n} of {count_of(full, 'epoch')} each"
    return f"{count_of(n, 'epoch')} each, " + (f"the full length of a {full}-epoch run"
                                               if n == full else
                                               f"longer than the {full}-epoch run")


def pilot_grid(spec: RunSpec, lrs: Sequence[float] | None = None) -> list[float]:
    """The learning rates a pilot of ``spec`` runs, in order: ``lrs``, or
    :func:`default_grid` around the run's own learning rate (the strategy's default)."""
    return sorted({float(x) for x in (lrs or default_grid(base_lr(spec)))})


def base_lr(spec: RunSpec) -> float:
    """The learning rate ``spec`` runs at (its setting, or the strategy's default)."""
    return float(spec.settings.get("lr") or get_strategy(spec.strategy).defaults["lr"])


def describe_pilot(spec: RunSpec) -> str:
    """What a default pilot of ``spec`` runs, in words: ``"5 runs, at 1e-05, 3e-05, 0.0001,
    0.0003 and 0.001 (3 below the run's 0.0003, 1 above), 5 of 20 epochs each"``."""
    grid, base = pilot_grid(spec), base_lr(spec)
    below, above = sum(x < base for x in grid), sum(x > base for x in grid)
    values = ", ".join(f"{x:g}" for x in grid[:-1]) + f" and {grid[-1]:g}"
    return (f"{count_of(len(grid), 'run')}, at {values} ({below} below the run's {base:g}, "
            f"{above} above), {pilot_length(spec)}")


def pilot_specs(spec: RunSpec, lrs: Sequence[float] | None = None,
                epochs: int | None = None) -> list[RunSpec]:
    """The runs of a pilot: ``spec`` at every learning rate of the grid, for ``epochs``."""
    grid = pilot_grid(spec, lrs)
    if len(grid) < 2:
        raise TuneError("a learning-rate pilot needs at least two learning rates")
    bad = [x for x in grid if not (math.isfinite(x) and x > 0)]
    if bad:
        raise TuneError(f"learning rates must be positive numbers, not {bad[0]!r}")
    n = int(epochs if epochs is not None else pilot_epochs(spec))
    if n < 1:
        raise TuneError("a pilot needs at least one epoch")
    return [replace(spec, name=f"tune-{spec.strategy}-lr{lr:g}".replace(".", "p"), tuning=None,
                    settings={**spec.settings, "lr": lr, "max_num_epochs": n})
            for lr in grid]


def submit_pilot(spec: RunSpec, lrs: Sequence[float] | None = None, epochs: int | None = None,
                 *, workspace: Workspace | None = None, executor: str | None = None,
                 slurm: dict[str, Any] | None = None) -> str:
    """Queue a pilot as one sweep (one job array on SLURM); returns the sweep name."""
    specs = pilot_specs(spec, lrs, epochs)
    sweep = time.strftime(f"tune-{spec.strategy}-%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    jobs.submit_sweep(specs, workspace=workspace, executor=executor, slurm=slurm, sweep=sweep)
    return sweep


def _target_head(valid: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    heads = [h for h in valid if h != "pt_head"] or list(valid)
    return valid[heads[0]] if heads else []


def _finite(v: Any) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def read_pilot(sweep: str, workspace: Workspace | None = None,
               records: Sequence[Any] | None = None) -> TuneResult:
    """The state of a pilot from its runs (running ones count with their latest epoch).

    ``records``: the workspace's runs as :func:`~mlipft_core.jobs.list_runs` returns them,
    when the caller has listed them already (one listing for several pilots)."""
    if records is None:
        records = jobs.list_runs(workspace)
    runs = [r for r in records if r.sweep == sweep and r.readable]
    if not runs:
        raise TuneError(f"no pilot called {sweep!r} in this workspace")
    points = []
    for rec in runs:
        settings = (rec.spec or {}).get("settings", {})
        evals = _target_head(jobs.progress(rec, workspace).valid)
        # mace's first validation (epoch None) is the untrained model: never a candidate
        evals = [e for e in evals
                 if e.get("epoch") is not None and _finite(e.get("loss")) is not None]
        kept = min(evals, key=lambda e: float(e["loss"])) if evals else {}
        points.append(PilotPoint(float(settings.get("lr")), rec.id, rec.status,
                                 _finite(kept.get("rmse_f_mev_per_a")),
                                 _finite(kept.get("rmse_e_per_atom_mev")), kept.get("epoch")))
    points.sort(key=lambda p: p.lr)
    finished = all(r.status in FINAL for r in runs)
    scored = [p for p in points if p.status == "done" and p.valid_forces_rmse_mev_per_a is not None]
    best = min(scored, key=lambda p: (p.valid_forces_rmse_mev_per_a,
                                      p.valid_energy_rmse_mev_per_atom or 0.0), default=None)
    strategy = runs[0].strategy
    epochs = int((runs[0].spec or {}).get("settings", {}).get("max_num_epochs") or 0)
    return TuneResult(strategy, sweep, epochs, None if best is None else best.lr, points,
                      finished)


def tune(spec: RunSpec, lrs: Sequence[float] | None = None, epochs: int | None = None, *,
         workspace: Workspace | None = None, executor: str | None = None,
         slurm: dict[str, Any] | None = None, timeout: float | None = None,
         progress: Callable[[TuneResult], None] | None = None, poll: float = 2.0
         ) -> TuneResult:
    """Run a pilot to the end and return its result (``best_lr`` is the best value run)."""
    ws = workspace or Workspace()
    sweep = submit_pilot(spec, lrs, epochs, workspace=ws, executor=executor, slurm=slurm)
    deadline = None if timeout is None else time.time() + timeout
    while True:
        jobs.keep_sweeps_going([sweep], ws)
        res = read_pilot(sweep, ws)
        if progress:
            progress(res)
        if res.finished:
            break
        if deadline is not None and time.time() > deadline:
            raise TuneError(f"the pilot {sweep} did not finish within {timeout:.0f} s; its "
                            "runs go on (mlipft runs)")
        time.sleep(poll)
    if res.best_lr is None:
        failed = [p for p in res.results if p.status != "done"]
        raise TuneError(f"no run of the pilot {sweep} finished with a validation error "
                        f"({len(failed)} of {len(res.results)} failed or were cancelled)")
    return res
