"""Shared set-up of the page benchmarks: a fresh workspace with the demo world chosen."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def demo_workspace(prefix: str) -> tuple[Path, dict]:
    """A new temporary workspace (``$MLIPFT_WORKSPACE``) in which the strong demo model and the
    bundled SN2 split are chosen, as a user would after the Foundation model and Data pages.
    Returns the temporary folder and the demo paths."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["MLIPFT_WORKSPACE"] = str(tmp / "workspace")

    from mlipft_core.data import register_files_as_split
    from mlipft_core.demo import demo_paths
    from mlipft_core.workspace import Workspace

    demo = demo_paths()
    ws = Workspace()
    split = register_files_as_split(ws, {"train": demo["sn2_train"], "valid": demo["sn2_valid"],
                                         "test": demo["sn2_test"]}, "demo-sn2")
    ws.set(model="demo-gfn1-strong", model_label="Demo strong (GFN1-xTB)", split_id=split.id,
           dataset=demo["sn2_train"],
           dataset_label="SN2 target: X⁻ + CH3Y, B3LYP/def2-SVPD (bundled split)")
    return tmp, demo
