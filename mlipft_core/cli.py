"""The ``mlipft`` command line: argument parsing and printing over the core functions.

Every subcommand prints JSON with ``--json`` and exits non-zero with a one-line message on bad
input. MODEL is a registry name (``mlipft models``) or the path of a ``.model`` file; a path
given on the command line counts as the user's confirmation that the file is trusted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .errors import MlipftError
from .workspace import strict_json

if TYPE_CHECKING:
    from .workspace import Workspace


class Output:
    """What a subcommand prints: JSON ``payload`` with ``--json``, else ``text``."""

    def __init__(self) -> None:
        self.payload: Any = None
        self.text = ""


def _print(args: argparse.Namespace, payload: Any, text: str) -> None:
    args.output.payload, args.output.text = payload, text


def _trusted(model: str) -> bool:
    """Paths typed by the user are trusted by that act; say so on stderr."""
    from .registry import get_spec

    try:
        is_file = get_spec(model) is None and Path(model).expanduser().is_file()
    except (OSError, ValueError):  # a NUL byte: the model's own check says what is wrong
        is_file = False
    if is_file:
        print(f"note: loading local model file {model} (a pickle; use only files you trust)",
              file=sys.stderr)
        return True
    return False


def _workspace_for_writing() -> "Workspace":
    """The workspace, checked to be writable before work that writes into it (runs, their
    model copies, settings), and with a damaged ``settings.json`` said.

    Raises
    ------
    WorkspaceError
        A read-only or full file system, a file where the workspace's folder belongs.
    """
    from .jobs.local import read_settings
    from .workspace import Workspace

    ws = Workspace()
    ws.check_writable()
    read_settings(ws.root)
    return ws


def cmd_models(args: argparse.Namespace) -> int:
    from .registry import expected_path, is_available, list_models

    rows = []
    for spec in list_models():
        d = spec.to_dict()
        d["available_offline"] = is_available(spec)
        d["file"] = str(expected_path(spec))
        rows.append(d)
    lines = [f"{'name':28s} {'source':8s} {'offline':7s} level of theory"]
    lines += [f"{r['name']:28s} {r['source']:8s} {'yes' if r['available_offline'] else 'no':7s} "
              f"{r['level_of_theory'][:60]}" for r in rows]
    _print(args, rows, "\n".join(lines))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from .registry import inspect_model

    info = inspect_model(args.model, trusted=_trusted(args.model))
    d = info.to_dict()
    d["model"] = args.model
    text = (f"{args.model}: {info.model_class}, {info.parameter_count:,} parameters\n"
            f"elements: {' '.join(info.elements)}\nheads: {', '.join(info.heads)}\n"
            f"cutoff {info.cutoff} Å, {info.num_interactions} interactions, "
            f"{info.channels} channels, L={info.max_L}\n"
            + "\n".join(f"E0 [{h}]: " + ", ".join(f"{el} {v:.4f}" for el, v in e.items())
                        for h, e in info.e0s.items()))
    _print(args, d, text)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .data import Finding, detect_keys, read_frames, unknown_key_message, validate
    from .errors import DataError

    payload: dict[str, Any] = {"file": args.data, "n_configs": 0, "keys": None}
    try:
        frames = read_frames(args.data)
    except DataError as exc:
        findings = [Finding(exc.code, "error", str(exc))]
    else:
        named = {"energy": args.energy_key, "forces": args.forces_key,
                 "stress": args.stress_key}
        unknown = {q: msg for q, k in named.items()
                   if k and (msg := unknown_key_message(frames, q, k, args.data))}
        keys = detect_keys(frames, *(None if q in unknown else k for q, k in named.items()))
        for q in unknown:  # not a guess in place of the key the user named
            setattr(keys, q, None)
        elements = cutoff = None
        if args.model:
            from .registry import inspect_model

            info = inspect_model(args.model, trusted=_trusted(args.model))
            elements, cutoff = info.elements, info.cutoff
        findings = [Finding("unknown_key", "error", msg) for msg in unknown.values()]
        findings += [f for f in validate(frames, keys, elements, cutoff=cutoff)
                     if f.code not in {f"missing_{q}" for q in unknown}]
        payload.update(n_configs=len(frames), keys=keys.to_dict())
    payload["findings"] = [f.to_dict() for f in findings]
    payload["ok"] = not any(f.severity == "error" for f in findings)
    text = "\n".join(f"{f.severity:7s} {f.code}: {f.message}" for f in findings) or "no findings"
    _print(args, payload, text)
    return 0 if payload["ok"] else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import BatchSizeError, evaluate_model

    if args.batch_size is not None and args.batch_size < 1:
        raise BatchSizeError(f"--batch-size must be at least 1 structure per batch, not "
                             f"{args.batch_size}")
    res = evaluate_model(args.model, args.data, head=args.head, energy_key=args.energy_key,
                         forces_key=args.forces_key, batch_size=args.batch_size,
                         device=args.device, trusted=_trusted(args.model))
    m = res.metrics.as_dict()
    payload = {"model": args.model, "head": res.head, "data": args.data, **m,
               "per_config_type": {k: v.as_dict() for k, v in res.per_config_type().items()}}

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f}"

    text = (f"{m['n_structures']} structures, head {res.head}\n"
            f"energy RMSE {fmt(m['energy_rmse_mev_per_atom'])} meV/atom, MAE "
            f"{fmt(m['energy_mae_mev_per_atom'])} meV/atom\nforces RMSE "
            f"{fmt(m['forces_rmse_mev_per_a'])} meV/Å, MAE {fmt(m['forces_mae_mev_per_a'])} meV/Å")
    _print(args, payload, text)
    return 0


def cmd_e0(args: argparse.Namespace) -> int:
    from .demo import isolated_file_for
    from .e0 import compute, prepare

    method = args.method
    inputs = prepare(args.data, args.model, head=args.head, trusted=_trusted(args.model),
                     isolated_file=args.isolated_file or isolated_file_for(args.data))
    res = compute(inputs, method, explicit=args.values)
    d = res.to_dict()
    d.update(model=args.model, data=args.data, elements=inputs.elements,
             per_config={"offset_before_ev_per_atom": None if res.offset_before is None
                         else res.offset_before.tolist(),
                         "offset_after_ev_per_atom": None if res.offset_after is None
                         else res.offset_after.tolist()})

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.1f}"

    lines = [f"{method} E0s (eV):"] + [f"  {el:2s} {v:14.6f}" for el, v in res.e0.items()]
    lines.append(f"offset RMSE before {fmt(res.offset_rmse_before_mev_per_atom)} meV/atom, "
                 f"after {fmt(res.offset_rmse_after_mev_per_atom)} meV/atom")
    if res.anchor:
        lines.append(f"undetermined directions from: {res.anchor}")
    lines += [f"warning: {w}" for w in res.warnings]
    lines.append(f"--E0s=\"{res.mace_argument()}\"")
    _print(args, d, "\n".join(lines))
    return 0


def _run_row(rec, prog=None) -> dict[str, Any]:
    spec = rec.spec if isinstance(rec.spec, dict) else {}
    settings = spec.get("settings") if isinstance(spec.get("settings"), dict) else {}
    warnings = spec.get("warnings") if isinstance(spec.get("warnings"), list) else []
    d = {"id": rec.id, "status": rec.status, "strategy": rec.strategy, "name": rec.name,
         "kind": rec.kind, "device": rec.device, "executor": rec.executor,
         "slurm_job_id": rec.slurm_job_id, "host": rec.host, "gpu": rec.gpu,
         "created": rec.created, "started": rec.started, "finished": rec.finished,
         "model_path": rec.model_path, "reason": rec.reason, "metrics": rec.metrics,
         "sweep": rec.sweep, "lr": settings.get("lr"), "train_size": spec.get("train_size"),
         "warnings": [str(w) for w in warnings]}
    if prog is not None:
        d["progress"] = {"epoch": prog.epoch, "max_epochs": prog.max_epochs,
                         "fraction": prog.fraction, "valid": prog.last_valid()}
    return d


def _slurm_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"partition": args.slurm_partition, "time_min": args.slurm_time,
            "cpus": args.slurm_cpus, "gpus": args.slurm_gpus, "mem_gb": args.slurm_mem,
            "extra": args.slurm_extra}


def _plan(args: argparse.Namespace, strategies: list[str], **sweep: Any):
    """The sweep plan of the shared training options (train, tune)."""
    from . import jobs
    from .demo import demo_paths, isolated_file_for
    from .registry import DEMO_MODEL_NAMES, get_spec, model_path

    _workspace_for_writing()
    path = str(model_path(args.model, trusted=_trusted(args.model)))
    replay = args.replay
    spec = get_spec(args.model)
    if replay is None and spec is not None and spec.name in DEMO_MODEL_NAMES:
        replay = demo_paths()["replay_pool"]
    common = {k: v for k, v in {
        "max_num_epochs": args.epochs, "lr": getattr(args, "lr", None),
        "batch_size": args.batch_size,
        "seed": args.seed, "device": args.device, "energy_weight": args.energy_weight,
        "forces_weight": args.forces_weight, "ema": args.ema, "ema_decay": args.ema_decay,
        "default_dtype": args.precision, "lora_rank": args.lora_rank,
        "lora_alpha": args.lora_alpha, "num_samples_pt": args.replay_samples}.items()
        if v is not None}
    return jobs.expand_sweep({s: {} for s in strategies}, foundation_model=path,
                             train_file=args.train, valid_file=args.valid,
                             test_file=args.test, e0s=args.e0, replay_file=replay,
                             isolated_file=args.isolated_file or isolated_file_for(args.train),
                             common=common, **sweep)


def cmd_tune(args: argparse.Namespace) -> int:
    from . import jobs
    from .jobs.records import FINAL
    from .strategies import get_strategy
    from .tune import tune

    get_strategy(args.strategy)
    lrs = jobs.parse_list(args.lrs, float, "--lrs") or None  # default: around the default
    spec = _plan(args, [args.strategy]).specs[0]
    slurm = _slurm_options(args) if args.executor == "slurm" else None

    def report(res) -> None:
        if not args.json:
            done = sum(p.status in FINAL for p in res.results)
            print(f"pilot {res.sweep}: {done}/{len(res.results)} runs ended", file=sys.stderr)

    res = tune(spec, lrs, args.epochs, executor=args.executor, slurm=slurm, progress=report,
               poll=5.0)

    def f(v):
        return "n/a" if v is None else f"{v:.1f}"

    text = "\n".join([f"learning-rate pilot of {res.strategy} ({res.epochs} epochs, sweep "
                      f"{res.sweep})", f"{'lr':>10s} {'valid F (meV/Å)':>16s} "
                      f"{'valid E (meV/atom)':>19s}  status"]
                     + [f"{p.lr:10.2g} {f(p.valid_forces_rmse_mev_per_a):>16s} "
                        f"{f(p.valid_energy_rmse_mev_per_atom):>19s}  {p.status}"
                        + ("  <- best" if p.lr == res.best_lr else "") for p in res.results]
                     + [f"best learning rate: {res.best_lr:g}"])
    _print(args, res.to_dict(), text)
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from . import jobs
    from . import study as studymod
    from .registry import model_path

    def path(v):
        return None if v is None else str(model_path(v, trusted=_trusted(v)))

    _workspace_for_writing()

    given = {"model": path(args.model), "weak_model": path(args.weak_model),
             "train": args.train, "valid": args.valid, "test": args.test,
             "pretrain_test": args.pretrain, "replay": args.replay,
             "isolated_file": args.isolated_file, "short_range_test": args.short_range_test,
             "epochs": args.epochs,
             "pilot_epochs": args.pilot_epochs, "small_size": args.small_size,
             "pilot_lrs": jobs.parse_list(args.lrs, float, "--lrs") or None,
             "strategies": [x.strip() for x in args.strategies.split(",") if x.strip()]
             if args.strategies else None,
             "executor": args.executor,
             "slurm": _slurm_options(args) if args.executor == "slurm" else None}
    if args.model is None:  # the bundled demo world
        inputs = studymod.demo_inputs(**given)
    else:
        missing = [k for k in ("train", "test") if not given[k]]
        if missing:
            raise studymod.StudyError("with --model, give --train and --test too (and "
                                      "--pretrain, --replay for forgetting and replay)")
        from .demo import isolated_file_for, short_range_test_for

        given["isolated_file"] = given["isolated_file"] or isolated_file_for(given["train"])
        given["short_range_test"] = (given["short_range_test"]
                                     or short_range_test_for(given["pretrain_test"]))
        inputs = studymod.StudyInputs(**{k: v for k, v in given.items() if v is not None})

    def report(p) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {p.text}", file=sys.stderr, flush=True)

    if args.no_wait:
        res = studymod.advance(studymod.start(inputs).id)
    else:
        res = studymod.run(inputs, report=report, poll=args.poll)
    lines = [f"study {res.id}: {res.stage}"]
    for f in res.findings:
        verdict = {True: "reproduced", False: "not reproduced", None: "not measured"}[
            f.reproduced]
        lines.append(f"{f.number}. {f.title}: {verdict}\n   {f.summary}")
    _print(args, res.to_dict(), "\n".join(lines))
    return 0 if res.stage in ("done", "pilots", "finals", "analysis") else 1


def cmd_train(args: argparse.Namespace) -> int:
    from . import jobs
    from .strategies import STRATEGIES, StrategyError

    strategies = [s.strip() for s in args.strategy.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise StrategyError(f"unknown strategy {', '.join(unknown) or args.strategy!r}; "
                            f"choose from {', '.join(STRATEGIES)}")
    lrs = jobs.parse_list(args.lrs, float, "--lrs")
    seeds = jobs.parse_list(args.seeds, int, "--seeds")
    sizes = jobs.parse_list(args.sizes, int, "--sizes")
    plan = _plan(args, strategies, lrs=lrs, seeds=seeds, sizes=sizes)
    if args.name:
        if plan.n_runs == 1:
            plan.specs[0].name = args.name
        else:
            for sp in plan.specs:
                sp.name = f"{args.name}-{sp.name}"
    slurm = _slurm_options(args) if args.executor == "slurm" else None
    if plan.n_runs == 1 and not plan.sizes:
        recs = [jobs.submit(plan.specs[0], executor=args.executor, slurm=slurm)]
    else:
        recs = jobs.submit_plan(plan, executor=args.executor, slurm=slurm)
    if args.wait:
        recs = [jobs.wait(r.id) for r in recs]
    rows = [_run_row(r) for r in recs]

    def line(rec) -> str:
        where = rec.executor + (f" job {rec.slurm_job_id}" if rec.slurm_job_id else "")
        return f"{rec.id}: {rec.status} ({where})" + (
            f" -> {rec.model_path}" if rec.model_path else f": {rec.reason}" if rec.reason
            else "")

    warned = list(dict.fromkeys(w for row in rows for w in row["warnings"]))
    _print(args, rows[0] if len(rows) == 1 else rows,
           "\n".join([line(r) for r in recs] + [f"warning: {w}" for w in warned]))
    return 0 if all(r.status != "failed" for r in recs) else 1


def cmd_runs(args: argparse.Namespace) -> int:
    from . import jobs

    rows = [_run_row(r, jobs.progress(r)) for r in jobs.list_runs()]
    text = "\n".join(f"{r['id']:45s} {r['status']:10s} {r['executor']:5s} "
                     f"{r['slurm_job_id'] or '':9s} {r['strategy']}"
                     + (f"  ({r['reason']})" if r["status"] == "unreadable" else "")
                     for r in rows) or "no runs"
    _print(args, rows, text)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from . import jobs

    rec = jobs.cancel(args.run)
    _print(args, _run_row(rec), f"{rec.id}: {rec.status}")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from . import jobs

    from .jobs.local import read_settings, settings_file
    from .workspace import Workspace, set_aside_if_damaged

    slurm = {k: v for k, v in _slurm_options(args).items() if v is not None}
    if args.executor or args.cpu_slots is not None or slurm:
        ws = _workspace_for_writing()
        set_aside_if_damaged(settings_file(ws.root))  # kept, not overwritten
        cur = jobs.save_settings(executor=args.executor, cpu_slots=args.cpu_slots,
                                 slurm=slurm or None)
    else:
        read_settings(Workspace().root)  # a damaged file is said, and the defaults shown
        cur = jobs.load_settings()
    from .jobs.slurm import available

    ok, why = available()
    cur = {**cur, "slurm_available": ok, "slurm_status": why}
    text = (f"default executor: {cur['executor']}\n"
            f"local CPU slots: {cur['local']['cpu_slots'] or 'automatic'}\n"
            f"SLURM: {why}\nSLURM options: " + ", ".join(f"{k}={v}" for k, v in
                                                    cur["slurm"].items() if v not in (None, "")))
    _print(args, cur, text)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare, resolve_models
    from .registry import model_path

    refs = resolve_models(args.models)
    foundation = (str(model_path(args.foundation, trusted=_trusted(args.foundation)))
                  if args.foundation else None)
    rows, _ = compare(refs, args.target, args.pretrain, foundation=foundation)
    payload = [r.to_dict() for r in rows]

    def f(v):
        return "n/a" if v is None else f"{v:.1f}"

    text = "\n".join(
        [f"{'model':30s} {'head':10s} {'target E':>9s} {'target F':>9s} {'pretrain E':>10s} "
         f"{'pretrain F':>10s} {'ratio':>6s}"]
        + [f"{r.name[:30]:30s} {r.head:10s} {f(r.target_energy_rmse_mev_per_atom):>9s} "
           f"{f(r.target_forces_rmse_mev_per_a):>9s} {f(r.pretrain_energy_rmse_mev_per_atom):>10s} "
           f"{f(r.pretrain_forces_rmse_mev_per_a):>10s} "
           f"{'n/a' if r.forgetting_ratio is None else f'{r.forgetting_ratio:.2f}':>6s}"
           for r in rows]
        + ["energies in meV/atom relative to the E0s of each dataset's level of theory "
           "(raw absolute errors: --json, keys ending in _raw); forces in meV/Å"])
    _print(args, payload, text)
    return 0


def cmd_dimer(args: argparse.Namespace) -> int:
    from .probes import dimer_curve

    curve = dimer_curve(args.model, args.pair, head=args.head, trusted=_trusted(args.model))
    payload = {"model": args.model, "pair": args.pair, "head": args.head, **curve}
    text = "\n".join(f"{d:6.3f} {e:12.5f}" for d, e in zip(curve["distances"], curve["energies"]))
    _print(args, payload, text)
    return 0


def cmd_md(args: argparse.Namespace) -> int:
    from .md import MDSettings, check_trajectory_path, read_structure, run_md_for_model

    structure = read_structure(args.structure, args.index)
    settings = MDSettings(ensemble=args.ensemble, temperature_k=args.temperature,
                          timestep_fs=args.timestep, steps=args.steps, seed=args.seed,
                          interval=args.interval)
    settings.check()
    check_trajectory_path(args.trajectory)
    res = run_md_for_model(args.model, structure, settings, head=args.head,
                           trusted=_trusted(args.model), trajectory=args.trajectory,
                           source=args.structure)
    d = res.to_dict()
    text = (f"survived {res.survived_steps}/{res.steps} steps, "
            f"{res.steps_per_second:.1f} steps/s, failure: {res.failure or 'none'}")
    _print(args, d, text)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import demo_paths

    paths = demo_paths()
    text = "\n".join(f"{k}: {v}" for k, v in paths.items())
    _print(args, paths, text)
    return 0


def cmd_workshop(args: argparse.Namespace) -> int:
    from . import workshop as shop_mod
    from .workspace import Workspace

    root = Workspace().root
    if args.action in ("create", "stage"):
        Workspace(root).check_writable()
    if args.action == "create":
        limits = shop_mod.Limits(
            max_active_runs=args.max_runs, max_epochs=args.max_epochs,
            max_run_minutes=args.max_minutes, upload_limit_mb=args.upload_limit_mb)
        slurm = {k: v for k, v in _slurm_options(args).items() if v is not None}
        names = [n.strip() for n in args.names.split(",")] if args.names else None
        if names is None and args.participants is None:
            raise shop_mod.WorkshopError("give --participants N (or --names a,b,c)")
        shop = shop_mod.create(root, names or args.participants, name=args.name or "workshop",
                               base_url=args.url, limits=limits,
                               executor=args.executor or "local", slurm=slurm,
                               stage={"models": args.stage_model or [],
                                      "data": args.stage_data or []})
        payload = {"name": shop.name, "workspace": str(shop.root),
                   "instructor_url": shop.url(shop.instructor_token),
                   "participants": [{"name": p.name, "url": shop.url(p.token),
                                     "workspace": str(shop.workspace_of(p.name).root)}
                                    for p in shop.participants],
                   "limits": shop.limits.__dict__, "executor": shop.executor,
                   "staged": {"models": [str(p) for p in shop.staged_models()],
                              "data": [str(p) for p in shop.staged_data()]}}
        text = (f"workshop {shop.name} in {shop.root}\ninstructor: {payload['instructor_url']}\n"
                + "\n".join(f"{p['name']}: {p['url']}" for p in payload["participants"]))
        _print(args, payload, text)
        return 0
    shop = shop_mod.load(root)
    if shop is None:
        raise shop_mod.WorkshopError(f"no workshop in {root}: create one with "
                                     "'mlipft workshop create --participants N'")
    if args.action == "stage":
        staged = [str(shop.stage(p, "models" if p.endswith((".model", ".pt")) else "data"))
                  for p in args.files]
        _print(args, {"staged": staged}, "\n".join(staged))
        return 0
    if args.action == "board":
        runs = shop_mod.board_runs(shop)
        payload = {"workshop": shop.name,
                   "participants": [p.name for p in shop.participants],
                   "runs": [r.to_dict() for r in runs],
                   "table": [e.to_dict() for e in shop_mod.board_table(runs)],
                   "findings": shop_mod.findings(runs)}
        text = "\n".join(f"{r.participant:10s} {r.strategy:20s} {r.status:10s} "
                         f"F {r.target_forces_rmse_mev_per_a or float('nan'):8.1f} meV/Å  "
                         f"forgetting {r.forgetting_ratio or float('nan'):.2f}" for r in runs)
        _print(args, payload, text or "no runs yet")
        return 0
    # serve
    import subprocess

    from urllib.parse import urlparse

    port = args.port or urlparse(shop.base_url).port or 8501
    cmd = [sys.executable, "-m", "streamlit", "run",
           str(Path(__file__).resolve().parents[1] / "app.py"), "--server.port", str(port),
           "--server.headless", "true", "--server.address", args.address,
           "--server.maxUploadSize", str(max(1, int(shop.limits.upload_limit_mb + 0.999)))]
    print(f"serving workshop {shop.name} on port {port}; instructor link: "
          f"{shop.url(shop.instructor_token)}", file=sys.stderr)
    return subprocess.call(cmd, env=dict(os.environ, MLIPFT_WORKSPACE=str(shop.root)))


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The training inputs and settings shared by ``train`` and ``tune``."""
    p.add_argument("--model", required=True, help="foundation model (registry name or path)")
    p.add_argument("--train", required=True, help="training extxyz")
    p.add_argument("--valid", help="validation extxyz (default: 10%% of the training set)")
    p.add_argument("--test", help="test extxyz")
    p.add_argument("--e0", default="estimated",
                   help="foundation | average | estimated | isolated | a saved E0 choice id | "
                        "JSON or mace dict of values (default: estimated)")
    p.add_argument("--isolated-file",
                   help="extxyz with IsolatedAtom configurations of the reference method: the "
                        "anchor of fitted E0s (default for the demo SN2 data: its B3LYP atoms)")
    p.add_argument("--replay", help="replay file for multihead strategies (default for demo "
                                    "models: the bundled replay pool)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["cpu", "cuda"])
    p.add_argument("--lora-rank", type=int, help="LoRA rank (LoRA strategies)")
    p.add_argument("--lora-alpha", type=float, help="LoRA alpha (LoRA strategies)")
    p.add_argument("--replay-samples", type=int,
                   help="pretraining configurations replayed (multihead strategies)")
    p.add_argument("--energy-weight", type=float)
    p.add_argument("--forces-weight", type=float)
    p.add_argument("--ema", dest="ema", action="store_true", default=None,
                   help="exponential moving average of the weights (default: on)")
    p.add_argument("--no-ema", dest="ema", action="store_false")
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--precision", choices=["float32", "float64"])


def add_executor_options(p: argparse.ArgumentParser,
                         default_help: str = "where runs execute (default: the workspace "
                                             "setting, normally local)") -> None:
    p.add_argument("--executor", choices=["local", "slurm"], help=default_help)
    g = p.add_argument_group("SLURM (with --executor slurm; defaults from mlipft settings)")
    g.add_argument("--slurm-partition", help="partition (default: the cluster's default)")
    g.add_argument("--slurm-time", type=int, help="time limit per run, minutes")
    g.add_argument("--slurm-cpus", type=int, help="CPUs per run")
    g.add_argument("--slurm-gpus", type=int, help="GPUs per run (0: CPU runs)")
    g.add_argument("--slurm-mem", type=float, help="memory per run, GB")
    g.add_argument("--slurm-extra", help="further sbatch options, e.g. '--qos=short'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlipft", description="Fine-tuning workbench for MACE foundation models.")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--json", action="store_true", help="print JSON")
        return p

    add("models", "list the foundation-model registry").set_defaults(func=cmd_models)
    p = add("inspect", "elements, heads, E0s, cutoff and architecture of a model")
    p.add_argument("model", help="registry name or .model path")
    p.set_defaults(func=cmd_inspect)
    for name, fn, help_ in (("validate", cmd_validate, "check a dataset for problems"),
                            ("evaluate", cmd_evaluate, "zero-shot errors of a model on data")):
        p = add(name, help_)
        if name == "evaluate":
            p.add_argument("model", help="registry name or .model path")
        p.add_argument("data", help="extxyz file")
        if name == "validate":
            p.add_argument("--model", help="check element coverage against this model")
        else:
            p.add_argument("--head", help="model head (default: the first)")
            p.add_argument("--batch-size", type=int, default=None,
                           help="structures per batch (default: about 384 atoms per batch)")
            p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                           help="default: cuda when available")
        p.add_argument("--energy-key")
        p.add_argument("--forces-key")
        if name == "validate":
            p.add_argument("--stress-key")
        p.set_defaults(func=fn)
    p = add("e0", "atomic reference energies (E0s) of a training set by one method")
    p.add_argument("data", help="training extxyz file")
    p.add_argument("--model", required=True, help="foundation model (registry name or path)")
    p.add_argument("--head", help="model head (default: the first)")
    p.add_argument("--method", required=True,
                   choices=["foundation", "average", "estimated", "isolated", "explicit"])
    p.add_argument("--values", help="explicit E0s: JSON text or file (keys: symbols or Z)")
    p.add_argument("--isolated-file",
                   help="extxyz with IsolatedAtom configurations of the reference method: used by "
                        "'isolated' and as the anchor of the fitted methods (default for the demo "
                        "data: its bundled isolated atoms)")
    p.set_defaults(func=cmd_e0)
    from .strategies import STRATEGIES

    p = add("train", "queue fine-tuning runs (one, or a sweep)")
    p.add_argument("--strategy", required=True,
                   help="strategy, or several separated by commas: " + ", ".join(STRATEGIES))
    add_training_options(p)
    p.add_argument("--lr", type=float, help="learning rate (default: the strategy's)")
    p.add_argument("--lrs", help="learning rates to sweep, e.g. 1e-3,3e-3,1e-2")
    p.add_argument("--seeds", help="seeds to sweep, e.g. 0,1,2")
    p.add_argument("--sizes", help="training-set sizes for a learning curve, e.g. 10,30,100")
    p.add_argument("--name", help="run name (default: the strategy)")
    p.add_argument("--wait", action="store_true", help="return when the runs have ended")
    add_executor_options(p)
    p.set_defaults(func=cmd_train)
    p = add("tune", "learning-rate pilot: a short sweep on the data, and the best value")
    p.add_argument("--strategy", required=True, help="one of " + ", ".join(STRATEGIES))
    add_training_options(p)
    p.add_argument("--lrs", help="learning rates to try (default: five around the strategy's "
                                 "default, e.g. 1e-4,3e-4,1e-3,3e-3,1e-2 for naive)")
    p.set_defaults(func=cmd_tune)
    add_executor_options(p)
    p = add("study", "the study's comparison on a model and data (default: the demo world): "
                     "learning-rate pilots, every strategy at its tuned rate, the baselines, "
                     "and the six findings")
    p.add_argument("--model", help="foundation model (default: the strong demo model and the "
                                   "demo SN2 data)")
    p.add_argument("--weak-model", help="a weaker foundation model for the FM-quality finding")
    p.add_argument("--train", help="target training extxyz")
    p.add_argument("--valid", help="target validation extxyz")
    p.add_argument("--test", help="target test extxyz")
    p.add_argument("--pretrain", help="held-out pretraining test extxyz (forgetting)")
    p.add_argument("--replay", help="replay file for multihead strategies")
    p.add_argument("--isolated-file", help="isolated-atom energies of the target's reference "
                                           "method (the E0 anchor)")
    p.add_argument("--short-range-test",
                   help="labelled compressed structures held out from pretraining, at the "
                        "foundation model's level of theory (the short-range repulsion probe; "
                        "default with the demo world: its own)")
    p.add_argument("--epochs", type=int, help="epochs of the final runs (default 20)")
    p.add_argument("--pilot-epochs", type=int, help="epochs of each pilot run (default 5)")
    p.add_argument("--lrs", help="pilot learning rates (default: five around each strategy's "
                                 "default)")
    p.add_argument("--small-size", type=int,
                   help="training structures of the scratch-vs-fine-tune pair (default 25)")
    p.add_argument("--strategies", help="strategies to compare (default: all seven)")
    p.add_argument("--no-wait", action="store_true",
                   help="start (or look up) the study and return; run again to resume")
    p.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    add_executor_options(p)
    p.set_defaults(func=cmd_study)
    add("runs", "list runs with status, where they run, and metrics").set_defaults(func=cmd_runs)
    p = add("cancel", "cancel a queued or running run")
    p.add_argument("run", help="run id")
    p.set_defaults(func=cmd_cancel)
    p = add("settings", "show or change the workspace's run settings (default executor, "
                        "local CPU slots, SLURM options)")
    p.add_argument("--cpu-slots", type=int, help="local CPU runs at once")
    add_executor_options(p, default_help="set the default executor")
    p.set_defaults(func=cmd_settings)
    p = add("compare", "target accuracy and forgetting of runs and models side by side")
    p.add_argument("models", nargs="+",
                   help="models: .model file paths, registry names or run ids (finished runs)")
    p.add_argument("--target", required=True, help="target test extxyz")
    p.add_argument("--pretrain", help="held-out pretraining test extxyz (for forgetting)")
    p.add_argument("--foundation", help="reference model of the forgetting ratio (default: "
                                        "the foundation model of the first run)")
    p.set_defaults(func=cmd_compare)
    p = add("dimer", "energy of an A-B dimer against distance")
    p.add_argument("model", help="registry name or .model path")
    p.add_argument("--pair", required=True, help="element pair, e.g. C-H")
    p.add_argument("--head", help="model head (default: the first)")
    p.set_defaults(func=cmd_dimer)
    p = add("md", "molecular dynamics with a model: stability and RDFs")
    p.add_argument("model", help="registry name or .model path")
    p.add_argument("structure", help="structure file (extxyz or any ASE format)")
    p.add_argument("--index", type=int, default=0, help="which structure of the file")
    p.add_argument("--head", help="model head (default: the first)")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--temperature", type=float, required=True, help="K")
    p.add_argument("--timestep", type=float, required=True, help="fs")
    p.add_argument("--ensemble", choices=["langevin", "bussi", "nve"], default="langevin")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--interval", type=int, default=10, help="steps between recorded frames")
    p.add_argument("--trajectory", help="write the recorded frames to this extxyz file")
    p.set_defaults(func=cmd_md)
    p = add("workshop", "many participants on one server: create, stage files, serve, board")
    p.add_argument("action", choices=["create", "stage", "serve", "board"])
    p.add_argument("files", nargs="*", help="for 'stage': model (.model) or data (.xyz) files")
    p.add_argument("--participants", type=int, help="number of participants (create)")
    p.add_argument("--names", help="participant names instead of p01, p02, ... (create)")
    p.add_argument("--name", help="workshop name (create)")
    p.add_argument("--url", default="http://localhost:8501",
                   help="the address participants open, e.g. http://gpu-server:8501 (create)")
    p.add_argument("--max-runs", type=int, default=4,
                   help="queued + running runs per participant (create)")
    p.add_argument("--max-epochs", type=int, default=50, help="epoch cap per run (create)")
    p.add_argument("--max-minutes", type=float, default=30.0,
                   help="wall-time cap per run, minutes (create)")
    p.add_argument("--upload-limit-mb", type=float, default=50.0, help="upload size limit")
    p.add_argument("--stage-model", action="append", help="pre-stage a model file (create)")
    p.add_argument("--stage-data", action="append", help="pre-stage a dataset (create)")
    p.add_argument("--port", type=int, help="port to serve on (serve)")
    p.add_argument("--address", default="0.0.0.0", help="address to serve on (serve)")
    add_executor_options(p, default_help="executor of every participant's runs (create)")
    p.set_defaults(func=cmd_workshop)
    p = add("demo", "the bundled demo world")
    p.add_argument("what", choices=["paths"])
    p.set_defaults(func=cmd_demo)
    return parser


