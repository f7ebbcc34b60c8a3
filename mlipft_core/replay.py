"""The replay data of a multihead run: the subset mace replays, and what mace really used.

``mace_run_train`` reads ``num_samples_pt`` and ``subselect_pt`` only for its own replay sets
(``--pt_train_file mp``, ...): a local replay file is replayed whole, whatever the replay size
says. So a run whose replay file holds more structures than it asks for replays a subset made
with mace's own selection (``mace_finetuning_select``: random, or farthest point sampling on
the foundation model's descriptors), written into the run folder by the run's own process
just before training (:mod:`mlipft_core.jobs.runner`). The plan of that step
(:class:`ReplaySubset`) is recorded with the run; what the pretraining head trained on is read
back from mace's log (:func:`used_count`).
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["METHODS", "SUBSET_FILE", "ReplaySubset", "plan_official", "plan_subset", "replay_of",
           "replay_sentence", "used_count"]

#: How a replay subset can be chosen (``subselect_pt``): mace's two selections.
METHODS = {"random": "random", "fps": "farthest point sampling"}

#: The subset's file in the run folder.
SUBSET_FILE = "replay_subset.xyz"

_PT_SIZE = re.compile(r"Head 'pt_head' training dataset size: (\d+)")
#: mace_finetuning_select's words when farthest point sampling fails (e.g. without the
#: ``fpsample`` package): it then chooses at random, and the run goes on
_FPS_FAILED = re.compile(r"FPS failed, selecting random configurations instead: (.*)")


@dataclass(frozen=True)
class ReplaySubset:
    """What a multihead run replays: the replay file, or a subset of it."""

    source: str
    """The replay file the user gave."""
    available: int
    """Structures in it."""
    requested: int
    """Structures the run asks for (``num_samples_pt``)."""
    method: str
    """``random`` or ``fps`` (``subselect_pt``)."""
    file: str
    """The file mace replays: the subset in the run folder, or ``source`` when the run asks
    for all of it (or more)."""
    seed: int = 0
    model: str | None = None
    """The model whose descriptors farthest point sampling uses (the foundation model)."""
    device: str = "cpu"
    official: str = ""
    """The name of mace's own replay set (``mp``, ``omat``, ...) when ``source`` is one: mace
    then selects the subset itself (``available`` is not counted, 0)."""
    title: str = ""
    """That set's title."""

    @property
    def selected(self) -> int:
        """Structures mace is given (before its 10% validation share of them)."""
        return self.requested if self.official else min(self.requested, self.available)

    @property
    def subsets(self) -> bool:
        """Whether the workbench makes a subset (the run asks for fewer than the local file
        holds; mace selects from its own sets itself)."""
        return not self.official and self.requested < self.available

    def command(self) -> list[str] | None:
        """The ``mace_finetuning_select`` command line that writes the subset (run in the run
        folder), or ``None`` when the whole file is replayed."""
        if not self.subsets:
            return None
        argv = [sys.executable, "-m", "mace.cli.fine_tuning_select",
                "--configs_pt", self.source, "--output", self.file,
                "--num_samples", str(self.requested), "--subselect", self.method,
                "--filtering_type", "none", "--seed", str(self.seed)]
        if self.method == "fps":
            argv += ["--model", str(self.model), "--device", self.device,
                     "--default_dtype", "float64"]
        return argv

    def shell_line(self) -> str | None:
        """:meth:`command` as a user types it (``mace_finetuning_select ...``), for
        ``command.sh``."""
        argv = self.command()
        return None if argv is None else shlex.join(["mace_finetuning_select", *argv[3:]])

    def describe(self) -> str:
        """One sentence on what is replayed, e.g. for a run's page."""
        if self.official:
            return (f"{self.requested} structures of mace's {self.title or self.official}, "
                    f"chosen by mace ({METHODS[self.method]})")
        if not self.subsets:
            return (f"the whole replay file ({self.available} structures"
                    + (f"; {self.requested} were asked for" if self.requested > self.available
                       else "") + ")")
        return (f"{self.requested} of the replay file's {self.available} structures, chosen by "
                f"{METHODS[self.method]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReplaySubset:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def plan_official(name: str, title: str, path: str, settings: dict[str, Any],
                  foundation_model: str) -> ReplaySubset:
    """What a multihead run with these resolved ``settings`` replays of mace's own set
    ``name`` (cached at ``path``): mace selects ``num_samples_pt`` of it itself."""
    return ReplaySubset(source=name, available=0, requested=int(settings["num_samples_pt"]),
                        method=str(settings.get("subselect_pt") or "random"), file=str(path),
                        seed=int(settings.get("seed", 0)), model=str(foundation_model),
                        device=str(settings.get("device", "cpu")), official=name, title=title)


def plan_subset(replay_file: str, available: int, settings: dict[str, Any], folder: Path,
                foundation_model: str) -> ReplaySubset:
    """What a multihead run with these resolved ``settings`` replays of ``replay_file``
    (holding ``available`` structures), for the run folder ``folder``."""
    requested = int(settings["num_samples_pt"])
    return ReplaySubset(source=str(replay_file), available=int(available),
                        requested=requested,
                        method=str(settings.get("subselect_pt") or "random"),
                        file=str(folder / SUBSET_FILE if requested < available
                                 else replay_file),
                        seed=int(settings.get("seed", 0)), model=str(foundation_model),
                        device=str(settings.get("device", "cpu")))


def used_count(log_text: str) -> int | None:
    """The pretraining head's training structures as mace logged them (its replay minus the
    validation share), or ``None`` before mace got there."""
    found = _PT_SIZE.findall(log_text)
    return int(found[-1]) if found else None


def replay_of(spec: Any, folder: Path) -> dict[str, Any] | None:
    """What a run replays, as recorded with it and as mace used it, or ``None`` for a run
    without replay: ``available``, ``requested`` and ``selected`` structures, the ``method``,
    the ``file`` mace replays, ``method_used`` (``random`` where farthest point sampling failed,
    with the reason in ``fps_failure``), ``used``, the pretraining head's training structures
    (both read from the run's log; ``used`` is ``None`` until mace got there), and
    ``described``, :meth:`ReplaySubset.describe`."""
    raw = spec.get("replay") if isinstance(spec, dict) else None
    if not isinstance(raw, dict):
        return None
    try:
        sub = ReplaySubset.from_dict(raw)
    except TypeError:
        return None
    try:
        log = (Path(folder) / "train.log").read_text(errors="replace")
    except OSError:
        log = ""
    failed = _FPS_FAILED.findall(log) if sub.subsets and sub.method == "fps" else []
    return {"available": None if sub.official else sub.available,
            "official": sub.official or None,
            "requested": sub.requested, "selected": sub.selected,
            "method": sub.method, "method_used": "random" if failed else sub.method,
            "fps_failure": failed[-1].strip() if failed else None, "file": sub.file,
            "used": used_count(log), "described": sub.describe()}


def replay_sentence(replay: dict[str, Any]) -> str:
    """:func:`replay_of` in words, e.g. for a run's page."""
    text = f"Replays {replay['described']}"
    if replay.get("fps_failure"):
        text += (f" (farthest point sampling failed: {replay['fps_failure']}; "
                 "mace_finetuning_select chose them at random instead)")
    used = replay.get("used")
    if used is not None:
        rest = int(replay["selected"]) - int(used)
        text += (f"; the pretraining head trained on {used} of them"
                 + (f" and validates on the other {rest}" if rest > 0 else ""))
    return text + "."
