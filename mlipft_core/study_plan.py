"""What a study runs, and about how long it takes on CPU.

The one count of a study's runs: :func:`pilot_size` runs per pilot, one pilot per strategy,
then the final runs of :func:`final_roles` (their specs: :func:`final_specs`). The study
queues exactly these (:mod:`mlipft_core.study`), its progress counts them and :func:`plan`
estimates them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import e0 as e0mod
from .analysis import element_pairs
from .data import is_isolated_atom, iter_frames
from .jobs.local import cpu_slots
from .referencing import composition, file_version
from .strategies import RunSpec
from .tune import count_of, default_grid
from .workspace import Workspace

if TYPE_CHECKING:  # types only: the study, defined with its inputs, queues these runs
    from .study import Study, StudyInputs

#: The strategies a study tunes and compares (the baseline runs separately, small).
FINE_TUNING = ("naive", "freeze-a", "freeze-b", "lora", "multihead-replay",
               "pseudolabel-replay", "replay-lora")
REPLAY = ("multihead-replay", "pseudolabel-replay", "replay-lora")
#: The final runs on the small training set.
SMALL_ROLES = ("naive-small", "scratch-small")

#: What one training run costs on CPU with the demo models (32 channels, 2 layers), as the
#: local executor runs them on a 2-core machine: two runs side by side, one thread each.
#: Measured from mace_run_train's own log of 1-epoch and 4-epoch runs on the demo SN2 data
#: (132 training and 33 validation structures of 6 atoms): each epoch took 3.5-5.3 s, about
#: 0.03 s per training structure with its share of the validation; everything else a run does
#: (start-up, data preparation, the foundation model's E0 head, the final evaluation and the
#: saved model) took about 40 s. Larger foundation models cost many times more per structure;
#: a GPU much less.
CPU_SECONDS_PER_STRUCTURE_EPOCH = 0.03
CPU_SECONDS_PER_RUN = 40.0
#: What the analysis costs on CPU with the demo models, one thread, on the same machine: one
#: model head on one structure of the test, pretraining or probe sets (20 and 292
#: pretraining structures took 4.8 and 21 s, so about 0.06 s a structure with its share of
#: loading the model), and one model head's dimer curve of one element pair (1.2-2.2 s).
CPU_SECONDS_PER_EVALUATION = 0.06
CPU_SECONDS_PER_DIMER_CURVE = 2.0
#: One model head relaxing one structure of the random structure search (batched FIRE, one
#: thread): 40 structures took 22-47 s per demo model on 2 busy cores, the float64 fine-tunes
#: the longest (``bench/collapse_budget.py`` prints each model's time).
CPU_SECONDS_PER_SEARCH_STRUCTURE = 1.0


def pilot_size(inputs: StudyInputs) -> int:
    """Runs per pilot."""
    return len(set(inputs.pilot_lrs)) if inputs.pilot_lrs else len(default_grid(1e-3))


def final_roles(inputs: StudyInputs) -> list[str]:
    """The final runs a study plans, by role, in order: every strategy at its tuned learning
    rate; naive fine-tuning with ``average`` E0s; naive fine-tuning of the weaker foundation
    model (when one is given); naive fine-tuning and training from scratch on the small
    training set. The plan, the progress and the queued runs all count these."""
    return [*inputs.strategies, "naive-average-e0",
            *(["naive-weak"] if inputs.weak_model else []), *SMALL_ROLES]


def fit_e0s(inputs: StudyInputs) -> dict[str, dict[str, float]]:
    """The E0s the study's runs take: ``anchored`` (to the isolated atoms, through the
    foundation model) for every strategy, ``average`` for the E0 finding's second naive run,
    ``anchored_weak`` for the weaker foundation model's, and the ``isolated`` atoms' own."""
    out = {}
    fm = e0mod.prepare(inputs.train, inputs.model, trusted=True,
                       isolated_file=inputs.isolated_file, head=inputs.foundation_head)
    out["anchored"] = e0mod.compute(fm, "estimated").e0
    plain = e0mod.prepare(inputs.train, None, trusted=True)
    out["average"] = e0mod.compute(plain, "average").e0
    if fm.isolated:
        out["isolated"] = {e: fm.isolated[e] for e in fm.elements if e in fm.isolated}
    if inputs.weak_model:
        weak = e0mod.prepare(inputs.train, inputs.weak_model, trusted=True,
                             isolated_file=inputs.isolated_file)
        out["anchored_weak"] = e0mod.compute(weak, "estimated").e0
    return out


def run_spec(inputs: StudyInputs, strategy: str, *, e0: dict[str, float],
             lr: float | None = None, epochs: int | None = None, model: str | None = None,
             name: str | None = None) -> RunSpec:
    """The spec of one of the study's runs: ``strategy`` on the study's data, with ``e0``,
    at ``lr`` (else the strategy's default) for ``epochs`` (else the study's)."""
    settings: dict[str, Any] = {"max_num_epochs": epochs or inputs.epochs}
    if lr is not None:
        settings["lr"] = float(lr)
    if inputs.foundation_head and (model is None or model == inputs.model):
        settings["foundation_head"] = inputs.foundation_head
    return RunSpec(strategy=strategy, foundation_model=model or inputs.model,
                   train_file=inputs.train, valid_file=inputs.valid, test_file=None,
                   e0s=json.dumps(e0), replay_file=inputs.replay, name=name or strategy,
                   settings=settings, isolated_file=inputs.isolated_file)


def final_specs(study: Study) -> dict[str, RunSpec]:
    """The specs of the final runs (:func:`final_roles`) that can run: a strategy whose pilot
    found no learning rate is left out, and so are the naive variants when naive's did not."""
    inp = study.inputs
    anchored = study.e0["anchored"]
    naive_lr = study.tuned.get("naive")
    out = {}
    for role in final_roles(inp):
        if role in inp.strategies:
            lr = study.tuned.get(role)
            if lr is None:
                continue
            sp = run_spec(inp, role, e0=anchored, lr=lr, name=f"study-{role}")
            sp.tuning = {"pilot_sweep": study.pilots[role], "best_lr": lr,
                         "epochs": inp.pilot_epochs,
                         "grid": [p["lr"] for p in study.extra.get("pilots", {}).get(role, {})
                                  .get("results", [])]}
            out[role] = sp
        elif role == "scratch-small":
            out[role] = run_spec(inp, "scratch", e0=anchored, name="study-scratch-small")
        elif naive_lr is None:
            continue
        elif role == "naive-average-e0":
            out[role] = run_spec(inp, "naive", e0=study.e0["average"], lr=naive_lr,
                                 name="study-naive-average-e0")
        elif role == "naive-weak" and "anchored_weak" in study.e0:
            out[role] = run_spec(inp, "naive", e0=study.e0["anchored_weak"], lr=naive_lr,
                                 model=inp.weak_model, name="study-naive-weak-fm")
        elif role == "naive-small":
            out[role] = run_spec(inp, "naive", e0=anchored, lr=naive_lr,
                                 name="study-naive-small")
    return out


