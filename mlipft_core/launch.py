"""Launching and following fine-tuning work: runs and sweeps of runs, learning-rate pilots,
studies, and the workspace's run settings.

Each function is one whole action of the ``mlipft`` command line (``train``, ``tune``,
``study``, ``settings``, ``runs``): it checks the workspace, fills what the user left out
(:mod:`mlipft_core.defaults`), and calls the run queue (:mod:`mlipft_core.jobs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import jobs
from .defaults import (
    TrustFn,
    isolated_file_or_default,
    never_trusted,
    replay_or_default,
    study_inputs,
)
from .jobs.local import read_settings, settings_file
from .jobs.records import RunRecord
from .jobs.slurm import available
from .registry import model_path
from .strategies import STRATEGIES, StrategyError, get_strategy
from .tune import TuneResult, tune
from .workspace import Workspace, set_aside_if_damaged

if TYPE_CHECKING:
    from .jobs.progress import Progress
    from .study import Study, StudyProgress


@dataclass
class TrainingOptions:
    """The inputs and settings of fine-tuning runs, as the user gives them (``None``: the
    strategy's or mace's default).

    Attributes
    ----------
    model
        The foundation model: registry name or path.
    train, valid, test
        Training, validation (default: part of the training set) and test extxyz files.
    e0
        The E0 choice: ``foundation``, ``average``, ``estimated``, ``isolated``, a saved E0
        choice id, or JSON or a mace dict of values.
    isolated_file
        Isolated-atom energies of the reference method (default for demo data: its own).
    replay
        Replay file of multihead strategies (default for demo models: the bundled pool).
    epochs, lr, batch_size, seed, device, energy_weight, forces_weight, ema, ema_decay
        Training settings.
    precision
        ``float32`` or ``float64``.
    lora_rank, lora_alpha
        LoRA settings (LoRA strategies).
    replay_samples
        Pretraining configurations replayed (multihead strategies): a subset of the replay
        file when it holds more.
    replay_selection
        How that subset is chosen: ``random`` or ``fps`` (farthest point sampling).
    preset
        The settings a run starts from (:data:`~mlipft_core.strategies.PRESETS`): ``short
        budget`` (default) or ``study protocol``; the other options override it.
    clip_grad, weight_decay, loss
        Gradient clipping, weight decay and mace's loss (default: the preset's).
    foundation_head
        The head of a multi-head foundation model to fine-tune from (default: its first);
        the run's E0s and its foundation E0s are that head's.
    """

    model: str
    train: str
    valid: str | None = None
    test: str | None = None
    e0: str = "estimated"
    isolated_file: str | None = None
    replay: str | None = None
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    seed: int | None = None
    device: str | None = None
    energy_weight: float | None = None
    forces_weight: float | None = None
    ema: bool | None = None
    ema_decay: float | None = None
    precision: str | None = None
    lora_rank: int | None = None
    lora_alpha: float | None = None
    replay_samples: int | None = None
    replay_selection: str | None = None
    preset: str | None = None
    clip_grad: float | None = None
    weight_decay: float | None = None
    loss: str | None = None
    foundation_head: str | None = None

    def settings(self) -> dict[str, Any]:
        """The training settings that were given, by their names in a run's settings.

        Returns
        -------
        dict
            E.g. ``{"max_num_epochs": 5, "lr": 0.001}``; options left out are absent.
        """
        named = {"max_num_epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                 "seed": self.seed, "device": self.device, "energy_weight": self.energy_weight,
                 "forces_weight": self.forces_weight, "ema": self.ema,
                 "ema_decay": self.ema_decay, "default_dtype": self.precision,
                 "lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha,
                 "num_samples_pt": self.replay_samples,
                 "subselect_pt": self.replay_selection, "preset": self.preset,
                 "clip_grad": self.clip_grad, "weight_decay": self.weight_decay,
                 "loss": self.loss, "foundation_head": self.foundation_head}
        return {k: v for k, v in named.items() if v is not None}


def workspace_for_writing() -> Workspace:
    """The workspace, checked to be writable before work that writes into it (runs, their
    model copies, settings), and with a damaged ``settings.json`` said.

    Returns
    -------
    Workspace
        The current workspace.

    Raises
    ------
    WorkspaceError
        A read-only or full file system, a file where the workspace's folder belongs.
    """
    ws = Workspace()
    ws.check_writable()
    read_settings(ws.root)
    return ws


def plan_runs(options: TrainingOptions, strategies: Sequence[str], *,
              trust: TrustFn = never_trusted, **sweep: Any) -> jobs.SweepPlan:
    """The runs of a launch: every strategy with the given options, swept as ``sweep`` says.

    Parameters
    ----------
    options
        The training inputs and settings.
    strategies
        Strategy names.
    trust
        Whether the user vouches for the model, should it be a local file
        (see :mod:`mlipft_core.defaults`).
    **sweep
        ``lrs``, ``seeds``, ``sizes``: see :func:`mlipft_core.jobs.expand_sweep`.

    Returns
    -------
    SweepPlan
        What the launch will queue.
    """
    workspace_for_writing()
    path = str(model_path(options.model, trusted=trust(options.model)))
    return jobs.expand_sweep(
        {s: {} for s in strategies}, foundation_model=path, train_file=options.train,
        valid_file=options.valid, test_file=options.test, e0s=options.e0,
        replay_file=replay_or_default(options.replay, options.model, options.foundation_head),
        isolated_file=isolated_file_or_default(options.isolated_file, options.train),
        common=options.settings(), **sweep)


def strategy_names(text: str) -> list[str]:
    """The strategies of a comma-separated list, checked.

    Parameters
    ----------
    text
        One strategy name, or several separated by commas.

    Returns
    -------
    list of str
        The names in order.

    Raises
    ------
    StrategyError
        An unknown name, or no name at all.
    """
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown or not names:
        raise StrategyError(f"unknown strategy {', '.join(unknown) or text!r}; "
                            f"choose from {', '.join(STRATEGIES)}")
    return names


def submit_training(options: TrainingOptions, strategy: str, *,
                    lrs: str | Sequence[float] | None = None,
                    seeds: str | Sequence[int] | None = None,
                    sizes: str | Sequence[int] | None = None, name: str | None = None,
                    executor: str | None = None, slurm: dict[str, Any] | None = None,
                    wait: bool = False, trust: TrustFn = never_trusted) -> list[RunRecord]:
    """Queue fine-tuning runs: one, or a sweep of strategies, learning rates, seeds and
    training-set sizes.

    Parameters
    ----------
    options
        The training inputs and settings.
    strategy
        A strategy, or several separated by commas.
    lrs, seeds, sizes
        Values to sweep: lists, or text separated by commas (``"1e-3,3e-3"``).
    name
        Run name (default: the strategy); with several runs, the prefix of their names.
    executor, slurm
        Where the runs execute (default: the workspace setting), and SLURM options.
    wait
        Return when the runs have ended.
    trust
        Whether the user vouches for the model, should it be a local file.

    Returns
    -------
    list of RunRecord
        The runs as queued, or as they ended with ``wait``.

    Raises
    ------
    StrategyError
        Unknown strategies, values that are not numbers, settings the strategy refuses.
    """
    strategies = strategy_names(strategy)
    plan = plan_runs(options, strategies, trust=trust, lrs=lrs, seeds=seeds, sizes=sizes)
    if name:
        if plan.n_runs == 1:
            plan.specs[0].name = name
        else:
            for spec in plan.specs:
                spec.name = f"{name}-{spec.name}"
    if plan.n_runs == 1 and not plan.sizes:
        records = [jobs.submit(plan.specs[0], executor=executor, slurm=slurm)]
    else:
        records = jobs.submit_plan(plan, executor=executor, slurm=slurm)
    if wait:
        records = [jobs.wait(r.id) for r in records]
    return records


def tune_learning_rate(options: TrainingOptions, strategy: str, *,
                       lrs: str | Sequence[float] | None = None, executor: str | None = None,
                       slurm: dict[str, Any] | None = None,
                       progress: Callable[[TuneResult], None] | None = None,
                       poll: float = 5.0, trust: TrustFn = never_trusted) -> TuneResult:
    """A learning-rate pilot of one strategy on the data, run to its end.

    Parameters
    ----------
    options
        The training inputs and settings; ``options.epochs`` are the pilot's epochs.
    strategy
        The strategy.
    lrs
        Learning rates to try: a list, or text separated by commas; ``None`` or empty for
        five around the strategy's default.
    executor, slurm
        Where the pilot's runs execute, and SLURM options.
    progress
        Told where the pilot stands after every look at its runs.
    poll
        Seconds between looks.
    trust
        Whether the user vouches for the model, should it be a local file.

    Returns
    -------
    TuneResult
        Every value tried, and the best.
    """
    get_strategy(strategy)
    grid = jobs.parse_list(lrs, float, "--lrs") or None  # default: around the default
    spec = plan_runs(options, [strategy], trust=trust).specs[0]
    return tune(spec, grid, options.epochs, executor=executor, slurm=slurm, progress=progress,
                poll=poll)


def run_study(*, wait: bool = True, report: Callable[[StudyProgress], None] | None = None,
              poll: float = 5.0, trust: TrustFn = never_trusted, **options: Any) -> Study:
    """Start or resume the study on a model and data (default: the demo world).

    Parameters
    ----------
    wait
        Wait for the findings; else move the study on as far as its runs allow and return
        (running it again resumes it).
    report
        Told where the study stands, while waiting.
    poll
        Seconds between looks at the study's runs.
    trust
        Whether the user vouches for the models, should they be local files.
    **options
        The study's inputs: see :func:`mlipft_core.defaults.study_inputs`.

    Returns
    -------
    Study
        The study as it stands.
    """
    # study: its analysis modules load only when a study is asked for
    from . import study

    workspace_for_writing()
    inputs = study_inputs(trust=trust, **options)
    if not wait:
        return study.advance(study.start(inputs).id)
    return study.run(inputs, report=report, poll=poll)


def run_settings(*, executor: str | None = None, cpu_slots: int | None = None,
                 slurm: dict[str, Any] | None = None) -> dict[str, Any]:
    """The workspace's run settings, changed where a value is given.

    Parameters
    ----------
    executor
        The new default executor.
    cpu_slots
        Local CPU runs at once.
    slurm
        SLURM options to change (``None`` values are left as they are).

    Returns
    -------
    dict
        The settings (``executor``, ``local``, ``slurm``) and whether SLURM answers here
        (``slurm_available``, ``slurm_status``). A damaged settings file is said (a notice)
        and set aside, not overwritten, before new settings are written.
    """
    changes = {k: v for k, v in (slurm or {}).items() if v is not None}
    if executor or cpu_slots is not None or changes:
        ws = workspace_for_writing()
        set_aside_if_damaged(settings_file(ws.root))  # kept, not overwritten
        current = jobs.save_settings(executor=executor, cpu_slots=cpu_slots,
                                     slurm=changes or None)
    else:
        read_settings(Workspace().root)  # a damaged file is said, and the defaults shown
        current = jobs.load_settings()
    ok, why = available()
    return {**current, "slurm_available": ok, "slurm_status": why}


def runs_with_progress() -> list[tuple[RunRecord, Progress]]:
    """Every run of the workspace, oldest first, with its training progress.

    Returns
    -------
    list of (RunRecord, Progress)
        Each run as it truly stands (unreadable ones included) and its progress.
    """
    return [(r, jobs.progress(r)) for r in jobs.list_runs()]