#: options whose value is itself a list of options (``--slurm-extra "--qos=short"``)
_OPTION_VALUED = ("--slurm-extra",)


def _join_option_values(argv: Sequence[str]) -> list[str]:
    """``--slurm-extra "--qos=short"`` as ``--slurm-extra=--qos=short``: argparse would take
    a value that starts with ``--`` for an option of its own."""
    out: list[str] = []
    words = list(argv)
    i = 0
    while i < len(words):
        if words[i] in _OPTION_VALUED and i + 1 < len(words):
            out.append(f"{words[i]}={words[i + 1]}")
            i += 2
        else:
            out.append(words[i])
            i += 1
    return out


def unexpected_message(exc: BaseException) -> str:
    """The one-line message for an error nothing foresaw: in words where the kind of error
    can be said (a file-system fault, a full disk, memory), else its own message."""
    from .errors import model_write_message, os_error_message
    from .workspace import default_root

    if isinstance(exc, OSError):
        return os_error_message(exc)
    text = str(exc).strip()
    if isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in text
                                          or "inline_container" in text):
        return model_write_message(default_root())
    if isinstance(exc, MemoryError):
        return "this machine ran out of memory: use smaller inputs or a smaller batch size"
    if isinstance(exc, RecursionError):
        return "an input nests lists or objects too deeply to be read"
    if isinstance(exc, UnicodeDecodeError):
        return "a file that should hold text is not UTF-8 text"
    first = text.splitlines()[0][:300] if text else ""
    return (f"an unexpected failure: {first}" if first else
            f"an unexpected failure ({type(exc).__name__})")


