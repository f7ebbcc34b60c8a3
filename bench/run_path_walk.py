"""Benchmark: how a run spec walks through the run path, before and after (no training).

A naive run on the demo world (``demo-gfn1-weak``, the SN2 training set, 1 epoch, estimated
E0s) is planned and submitted the way ``mlipft train --executor local`` does it
(``jobs.expand_sweep``, ``jobs.submit``; a tree whose planner takes lists only is driven
the way its command line did it, with ``jobs.parse_list`` first), and the walk is traced
(:func:`sys.setprofile`) from the first call into the package to the moment the local
executor's ``submit`` is reached; there the trace stops and nothing is started (no
dispatcher, no training).

What is counted, over the functions of the *run path* (``mlipft_core.jobs*``,
``mlipft_core.workshop``, ``mlipft_core.e0*``, ``mlipft_core.modelfile``); every other module
(strategies, data, evaluate, registry, workspace, ...) is a service the path calls and is
seen through (a run-path function's caller is the nearest run-path function below it on the
stack, or the driver). Code run while a module is imported is left out, and so are the frames
of comprehensions, generator expressions and lambdas (they belong to the function that holds
them; Python 3.12 no longer gives comprehensions frames of their own):

- modules entered: the run-path modules the walk calls into;
- entries: calls into a module from another one (the driver included), per module;
- climbs back up: returns out of one *part* of the run path into a caller in another part or
  the driver (the parts: the jobs package, the E0 side ``e0*``, the workshop, the model file):
  the control climbing back up to a part it had left, to be sent down again;
- returns between modules: returns from a function of one module into a caller of another
  module (the driver included);
- returns: every return of a run-path function.

``python bench/run_path_walk.py`` measures the tree as committed (``HEAD``, extracted into a
temporary folder with ``git archive``) and the working tree, each in fresh processes: one
untraced walk first (it fills the workspace's prediction cache, as a launch after the E0 page
finds it), then the traced one; ``--tree DIR`` measures one tree (a folder holding
``mlipft_core/``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_PATH = ("mlipft_core.jobs", "mlipft_core.workshop", "mlipft_core.e0",
            "mlipft_core.modelfile")
DRIVER = "(driver)"


def part_of(module: str) -> str | None:
    """The part of the run path ``module`` belongs to, or ``None`` off the run path."""
    for p in RUN_PATH:
        if module == p or module.startswith(p + ".") or module.startswith(p + "_"):
            return p
    return None


def on_run_path(module: str) -> bool:
    return part_of(module) is not None


class Walk:
    """The profile function: the stack of run-path frames and the counts."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, str]] = []  # (frame id, module) of run-path frames
        self.importing: list[int] = []  # module bodies being run (imports)
        self.entries: Counter = Counter()
        self.climbs = 0
        self.between_modules = 0
        self.returns = 0
        self.climbs_into: Counter = Counter()
        self.returns_of: Counter = Counter()  # per function, for --detail
        self.climbs_of: Counter = Counter()
        self.between_of: Counter = Counter()

    def __call__(self, frame, event: str, arg) -> None:
        if event not in ("call", "return"):
            return
        module = frame.f_globals.get("__name__", "")
        if not module.startswith("mlipft_core"):
            return
        code = frame.f_code.co_name
        if code == "<module>":  # an import: not part of the walk
            if event == "call":
                self.importing.append(id(frame))
            elif self.importing and self.importing[-1] == id(frame):
                self.importing.pop()
            return
        if self.importing or not on_run_path(module) or code.startswith("<"):
            return  # a comprehension, generator expression or lambda is its function's
        caller = self.stack[-1][1] if self.stack else DRIVER
        if event == "call":
            if caller != module:
                self.entries[module] += 1
            self.stack.append((id(frame), module))
            return
        if not self.stack or self.stack[-1][0] != id(frame):
            return  # a frame entered before the trace started
        self.stack.pop()
        self.returns += 1
        name = f"{module.removeprefix('mlipft_core.')}.{frame.f_code.co_qualname}"
        self.returns_of[name] += 1
        back = self.stack[-1][1] if self.stack else DRIVER
        if back != module:
            self.between_modules += 1
            self.between_of[f"{name} -> {back.removeprefix('mlipft_core.')}"] += 1
        if back == DRIVER or part_of(back) != part_of(module):
            self.climbs += 1
            self.climbs_into[back] += 1
            self.climbs_of[f"{name} -> {back.removeprefix('mlipft_core.')}"] += 1

    def result(self) -> dict:
        return {"modules_entered": len(self.entries), "climbs_back_up": self.climbs,
                "returns_between_modules": self.between_modules, "returns": self.returns,
                "entries": dict(self.entries.most_common()),
                "climbs_into": dict(self.climbs_into.most_common()),
                "returns_of": dict(self.returns_of.most_common()),
                "climbs_of": dict(self.climbs_of.most_common()),
                "between_of": dict(self.between_of.most_common())}


