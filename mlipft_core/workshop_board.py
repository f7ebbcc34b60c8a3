"""The instructor's board of a workshop: every participant's runs, the figures each finished
run measured of itself, and the study's comparison read off them.

Re-exported by :mod:`mlipft_core.workshop`, the name to import.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .demo import demo_paths
from .errors import MlipftError
from .jobs import list_runs
from .jobs.records import RunStore, e0_method, run_facts
from .registry import list_models
from .strategies import STRATEGIES
from .workshop_room import Workshop, of_workspace
from .workspace import Workspace, atomic_write_json, read_json, strict_json


@dataclass
class BoardRun:
    participant: str
    run_id: str
    name: str
    strategy: str
    status: str
    executor: str
    foundation: str | None
    e0: str | None
    lr: float | None
    target_forces_rmse_mev_per_a: float | None = None
    target_energy_rmse_mev_per_atom: float | None = None
    forgetting_ratio: float | None = None
    head: str | None = None
    pilot: bool = False                # a learning-rate pilot's run (not in the comparison)
    facts: Any = field(default=None, repr=False, compare=False)  # jobs.records.RunFacts

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("facts", None)
        return d


def _foundation_name(path: str | None) -> str | None:
    if not path:
        return None
    p = Path(path)
    for spec in list_models():
        if spec.path and Path(spec.path).resolve() == p.resolve():
            return spec.name
    return "foundation with chosen E0s" if p.name == "foundation_e0s.model" else p.name


#: figures of a participant's finished run, measured by the run itself (see record_figures)
FIGURES = "figures.json"


def record_figures(ws: Workspace, run_id: str, model: str | Path) -> dict[str, Any] | None:
    """Measure, in the run's own process, what the instructor's board shows of a finished
    training run of a participant (``model``, the file it trained): its target error and
    forgetting ratio (:func:`mlipft_core.compare.model_figures`), kept in the run folder
    (``figures.json``).

    The run loads the models it trained from and produced, which its participant chose; the
    board only reads these numbers and never loads a participant's model. Outside a workshop
    nothing is measured (``None``). A measurement that fails is recorded with its reason.
    """
    # late: the model machinery (numpy, ase, the evaluation) is wanted only in the run's
    # process, and at the top it would weigh on every import of the workshop (``mlipft --help``)
    from .compare import model_figures
    from .defaults import pretrain_test_for

    found = of_workspace(ws)
    if found is None:
        return None
    shop = found[0]
    store = RunStore(ws)
    rec = store.read(run_id)
    if rec.kind != "train":
        return None
    demo = demo_paths()
    target = shop.target_test or demo["sn2_test"]
    foundation = (rec.spec or {}).get("foundation_model")
    # the workshop's own set, else the foundation model's forgetting set (an official model
    # with its replay set fetched), else the demo world's
    pretrain = shop.pretrain_test or pretrain_test_for(
        foundation, ((rec.spec or {}).get("settings") or {}).get("foundation_head"),
        demo=False) or demo["pretrain_test"]
    out: dict[str, Any] = {"target_test": str(target), "pretrain_test": str(pretrain)}
    try:
        model_figures(model, foundation, target, pretrain,
                      workspace=ws, out=out)
    except MlipftError as exc:
        out["problem"] = str(exc)
    atomic_write_json(store.folder(run_id) / FIGURES, strict_json(out))
    return out


def _finite_or_none(value: Any) -> float | None:
    """A recorded figure as a finite float, else ``None`` (recorded files are checked, not
    trusted: a string, a bool or a non-finite number is no figure)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _recorded_figures(folder: Path) -> dict[str, Any]:
    """A run's ``figures.json``, each figure a finite number or ``None``."""
    raw = read_json(folder / FIGURES, {})
    if not isinstance(raw, dict):
        return {}
    head = raw.get("head")
    return {"head": head if isinstance(head, str) else None,
            **{k: _finite_or_none(raw.get(k)) for k in (
                "target_forces_rmse_mev_per_a", "target_energy_rmse_mev_per_atom",
                "forgetting_ratio")}}