def _print_notices() -> None:
    """The notices of this command (damaged helper files that were ignored), on stderr."""
    from .workspace import take_notices

    for message in take_notices():
        print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    import contextlib
    import warnings

    parser = build_parser()
    args = parser.parse_args(_join_option_values(sys.argv[1:] if argv is None else argv))
    args.output = Output()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        # libraries print progress to stdout; keep stdout for the result alone
        with contextlib.redirect_stdout(sys.stderr):
            code = int(args.func(args))
        _print_notices()
        if args.json:
            print(json.dumps(strict_json(args.output.payload), indent=2, default=str,
                             allow_nan=False))
        else:
            print(args.output.text)
        return code
    except MlipftError as exc:
        _print_notices()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except Exception as exc:  # anything unforeseen: still one line, details on request
        if os.environ.get("MLIPFT_DEBUG"):
            raise
        _print_notices()
        message = unexpected_message(exc)
        if not _is_file_system_fault(exc):  # those say what to do; the rest may need details
            message += " (set MLIPFT_DEBUG=1 for details)"
        print(f"error: {message}", file=sys.stderr)
        return 2


def _is_file_system_fault(exc: BaseException) -> bool:
    """A fault of the file system (read-only, full, a file in the way, ...), said in words
    with a remedy by :func:`unexpected_message`."""
    from .errors import os_error_words

    if isinstance(exc, OSError):
        return os_error_words(exc) is not None
    return isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in str(exc)
                                              or "inline_container" in str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
