"""Human names for what the core names by code: validation findings, strategies, heads, E0
methods, runs (:func:`run_label`), saved E0 choices and splits; and dashes for empty cells."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from mlipft_core.demo import DEMO_DATASETS, sample_data_dir
from mlipft_core.jobs.records import RunFacts, RunRecord, run_facts
from mlipft_core.registry import get_spec, list_models
from mlipft_core.strategies import STRATEGIES

FINDING_TITLES = {
    "unreadable": "Cannot be read",
    "empty": "No configurations",
    "missing_energy": "Energies missing",
    "missing_forces": "Forces missing",
    "forces_shape": "Forces of the wrong shape",
    "non_finite": "NaN or infinite values",
    "elements_not_covered": "Elements the model does not know",
    "isolated_atom": "Isolated-atom configurations",
    "stress_non_periodic": "Stress on a non-periodic structure",
    "duplicates": "Duplicate structures",
    "overlapping_atoms": "Overlapping atoms",
    "bad_cell": "Degenerate cell",
    "huge_cell": "Cell too large",
    "unknown_key": "Label key not in the file",
}


def finding_title(code: str) -> str:
    """``"non_finite"`` -> ``"NaN or infinite values"`` (unknown codes: words, capitalised)."""
    return FINDING_TITLES.get(code) or code.replace("_", " ").capitalize()


# ----------------------------------------------------------------------------- runs
#: Missing values in a table cell.
DASH = "—"

#: Heads of mace models in words.
HEAD_LABELS = {"pt_head": "pretraining head (replay)", "Default": "target head"}

#: E0 methods (``mlipft_core.jobs.records.E0_METHODS``) in words.
E0_WORDS = {"foundation": "the foundation model's E0s", "average": "average E0s",
            "estimated": "estimated E0s", "isolated": "isolated-atom E0s",
            "explicit": "E0s given as values"}


#: How the settings presets read on a page.
PRESET_TITLES = {"short budget": "Short budget (tens of epochs on CPU)",
                 "study protocol": "Study protocol (hundreds of epochs on a GPU)"}


def preset_title(name: str) -> str:
    """A settings preset in words (unknown names as they are)."""
    return PRESET_TITLES.get(name, name)


def strategy_title(name: str | None) -> str:
    """``"freeze-b"`` -> ``"Freeze, variant B"`` (unknown names as they are, none: a dash)."""
    if not name:
        return DASH
    return STRATEGIES[name].title if name in STRATEGIES else name


def head_label(head: str | None) -> str:
    """``"pt_head"`` -> ``"pretraining head (replay)"``, ``"Default"`` -> ``"target head"``."""
    if not head:
        return DASH
    return HEAD_LABELS.get(head, f"head {head}")


def e0_words(method: str | None) -> str:
    """``"estimated"`` -> ``"estimated E0s"`` (none: a dash)."""
    if not method:
        return DASH
    return E0_WORDS.get(method, f"{method} E0s")


def model_name(model: str | None) -> str:
    """A foundation model in words: the registry's display name of a registry name or of a
    registry model's file (``Demo strong (GFN1-xTB)``), else the file's name."""
    if not model:
        return DASH
    spec = get_spec(str(model))
    if spec is not None:
        return spec.display_name
    p = Path(str(model))
    for spec in list_models():
        if spec.path and Path(spec.path).name == p.name and Path(spec.path).parent == p.parent:
            return spec.display_name
        if spec.cache_filename and spec.cache_filename == p.name:
            return spec.display_name
    if p.name == "foundation_e0s.model":
        return "the foundation model with the chosen E0s"
    return p.name


def lr_text(lr: float | None) -> str:
    """``0.003`` -> ``"lr 3e-3"`` (no unit: the optimiser's step size)."""
    if lr is None:
        return "lr " + DASH
    mant, _, exp = f"{lr:.3g}".partition("e")
    if not exp:
        mant, _, exp = f"{lr:.2e}".partition("e")
        mant = mant.rstrip("0").rstrip(".")
    return f"lr {mant}e{int(exp)}"


def _when(ts: float, with_day: bool) -> str:
    """``"14:03:12"``, with the day (``"5 Mar 14:03:12"``) when ``with_day``."""
    t = datetime.fromtimestamp(ts)
    return (f"{t.day} {t:%b} " if with_day else "") + f"{t:%H:%M:%S}"


def _fact_text(key: str, f: RunFacts) -> str:
    if key == "foundation":
        return f"from {model_name(f.foundation)}"
    if key == "e0_method":
        return e0_words(f.e0_method)
    if key == "lr":
        return lr_text(f.lr)
    if key == "train_size":
        return ("whole training set" if f.train_size is None
                else f"{f.train_size} training structures")
    if key == "seed":
        return f"seed {f.seed}" if f.seed is not None else "seed " + DASH
    if key == "epochs":
        return f"{f.epochs} epochs" if f.epochs is not None else "epochs " + DASH
    raise KeyError(key)


#: What tells runs of one strategy apart, in the order the label says it.
_DISTINGUISHING = ("foundation", "e0_method", "lr", "train_size", "seed", "epochs")


def _facts(r: RunRecord | RunFacts) -> RunFacts:
    return r if isinstance(r, RunFacts) else run_facts(r)


def run_labels(records: Iterable[RunRecord | RunFacts]) -> dict[str, str]:
    """Display names of runs shown together, by run id; every name differs from the others.

    Each name is the strategy in words, ``learning-rate pilot`` for a pilot's run (always with
    its learning rate), and what tells it apart from the other runs of the same strategy
    among ``records``: foundation model, E0 method, learning rate, training size, seed,
    epochs. Runs that differ in none of these get the time they were launched (and, last, a
    number).
    """
    facts = [_facts(r) for r in records]
    groups: dict[str, list[RunFacts]] = {}
    for f in facts:
        groups.setdefault(f.strategy, []).append(f)
    out: dict[str, str] = {}
    for strategy, fs in groups.items():
        title = strategy_title(strategy)
        mixed = len({f.pilot for f in fs}) > 1
        parts: dict[str, list[str]] = {}
        for f in fs:
            # pilots are told apart among pilots, finals among finals
            peers = [g for g in fs if g.pilot == f.pilot]
            p = [title]
            if f.pilot:
                p.append("learning-rate pilot")
            for key in _DISTINGUISHING:
                values = {getattr(g, key) for g in peers}
                if len(values) > 1 or (key == "lr" and f.pilot):
                    p.append(_fact_text(key, f))
            if mixed and not f.pilot and len(p) == 1:
                p.append(lr_text(f.lr))
            parts[f.id] = p
        texts = {i: " · ".join(p) for i, p in parts.items()}
        days = {datetime.fromtimestamp(f.created).date() for f in fs}
        for f in fs:
            if list(texts.values()).count(texts[f.id]) > 1:
                parts[f.id] = parts[f.id] + [f"launched {_when(f.created, len(days) > 1)}"]
        texts = {i: " · ".join(p) for i, p in parts.items()}
        seen: dict[str, int] = {}
        for f in sorted(fs, key=lambda g: (g.created, g.id)):
            t = texts[f.id]
            if list(texts.values()).count(t) > 1:
                seen[t] = seen.get(t, 0) + 1
                out[f.id] = f"{t} · run {seen[t]}"
            else:
                out[f.id] = t
    return out


def run_label(record: RunRecord | RunFacts,
              siblings: Iterable[RunRecord | RunFacts] = ()) -> str:
    """The human display name of one run among the runs it is shown with.

    Parameters
    ----------
    record
        The run (its record, or its :class:`~mlipft_core.jobs.records.RunFacts`).
    siblings
        The runs shown next to it (it may be among them); what tells ``record`` apart from
        them goes into the name (see :func:`run_labels`).

    Returns
    -------
    str
        E.g. ``"Naive fine-tuning"``, ``"Naive fine-tuning · lr 1e-3 · seed 1"``,
        ``"Naive fine-tuning · learning-rate pilot · lr 1e-4"``.
    """
    f = _facts(record)
    others = [g for g in (_facts(s) for s in siblings) if g.id != f.id]
    return run_labels([f, *others])[f.id]


# ----------------------------------------------------------------------------- E0s, splits
def e0_choice_label(choice: Mapping[str, Any] | None) -> str:
    """A saved E0 choice (``mlipft_core.e0.load_choice``) in words: method, what it was
    fitted on and when it was saved, e.g. ``"estimated E0s, fitted on train.xyz, saved
    14 Mar 10:02"``; none saved: ``"estimated E0s (the default)"``."""
    if not choice:
        return f"{e0_words('estimated')} (the default)"
    text = e0_words(choice.get("method"))
    if choice.get("data"):
        text += f", fitted on {Path(str(choice['data'])).name}"
    try:  # written with the choice, in the same moment
        saved = Path(str(choice["mace_json"])).stat().st_mtime if choice.get("mace_json") \
            else None
    except OSError:
        saved = None
    if saved:
        text += f", saved {_when(saved, True)}"
    return text


_PART_WORDS = {"train": "training", "valid": "validation", "test": "test"}


def split_label(split: Any) -> str:
    """A saved split (``mlipft_core.data.Split``) in words: the dataset and its counts, e.g.
    ``"SN2 X- + CH3Y target (B3LYP/def2-SVPD): 40 training, 5 validation, 5 test
    structures"``."""
    if split is None:
        return DASH
    name = str(split.source)
    train = Path(str(split.file("train")))
    root = sample_data_dir().resolve()
    demo = next((desc for key, (rel, desc) in DEMO_DATASETS.items()
                 if key.endswith("_train") and (root / rel).resolve() == train.resolve()), None)
    if demo is not None:
        name = demo.rsplit(", train", 1)[0] + " (bundled demo)"
    elif split.paths:  # files recorded as they are: the name they were given
        name = name if name and "/" not in name else train.name
    else:  # a split of one file: its name and the seed
        name = f"{Path(name).name}, seed {split.seed}"
    order = [*_PART_WORDS, *(p for p in split.counts if p not in _PART_WORDS)]
    counts = [f"{split.counts[p]} {_PART_WORDS.get(p, p)}" for p in order
              if split.counts.get(p)]
    return f"{name}: {', '.join(counts)} structures" if counts else name


# ----------------------------------------------------------------------------- tables
def dash_missing(table, decimals: Mapping[str, int] | None = None, default: int = 1):
    """A copy of ``table`` (a DataFrame) for display: a number column with a missing value
    becomes text (``decimals[column]`` or ``default`` decimals) with a dash where the value
    is missing, and a missing text cell becomes a dash. Complete number columns stay
    numbers (sortable; format them with :func:`number_formats`)."""
    import pandas as pd  # heavy: the run names above serve without it (tests, scripts)

    def missing(v: Any) -> bool:
        return v is None or (isinstance(v, float) and pd.isna(v))

    out = table.copy()
    for c in out.columns:
        col = out[c]
        if not any(missing(v) for v in col):
            continue
        if col.dtype.kind in "fiu" or all(missing(v) or isinstance(v, (int, float))
                                           for v in col):
            n = (decimals or {}).get(c, default)
            out[c] = [DASH if missing(v) else f"{float(v):.{n}f}" for v in col]
        else:
            out[c] = [DASH if missing(v) else v for v in col]
    return out


def number_formats(table, decimals: Mapping[str, int] | None = None, default: int = 1
                   ) -> dict[str, Any]:
    """Streamlit column configs giving the number columns of ``table`` their decimals."""
    import streamlit as st  # heavy: the run names above serve without it (tests, scripts)

    return {c: st.column_config.NumberColumn(c, format=f"%.{(decimals or {}).get(c, default)}f")
            for c in table.columns if table[c].dtype.kind == "f"}
