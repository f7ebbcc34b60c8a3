"""``mlipft models`` and ``mlipft inspect``: the foundation-model registry and one model."""

from __future__ import annotations

import argparse

from ..actions import model_table
from ..registry import inspect_model
from ._options import AddFn
from ._output import emit, trusted


def add_models(add: AddFn) -> None:
    """``mlipft models``."""
    add("models", "list the foundation-model registry").set_defaults(func=cmd_models)


def add_inspect(add: AddFn) -> None:
    """``mlipft inspect MODEL``."""
    p = add("inspect", "elements, heads, E0s, cutoff and architecture of a model")
    p.add_argument("model", help="registry name or .model path")
    p.set_defaults(func=cmd_inspect)


def cmd_models(args: argparse.Namespace) -> int:
    """The registry, with which models load without a download."""
    rows = model_table()
    lines = [f"{'name':28s} {'source':8s} {'offline':7s} level of theory"]
    lines += [f"{r['name']:28s} {r['source']:8s} {'yes' if r['available_offline'] else 'no':7s} "
              f"{r['level_of_theory'][:60]}" for r in rows]
    emit(args, rows, "\n".join(lines))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """Elements, heads, E0s, cutoff and architecture of a model."""
    info = inspect_model(args.model, trusted=trusted(args.model))
    d = info.to_dict()
    d["model"] = args.model
    text = (f"{args.model}: {info.model_class}, {info.parameter_count:,} parameters\n"
            f"elements: {' '.join(info.elements)}\nheads: {', '.join(info.heads)}\n"
            f"cutoff {info.cutoff} Å, {info.num_interactions} interactions, "
            f"{info.channels} channels, L={info.max_L}\n"
            + "\n".join(f"E0 [{h}]: " + ", ".join(f"{el} {v:.4f}" for el, v in e.items())
                        for h, e in info.e0s.items()))
    emit(args, d, text)
    return 0
