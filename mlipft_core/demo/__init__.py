"""The bundled offline demo world (``sample_data/``) and the script that generates it."""

from .paths import (
    DEMO_DATASETS,
    DEMO_MODEL_NAMES,
    collapse_budgets,
    demo_paths,
    isolated_file_for,
    sample_data_dir,
    short_range_test_for,
)

__all__ = ["DEMO_DATASETS", "DEMO_MODEL_NAMES", "collapse_budgets", "demo_paths",
           "isolated_file_for",
           "sample_data_dir", "short_range_test_for"]
