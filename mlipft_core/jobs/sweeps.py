"""Launches of several runs: sweeps over strategies, learning rates and seeds, and size sweeps.

A launch is planned (:func:`expand_sweep` gives a :class:`SweepPlan`, from the settings a
page or the command line gathered; :func:`parse_list` reads their lists of numbers), checked
whole before any of its runs is written (:func:`check_launch`) and queued together
(:func:`submit_sweep`, :func:`submit_size_sweep`, :func:`submit_plan`): a bad run refuses
the launch, and none of it is queued.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..strategies import RunSpec, StrategyError, build_config, get_strategy
from ..workspace import Workspace
from .policy import SubmissionPolicy, check_submission
from .prepare import absolute_spec, check_batch_fits, preflight
from .queue import launch, prepare_all
from .records import RunRecord, check_name
from .settings import executor_choice
from .slurm import SlurmOptions

__all__ = ["SweepPlan", "check_launch", "expand_sweep", "parse_list", "submit_plan",
           "submit_size_sweep", "submit_sweep"]


@dataclass
class SweepPlan:
    """What a launch will queue: one :class:`RunSpec` per strategy x learning rate x seed."""

    specs: list[RunSpec]
    sizes: list[int]
    n_strategies: int = 0
    n_lrs: int = 1
    n_seeds: int = 1

    def describe(self) -> str:
        """E.g. ``2 strategies × 3 learning rates × 1 seed``."""
        def n(k: int, one: str, many: str) -> str:
            return f"{k} {one if k == 1 else many}"

        parts = [n(self.n_strategies, "strategy", "strategies"),
                 n(self.n_lrs, "learning rate", "learning rates") if self.n_lrs > 1 else
                 "its own learning rate" if self.n_strategies == 1 else
                 "their own learning rates",
                 n(self.n_seeds, "seed", "seeds")]
        if self.sizes:
            parts.append(n(len(self.sizes), "training-set size", "training-set sizes"))
        return " × ".join(parts)

    @property
    def n_runs(self) -> int:
        return len(self.specs) * max(1, len(self.sizes))


def parse_list(text: str | Iterable[Any] | None, kind: type, what: str) -> list[Any]:
    """Comma-separated numbers (``"1e-3, 3e-3"``) as a list of ``kind``; a clear error."""
    if text is None:
        return []
    items = [x for x in (text.split(",") if isinstance(text, str) else text)
             if str(x).strip()]
    out = []
    for x in items:
        t = str(x).strip()
        shown = t if len(t) <= 40 else t[:37] + "..."
        try:
            v = int(t) if kind is int else kind(t)
        except ValueError:
            try:
                f = float(t)
            except ValueError:
                raise StrategyError(f"{what}: {shown!r} is not a number") from None
            if not math.isfinite(f):
                raise StrategyError(f"{what}: {shown!r} is not a finite number") from None
            if kind is int and not f.is_integer():
                raise StrategyError(f"{what}: {shown!r} is not a whole number") from None
            v = kind(f)
        if kind is float and not math.isfinite(v):
            raise StrategyError(f"{what}: {shown!r} is not a finite number")
        out.append(v)
    return out


def expand_sweep(strategies: dict[str, dict[str, Any]], *, foundation_model: str,
                 train_file: str, valid_file: str | None = None, test_file: str | None = None,
                 e0s: str = "estimated", replay_file: str | None = None,
                 isolated_file: str | None = None, tuning: dict[str, dict] | None = None,
                 common: dict[str, Any] | None = None,
                 lrs: str | Iterable[float] | None = (), seeds: str | Iterable[int] | None = (),
                 sizes: str | Iterable[int] | None = (), name_prefix: str = "") -> SweepPlan:
    """The runs of a launch: every strategy (with its own settings, e.g. ``lr``,
    ``lora_rank``) x every learning rate in ``lrs`` (empty: the strategy's own) x every seed
    in ``seeds`` (empty: the common seed), each trained at every size in ``sizes`` (empty:
    the whole training set). ``lrs``, ``seeds`` and ``sizes`` are lists or comma-separated
    text (:func:`parse_list`: a value that is not a number is refused with its option's
    name). Names say what varies: ``naive-lr0p003-s1``."""
    common = dict(common or {})
    lr_list = parse_list(lrs, float, "--lrs") or [None]
    seed_list = parse_list(seeds, int, "--seeds") or [common.get("seed", 0)]
    sizes = parse_list(sizes, int, "--sizes")
    specs = []
    for name, own in strategies.items():
        strat = get_strategy(name)
        for lr in lr_list:
            for sd in seed_list:
                settings = {**common, **{k: v for k, v in own.items() if v is not None}}
                settings["seed"] = int(sd)
                if lr is not None:
                    settings["lr"] = float(lr)
                if not strat.lora:
                    settings.pop("lora_rank", None), settings.pop("lora_alpha", None)
                if not strat.multihead:
                    settings.pop("num_samples_pt", None), settings.pop("subselect_pt", None)
                tag = name_prefix + name + (f"-lr{lr:g}" if lr is not None and len(lr_list) > 1
                                            else "") + (f"-s{sd}" if len(seed_list) > 1 else "")
                specs.append(RunSpec(strategy=name, foundation_model=foundation_model,
                                     train_file=train_file, valid_file=valid_file,
                                     test_file=test_file, e0s=e0s, replay_file=replay_file,
                                     name=tag.replace(".", "p"), settings=settings,
                                     isolated_file=isolated_file,
                                     tuning=_tuning_for(tuning, name, settings)))
    return SweepPlan(specs=specs, sizes=sorted({int(n) for n in sizes}),
                     n_strategies=len(strategies), n_lrs=len(lr_list), n_seeds=len(seed_list))


def _tuning_for(tuning: dict[str, dict] | None, strategy: str, settings: dict[str, Any]
                ) -> dict | None:
    """The pilot record of a strategy when the run uses the pilot's best learning rate."""
    t = (tuning or {}).get(strategy)
    if not t or t.get("best_lr") is None or settings.get("lr") is None:
        return None
    return t if math.isclose(float(settings["lr"]), float(t["best_lr"]), rel_tol=1e-9) else None


def check_launch(ws: Workspace, specs: list[RunSpec], *, exec_name: str, trusted: bool,
                 sizes: list[int] | None = None) -> dict[tuple, dict[str, float]]:
    """Check every run of a launch before any of it is written or queued.

    Names, settings and ``mace_run_train`` configurations of every run first (cheap, so a bad
    strategy setting is reported before any data is read), then the data files of every run
    (:func:`~mlipft_core.jobs.prepare.preflight`), the training-set sizes of a size sweep,
    and every E0 choice.

    Parameters
    ----------
    ws
        The workspace.
    specs
        The runs (for a size sweep: one per strategy x learning rate x seed, each trained at
        every size).
    exec_name
        The executor (a local run needs its device here).
    trusted
        Whether the foundation models are trusted files.
    sizes
        Training-set sizes of a size sweep (sorted), or ``None``.

    Returns
    -------
    dict
        The E0 values of each distinct E0 choice (keyed by
        :func:`~mlipft_core.e0_for_runs.e0_key`).

    Raises
    ------
    MlipftError
        The first problem found; nothing is written.
    """
    from ..data import read_frames  # ase: only when a launch is checked
    from ..e0_for_runs import checked_e0s, e0_key

    for s in specs:
        check_name(s.name if s.name not in ("", "run") else s.strategy)
        if sizes:
            check_name(f"{s.name}-n{sizes[-1]}")  # the name of its largest run
        build_config(s, Path("/tmp"), check_device=exec_name == "local")
    checked: set[tuple[str | None, ...]] = set()
    n_frames: dict[str, int] = {}
    e0_cache: dict[tuple, dict[str, float]] = {}
    for s in specs:  # data checked and every E0 resolved before the first run is written
        a = absolute_spec(s)
        files = (a.train_file, a.valid_file, a.test_file, a.replay_file)
        if files not in checked:
            preflight(a)
            checked.add(files)
        if sizes is not None:
            if a.train_file not in n_frames:
                n_frames[a.train_file] = len(read_frames(a.train_file))
            n = n_frames[a.train_file]
            if not sizes or sizes[0] < 2 or sizes[-1] > n:
                raise StrategyError(f"training-set sizes must lie between 2 and {n} (the "
                                    f"training set), got {sizes}")
            check_batch_fits(a, sizes[0], "the smallest training-set size")
        key = e0_key(a)
        if key not in e0_cache:
            e0_cache[key] = checked_e0s(a, trusted=trusted, workspace=ws)
    return e0_cache


def submit_sweep(specs: list[RunSpec], *, workspace: Workspace | None = None,
                 trusted: bool = True, executor: str | None = None,
                 slurm: SlurmOptions | dict[str, Any] | None = None,
                 sweep: str | None = None, policy: SubmissionPolicy | None = None
                 ) -> list[RunRecord]:
    """Prepare several runs (strategies, learning rates, seeds) as one sweep and submit them
    together: on SLURM, one job array. The whole sweep is refused before any run is written
    when one of them is bad."""
    from ..e0_for_runs import e0_key  # numpy, ase: only when a launch is checked

    ws = workspace or Workspace()
    sweep = sweep or time.strftime("sweep-%Y%m%d-%H%M%S")
    admitted = check_submission(ws, specs, policy)
    exec_name, exec_opts = executor_choice(ws, executor, slurm)
    e0_cache = check_launch(ws, specs, exec_name=exec_name, trusted=trusted)
    recs = prepare_all(ws, [(s, {"sweep": sweep, "trusted": trusted, "checked": True,
                                 "e0_values": e0_cache[e0_key(absolute_spec(s))],
                                 "executor": exec_name, "slurm": exec_opts or None,
                                 "admission": admitted})
                            for s in specs])
    return launch(ws, recs)


def submit_plan(plan: SweepPlan, **kwargs: Any) -> list[RunRecord]:
    """Submit a :class:`SweepPlan`: a sweep, or a size sweep of every run when sizes are set.

    The whole plan is checked (every run's settings, data, sizes and E0s) before any run is
    written, and its runs are queued together: a bad run refuses the launch, none is queued.
    """
    if plan.sizes:
        return _submit_sizes([(sp, int(sp.settings.get("seed", 0))) for sp in plan.specs],
                             plan.sizes, **kwargs)
    return submit_sweep(plan.specs, **kwargs)


def submit_size_sweep(spec: RunSpec, sizes: list[int], *, seed: int = 0,
                      **kwargs: Any) -> list[RunRecord]:
    """One strategy over training-set sizes (nested random subsets), for learning curves.

    Subsets are written to the workspace (``subsets/``); each run records its
    ``train_size``. The E0s are resolved once, on the full training set.
    """
    return _submit_sizes([(spec, seed)], sizes, **kwargs)


def _submit_sizes(specs: list[tuple[RunSpec, int]], sizes: Iterable[int], *,
                  workspace: Workspace | None = None, trusted: bool = True,
                  executor: str | None = None,
                  slurm: SlurmOptions | dict[str, Any] | None = None,
                  sweep: str | None = None, policy: SubmissionPolicy | None = None
                  ) -> list[RunRecord]:
    """Size sweeps of several runs, ``(spec, subset seed)`` each, checked whole and queued
    together (see :func:`submit_size_sweep`)."""
    import numpy as np  # only when subsets are drawn

    from ..data import read_frames, write_extxyz
    from ..e0_for_runs import e0_key

    ws = workspace or Workspace()
    sizes = sorted({int(n) for n in sizes})
    absolute = [(absolute_spec(s), seed) for s, seed in specs]
    admitted = check_submission(ws, [s for s, _ in absolute for _n in sizes], policy)
    exec_name, exec_opts = executor_choice(ws, executor, slurm)
    e0_cache = check_launch(ws, [s for s, _ in absolute], exec_name=exec_name,
                            trusted=trusted, sizes=sizes)
    sweep = sweep or time.strftime("sizes-%Y%m%d-%H%M%S")
    todo: list[tuple[RunSpec, dict[str, Any]]] = []
    frames_of: dict[str, list] = {}
    for spec, seed in absolute:
        if spec.train_file not in frames_of:
            frames_of[spec.train_file] = read_frames(spec.train_file)
        frames = frames_of[spec.train_file]
        order = np.random.default_rng(seed).permutation(len(frames))
        tag = hashlib.sha256(f"{spec.train_file}:{seed}".encode()).hexdigest()[:10]
        for n in sizes:
            path = ws.root / "subsets" / f"{tag}-{n}.xyz"
            if not path.is_file():
                write_extxyz(path, [frames[i] for i in sorted(order[:n])])
            todo.append((replace(spec, train_file=str(path), name=f"{spec.name}-n{n}"),
                         {"sweep": sweep, "e0_values": e0_cache[e0_key(spec)],
                          "checked": True, "executor": exec_name,
                          "slurm": exec_opts or None, "trusted": trusted, "train_size": n,
                          "admission": admitted}))
    return launch(ws, prepare_all(ws, todo))
