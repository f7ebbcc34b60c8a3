"""mlipft: a workbench for fine-tuning MACE foundation models.

The core is importable without Streamlit; the pages and the ``mlipft`` command call it.

Modules
-------
workspace   the workspace folder and saved selections (with file_io: atomic writes,
            checked JSON; helper_files: damaged helper files kept aside and said)
registry    foundation models: official (mace's loaders), demo, local files; inspection
data        reading extxyz, label-key detection, validation findings, summaries, splits
evaluate    batched predictions through mace's data loader and error metrics
demo        the bundled offline demo world and its generator
cli         the ``mlipft`` command
"""

__version__ = "0.1.0"