@dataclass
class StudyPlan:
    """What a study will run (:func:`plan`), and about how long it takes on CPU."""

    strategies: list[str]
    learning_rates: int              # per pilot
    pilot_epochs: int
    finals: list[str]                # roles, as :func:`final_roles`
    epochs: int                      # per final run
    n_train: int                     # training structures (isolated atoms aside)
    small_size: int
    n_replay: int                    # pretraining structures a replay strategy adds per epoch
    slots: int | None                # runs side by side (the local executor's CPU slots);
    #                                  None: a cluster, every run of a phase at once
    structure_epochs: int            # training structures times epochs, over every run
    cpu_seconds: float               # the sum of every run's estimated time on CPU
    seconds: float                   # wall time on CPU: pilots, then finals, ``slots`` at a time
    evaluations: int                 # model heads times structures the analysis evaluates
    dimer_curves: int                # model heads times element pairs
    analysis_seconds: float          # the analysis on CPU, after the runs
    searched: int = 0                # model heads times structures of the structure search

    @property
    def pilot_runs(self) -> int:
        return len(self.strategies) * self.learning_rates

    @property
    def n_runs(self) -> int:
        return self.pilot_runs + len(self.finals)

    def describe(self) -> str:
        """The plan and its estimate in one paragraph, every count with its unit."""
        text = (f"{count_of(self.n_runs, 'run')}: "
                f"{count_of(len(self.strategies), 'strategy', 'strategies')} × "
                f"{count_of(self.learning_rates, 'learning rate')} × "
                f"{count_of(self.pilot_epochs, 'epoch')} of pilots, then "
                f"{count_of(len(self.finals), 'final run')} of "
                f"{count_of(self.epochs, 'epoch')} each (the two small-data ones on "
                f"{self.small_size} of the {count_of(self.n_train, 'training structure')}). ")
        where = (f"on this machine, {count_of(self.slots, 'run')} at a time" if self.slots
                 else "with every run of a phase running at once (the cluster's queue adds "
                      "its own wait)")
        return text + (f"Estimated time on CPU, for a foundation model the size of the demo "
                       f"ones: {_duration(self.seconds)} for the runs ({where}), then "
                       f"{_duration(self.analysis_seconds)} for the analysis. A larger model "
                       "takes longer, a GPU much less, and other work on the machine slows "
                       "it down.")


def _duration(seconds: float) -> str:
    """``"about 4 minutes"``, ``"about 1 hour 20 minutes"``."""
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return f"about {count_of(minutes, 'minute')}"
    h, m = divmod(minutes, 60)
    return f"about {count_of(h, 'hour')}" + (f" {count_of(m, 'minute')}" if m else "")


