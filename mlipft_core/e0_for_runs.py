"""The E0s of a run: what a run spec's ``e0s`` names, resolved to values, and checked.

A run's ``e0s`` may be a method name (``foundation``, ``average``, ``estimated``,
``isolated``), a saved E0 choice's id, a mace dict string, a JSON file or JSON text;
:func:`resolve_e0s` turns it into explicit values (element -> eV) for the run's training
data, and :func:`check_e0s` refuses values a run cannot train with. The runs of a sweep that
share an :func:`e0_key` share one resolution.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

from .e0_choices import load_choice
from .e0_fit import METHODS, compute, load_explicit
from .e0_inputs import prepare
from .referencing import composition
from .strategies import RunSpec, StrategyError, get_strategy
from .workspace import Workspace

__all__ = ["check_e0_coverage", "check_e0s", "checked_e0s", "e0_key", "foundation_head",
           "resolve_e0s"]


def resolve_e0s(spec: RunSpec, *, trusted: bool = True,
                workspace: Workspace | None = None) -> dict[str, float]:
    """Explicit E0 values (element -> eV) for a run's training data.

    ``spec.e0s`` may be a method name (``foundation``, ``average``, ``estimated``,
    ``isolated``: the IsolatedAtom configurations of the training file and of
    ``spec.isolated_file``), a saved E0 choice id, a mace dict string, a JSON file or JSON
    text. The foundation model's predictions on the training data come from the workspace's
    prediction cache.
    """
    value = str(spec.e0s).strip()
    ws = workspace or Workspace()
    if value not in METHODS and value and not value.startswith("{"):
        saved = load_choice(ws, value)
        if saved is not None:
            data = saved.get("data")
            if data and Path(data).resolve() != Path(spec.train_file).resolve():
                raise StrategyError(f"the saved E0 choice {value} was fitted on {data}, not "
                                    f"on {spec.train_file}: fit E0s for this training set "
                                    "first")
            return {k: float(v) for k, v in saved["e0"].items()}
    if value == "isolated":
        inputs = prepare(spec.train_file, None, isolated_file=spec.isolated_file)
        if not inputs.isolated:
            raise StrategyError("isolated-atom E0s: the training file has no IsolatedAtom "
                                "configurations and no isolated-atom file was given; fit them "
                                "on the E0 page (with an isolated-atom file) and use the saved "
                                "choice, or give the values explicitly")
        return compute(inputs, value).e0
    if value in ("foundation", "average", "estimated"):
        model = None if value == "average" else spec.foundation_model
        # the foundation model's predictions come from the workspace's cache: a launch after
        # the E0 page (or a second launch) spends no model time on them
        inputs = prepare(spec.train_file, model, trusted=trusted,
                         isolated_file=spec.isolated_file, workspace=ws,
                         head=foundation_head(spec) if model else None)
        return compute(inputs, value).e0
    if value.startswith("{") and ":" in value and '"' not in value:
        try:
            raw = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise StrategyError(f"E0s {value[:80]!r} are not a valid dict") from exc
        return load_explicit(raw)
    return load_explicit(value)


def checked_e0s(spec: RunSpec, *, trusted: bool = True,
                workspace: Workspace | None = None) -> dict[str, float]:
    """The E0s a run trains with: :func:`resolve_e0s`, refused by :func:`check_e0s` when a
    run cannot train with them."""
    head = foundation_head(spec)
    if head and not get_strategy(spec.strategy).from_scratch:
        from .e0_inputs import model_head

        model_head(spec.foundation_model, head, trusted=trusted,
                   workspace=workspace or Workspace())
    e0 = resolve_e0s(spec, trusted=trusted, workspace=workspace)
    check_e0s(spec.train_file, e0)
    return e0


def check_e0_coverage(train_file: str, e0: dict[str, float]) -> None:
    """:class:`~mlipft_core.strategies.StrategyError` when the E0s miss an element of the
    training data (its composition is read once per file version)."""
    present = set(composition(train_file)[0])
    missing = sorted(present - set(e0))
    if missing:
        raise StrategyError(f"the E0s give no value for {', '.join(missing)}, which the "
                            "training data contains")


def check_e0s(train_file: str, e0: dict[str, float]) -> None:
    """Refuse E0s a run cannot train with: a value that is not finite, or an element of the
    training data without a value."""
    bad = sorted(k for k, v in e0.items() if not math.isfinite(float(v)))
    if bad:
        raise StrategyError(f"the E0s of {', '.join(bad)} are not finite numbers; fix the "
                            "training labels or give the E0s explicitly")
    check_e0_coverage(train_file, e0)


def e0_key(spec: RunSpec) -> tuple:
    """What a run's E0 values depend on: runs of a sweep that share it share one fit."""
    return (spec.foundation_model, spec.train_file, str(spec.e0s), spec.isolated_file,
            foundation_head(spec))


def foundation_head(spec: RunSpec) -> str | None:
    """The head of a multi-head foundation model a run fine-tunes from (``None``: the
    first)."""
    return spec.settings.get("foundation_head") or None