def board_runs(shop: Workshop, *, evaluate: bool = True) -> list[BoardRun]:
    """Every participant's runs; finished ones with the target error and forgetting ratio
    their run measured (:func:`record_figures`). No model is loaded here: a participant's
    model may be their own upload, which only they confirmed.

    ``evaluate=False`` leaves the figures out.
    """
    out: list[BoardRun] = []
    for p in shop.participants:
        ws = shop.workspace_of(p.name)
        for r in list_runs(ws):
            if r.kind != "train" or not r.readable:
                continue
            spec = r.spec or {}
            facts = run_facts(r)
            row = BoardRun(p.name, r.id, r.name, r.strategy, r.status, r.executor,
                           _foundation_name(spec.get("foundation_model")),
                           e0_method(spec.get("e0s")), (spec.get("settings") or {}).get("lr"),
                           pilot=facts.pilot, facts=facts)
            if evaluate and r.status == "done":
                fig = _recorded_figures(RunStore(ws).folder(r.id))
                row.head = fig.get("head")
                row.target_forces_rmse_mev_per_a = fig.get("target_forces_rmse_mev_per_a")
                row.target_energy_rmse_mev_per_atom = fig.get("target_energy_rmse_mev_per_atom")
                row.forgetting_ratio = fig.get("forgetting_ratio")
            out.append(row)
    return out


@dataclass
class BoardEntry:
    """One line of the study's comparison table, gathered over participants."""

    strategy: str
    foundation: str | None
    e0: str | None
    n_runs: int
    n_participants: int
    target_median: float | None
    target_q1: float | None
    target_q3: float | None
    forgetting_median: float | None
    forgetting_q1: float | None
    forgetting_q3: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _quartiles(values: list[float]) -> tuple[float | None, float | None, float | None]:
    v = sorted(x for x in values if x is not None and math.isfinite(x))
    if not v:
        return None, None, None
    if len(v) == 1:
        return v[0], v[0], v[0]
    q = statistics.quantiles(v, n=4, method="inclusive")
    return statistics.median(v), q[0], q[2]


def board_table(runs: list[BoardRun]) -> list[BoardEntry]:
    """Median and interquartile range of target error and forgetting ratio per strategy,
    foundation model and E0 method, over every participant's finished runs (learning-rate
    pilots left out: they are short runs at learning rates chosen to be too low or high)."""
    groups: dict[tuple, list[BoardRun]] = {}
    for r in runs:
        if r.status == "done" and not r.pilot:
            groups.setdefault((r.strategy, r.foundation, r.e0), []).append(r)
    out = []
    for (strategy, fm, e0), rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        t = _quartiles([r.target_forces_rmse_mev_per_a for r in rs])
        f = _quartiles([r.forgetting_ratio for r in rs])
        out.append(BoardEntry(strategy, fm, e0, len(rs), len({r.participant for r in rs}),
                              t[0], t[1], t[2], f[0], f[1], f[2]))
    return out


def _wins(by_participant: dict[str, list[BoardRun]], key: str) -> tuple[dict[str, int], int]:
    """Per strategy, for how many participants (who ran two or more strategies) it had the
    lowest ``key``; and how many participants compared."""
    wins: dict[str, int] = {}
    compared = 0
    for rs in by_participant.values():
        cand = [r for r in rs if getattr(r, key) is not None]
        if len({r.strategy for r in cand}) < 2:
            continue
        compared += 1
        best = min(cand, key=lambda r: getattr(r, key))
        wins[best.strategy] = wins.get(best.strategy, 0) + 1
    return wins, compared


def findings(runs: list[BoardRun]) -> list[str]:
    """The study's findings as read off the participants' runs, in plain words."""
    by_p: dict[str, list[BoardRun]] = {}
    for r in runs:
        if r.status == "done" and not r.pilot:
            by_p.setdefault(r.participant, []).append(r)
    out = []
    for key, what in (("forgetting_ratio", "kept pretraining accuracy best (lowest forgetting "
                                           "ratio)"),
                      ("target_forces_rmse_mev_per_a", "reached the lowest target force error")):
        wins, compared = _wins(by_p, key)
        if compared:
            top = max(wins, key=wins.get)
            title = STRATEGIES[top].title if top in STRATEGIES else top
            out.append(f"{title} {what} for {wins[top]} of {compared} participants who "
                       "compared strategies.")
    return out