def heads_of(role: str) -> int:
    """Model heads the analysis evaluates of a final run: two for a replay model."""
    return 2 if role in REPLAY else 1


def plan(inputs: StudyInputs, workspace: Workspace | None = None) -> StudyPlan:
    """The runs a study of ``inputs`` queues (the same :func:`pilot_size` and
    :func:`final_roles` that start it) and their estimated time on CPU: for every run
    :data:`CPU_SECONDS_PER_RUN` plus :data:`CPU_SECONDS_PER_STRUCTURE_EPOCH` times its
    training structures (the replay strategies' pretraining structures too) times its
    epochs; pilots, then finals, each phase ``slots`` runs at a time. The analysis:
    :data:`CPU_SECONDS_PER_EVALUATION` per model head and structure it evaluates,
    :data:`CPU_SECONDS_PER_DIMER_CURVE` per model head and element pair,
    :data:`CPU_SECONDS_PER_SEARCH_STRUCTURE` per model head and searched structure."""
    ws = workspace or Workspace()
    n_train = n_structures(*file_version(inputs.train))
    n_replay = n_structures(*file_version(inputs.replay)) if inputs.replay else 0
    slots = cpu_slots(ws.root) if inputs.executor in (None, "local") else None

    def per_epoch(strategy: str) -> int:
        return n_train + (n_replay if strategy in REPLAY else 0)

    n_lr = pilot_size(inputs)
    pilots = [(per_epoch(s), inputs.pilot_epochs) for s in inputs.strategies for _ in range(n_lr)]
    roles = final_roles(inputs)
    finals = [(inputs.small_size if role in SMALL_ROLES else per_epoch(role), inputs.epochs)
              for role in roles]

    def cost(n: int, epochs: int) -> float:
        return CPU_SECONDS_PER_RUN + CPU_SECONDS_PER_STRUCTURE_EPOCH * n * epochs

    def wall(runs: list[tuple[int, int]]) -> float:
        """A phase's wall time: its runs shared out over the slots (all at once on a
        cluster), never shorter than its longest run."""
        costs = [cost(*r) for r in runs]
        longest = max(costs, default=0.0)
        return longest if slots is None else max(sum(costs) / slots, longest)

    evaluations, dimer_curves = _analysis_size(inputs, roles)
    searched = search_heads(inputs) * int(inputs.search_structures)
    return StudyPlan(list(inputs.strategies), n_lr, inputs.pilot_epochs, roles, inputs.epochs,
                     n_train, inputs.small_size, n_replay, slots,
                     sum(n * e for n, e in pilots + finals),
                     sum(cost(*r) for r in pilots + finals), wall(pilots) + wall(finals),
                     evaluations, dimer_curves,
                     CPU_SECONDS_PER_EVALUATION * evaluations
                     + CPU_SECONDS_PER_DIMER_CURVE * dimer_curves
                     + CPU_SECONDS_PER_SEARCH_STRUCTURE * searched, searched)


def search_heads(inputs: StudyInputs) -> int:
    """Model heads the random structure search relaxes: the foundation model and every
    strategy's target head."""
    return 1 + len(inputs.strategies)


def _analysis_size(inputs: StudyInputs, roles: list[str]) -> tuple[int, int]:
    """What the analysis evaluates (see :mod:`mlipft_core.study_analysis`): model heads times
    structures (every final model's heads on the test sets, the weaker foundation model and
    its fine-tune too, the probe's heads on the compressed structures) and model heads times
    element pairs (the dimer curves of foundation, naive and multihead replay)."""
    def n_in(path: str | None) -> int:
        return len(composition(path)[1]) if path else 0

    elements, _ = composition(inputs.test)
    n_eval = n_in(inputs.test) + n_in(inputs.pretrain_test)
    compared = 1 + sum(heads_of(r) for r in roles if r != "naive-weak") + (
        2 if "naive-weak" in roles else 0)
    probed = (1 + len(inputs.strategies) + ("multihead-replay" in inputs.strategies)
              if inputs.short_range_test else 0)
    evaluations = compared * n_eval + probed * n_in(inputs.short_range_test)
    dimer_curves = len(element_pairs(elements)) * (1 + sum(
        heads_of(r) for r in ("naive", "multihead-replay") if r in inputs.strategies))
    return evaluations, dimer_curves


@functools.lru_cache(maxsize=32)
def n_structures(path: str, size: int, mtime_ns: int) -> int:
    """Structures of a training file, isolated atoms aside
    (:func:`~mlipft_core.data.is_isolated_atom`: mace takes those as E0s, not as training
    structures); read once per file version."""
    return sum(1 for a in iter_frames(path) if not is_isolated_atom(a))
