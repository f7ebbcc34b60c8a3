"""``mlipft models``, ``mlipft inspect`` and ``mlipft replay``: the foundation-model registry,
one model, and mace's replay sets of the official models."""

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


def add_replay(add: AddFn) -> None:
    """``mlipft replay list`` and ``mlipft replay fetch MODEL``."""
    p = add("replay", "mace's replay sets of the official models: which model replays which, "
                      "and fetching one into mace's cache")
    sub = p.add_subparsers(dest="replay_command", required=True)
    lst = sub.add_parser("list", help="every replay set, where mace reads it, whether cached")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=cmd_replay_list)
    fetch = sub.add_parser("fetch", help="download the replay set of a model (or a set by "
                                         "name: mp, omat, matpes_pbe, matpes_r2scan) into "
                                         "mace's cache, once")
    fetch.add_argument("model", help="official registry name, or a set's name")
    fetch.add_argument("--foundation-head", help="the head a multi-head model is fine-tuned "
                                                 "from (its replay set follows it)")
    fetch.add_argument("--json", action="store_true", help="print JSON")
    fetch.set_defaults(func=cmd_replay_fetch)
    perturb = sub.add_parser("perturb", help="replay structures for a model without a replay "
                                             "set: perturbed copies of the training "
                                             "structures, unlabelled, for pseudolabelled replay")
    perturb.add_argument("train", help="training extxyz")
    perturb.add_argument("--samples", type=int, default=200, help="copies (default 200)")
    perturb.add_argument("--rattle", type=float, default=0.05,
                         help="standard deviation of the displacement, Å (default 0.05)")
    perturb.add_argument("--seed", type=int, default=0)
    perturb.add_argument("--json", action="store_true", help="print JSON")
    perturb.set_defaults(func=cmd_replay_perturb)


def cmd_replay_list(args: argparse.Namespace) -> int:
    """mace's replay sets, and which official models replay each."""
    from ..registry import list_models
    from ..replay_sets import REPLAY_SETS, replay_set_for

    models = [m.name for m in list_models() if m.source == "official"]
    rows = [{"name": rs.name, "title": rs.title, "level_of_theory": rs.level_of_theory,
             "url": rs.url, "path": str(rs.path()), "cached": rs.is_cached(),
             "models": [m for m in models if (found := replay_set_for(m)) is not None
                        and found.name == rs.name]} for rs in REPLAY_SETS.values()]
    none = [m for m in models if replay_set_for(m) is None]
    lines = [f"{r['name']:14s} {'cached' if r['cached'] else 'not cached':10s} {r['path']}\n"
             f"{'':14s} {r['title']}; replayed by {', '.join(r['models'])}" for r in rows]
    lines.append(f"no replay set (pseudolabelled replay on your own structures): "
                 f"{', '.join(none)}")
    emit(args, {"sets": rows, "models_without_set": none}, "\n".join(lines))
    return 0


def cmd_replay_fetch(args: argparse.Namespace) -> int:
    """Put a replay set into mace's cache (nothing downloads when it is there)."""
    from ..replay_sets import REPLAY_SETS, fetch, replay_set_for

    rs = REPLAY_SETS.get(args.model) or replay_set_for(args.model, args.foundation_head)
    was = rs is not None and rs.is_cached()
    path = fetch(args.model, args.foundation_head)
    rs = rs or next(s for s in REPLAY_SETS.values() if s.path() == path)
    emit(args, {"name": rs.name, "path": str(path), "downloaded": not was},
         f"{rs.title}: {path}" + (" (already cached)" if was else " (downloaded)"))
    return 0


def cmd_replay_perturb(args: argparse.Namespace) -> int:
    """Perturbed, unlabelled copies of the training structures (pseudolabelled replay)."""
    from ..replay_sets import perturbed_structures

    path = perturbed_structures(args.train, n=args.samples, rattle=args.rattle, seed=args.seed)
    emit(args, {"path": str(path), "structures": args.samples, "rattle_a": args.rattle},
         f"{path}\nuse it with --strategy pseudolabel-replay --replay {path}")
    return 0


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