def walk(tree: Path, trace: bool) -> dict | None:
    """Plan and submit the demo run with the package of ``tree``; the counts when traced."""
    sys.path.insert(0, str(tree))
    import mlipft_core

    assert Path(mlipft_core.__file__).resolve().is_relative_to(tree.resolve()), \
        f"{mlipft_core.__file__} is not the package of {tree}"
    import mlipft_core.workshop  # noqa: F401 - imported by the command line: its rules hold
    from mlipft_core import jobs
    from mlipft_core.demo import demo_paths, isolated_file_for
    from mlipft_core.jobs import local
    from mlipft_core.registry import model_path

    reached: list[int] = []

    def stop_here(self, store, records) -> None:  # the executor: the walk ends here
        sys.setprofile(None)
        reached.append(len(records))

    local.LocalExecutor.submit = stop_here
    demo = demo_paths()
    foundation = str(model_path("demo-gfn1-weak"))
    tracer = Walk()
    if trace:
        sys.setprofile(tracer)
    # as the tree's command line does it: a planner that reads the options' text itself is
    # given the text; an older one is given the lists the command line parsed first
    if "str" in str(inspect.signature(jobs.expand_sweep).parameters["lrs"].annotation):
        lrs = seeds = sizes = None
    else:
        lrs = jobs.parse_list(None, float, "--lrs")
        seeds = jobs.parse_list(None, int, "--seeds")
        sizes = jobs.parse_list(None, int, "--sizes")
    plan = jobs.expand_sweep({"naive": {}}, foundation_model=foundation,
                             train_file=demo["sn2_train"], e0s="estimated",
                             replay_file=demo["replay_pool"],
                             isolated_file=isolated_file_for(demo["sn2_train"]),
                             common={"max_num_epochs": 1}, lrs=lrs, seeds=seeds, sizes=sizes)
    rec = jobs.submit(plan.specs[0], executor="local")
    sys.setprofile(None)
    assert reached == [1] and rec.status == "queued", (reached, rec.status)
    return tracer.result() if trace else None


def measure(tree: Path) -> dict:
    """The counts of one tree: an untraced walk, then the traced one, in fresh processes."""
    with tempfile.TemporaryDirectory(prefix="mlipft-walk-") as tmp:
        env = dict(os.environ, MLIPFT_WORKSPACE=str(Path(tmp) / "workspace"),
                   PYTHONPATH=str(tree))
        env.pop("MLIPFT_RUN_POLICIES", None)
        out = {}
        for trace in (False, True):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--walk", str(tree)]
            cmd += ["--trace"] if trace else []
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900,
                                  cwd=tmp)
            if done.returncode != 0:
                raise SystemExit(f"the walk failed in {tree}:\n{done.stderr[-3000:]}")
            out = json.loads(done.stdout.strip().splitlines()[-1]) if trace else out
        return out


def committed_tree(into: Path, rev: str = "HEAD") -> Path:
    """The package as committed in ``rev`` (default ``HEAD``), with the demo world beside it."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "mlipft_core"],
                             capture_output=True, check=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    tar = into / "head.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    (into / "sample_data").symlink_to(ROOT / "sample_data")
    return into


def show(label: str, r: dict) -> str:
    top = ", ".join(f"{m.removeprefix('mlipft_core.')} {n}" for m, n in r["entries"].items())
    return (f"{label:22s} {r['modules_entered']:3d} modules {r['climbs_back_up']:4d} climbs "
            f"back up {r['returns_between_modules']:4d} returns between modules "
            f"{r['returns']:4d} returns\n{'':22s} entered: {top}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", help="measure only this tree (a folder with mlipft_core/)")
    parser.add_argument("--walk", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--before", default="HEAD",
                        help="the commit measured as 'before' (default: HEAD)")
    parser.add_argument("--after", help="a commit measured as 'after' (default: the working "
                        "tree)")
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args()
    if args.walk:
        result = walk(Path(args.walk), args.trace)
        if result is not None:
            print(json.dumps(result))
        return 0
    if args.tree:
        results = {"tree": measure(Path(args.tree).resolve())}
    else:
        with tempfile.TemporaryDirectory(prefix="mlipft-head-") as tmp:
            before = committed_tree(Path(tmp) / "before", args.before)
            after = committed_tree(Path(tmp) / "after", args.after) if args.after else ROOT
            results = {f"before ({args.before})": measure(before),
                       f"after ({args.after or 'working tree'})": measure(after)}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n".join(show(label, r) for label, r in results.items()))
        if len(results) == 2:
            before, after = results.values()
            print("after / before: " + ", ".join(
                f"{key.replace('_', ' ')} {after[key]}/{before[key]} = "
                f"{after[key] / max(1, before[key]):.2f}"
                for key in ("climbs_back_up", "returns_between_modules", "returns")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
