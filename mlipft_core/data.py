"""Datasets: reading extxyz, detecting label keys, validation findings, summaries and splits.

This module is the public face of the dataset code; each part lives in its own module:

- :mod:`mlipft_core.extxyz`: reading extxyz files one configuration at a time, with messages
  that name the file and the line, and writing them;
- :mod:`mlipft_core.label_keys`: which keys hold energies, forces and stresses, their
  values, copies under mace's canonical keys, and :func:`is_isolated_atom`;
- :mod:`mlipft_core.structure_checks`: what makes a structure unusable for any model
  (overlaps, degenerate or huge cells, elements a model does not cover);
- :mod:`mlipft_core.validation`: findings with stable codes and the one check of a
  configuration that training and evaluation share;
- :mod:`mlipft_core.splits`: datasets, their summaries, and seeded splits in the workspace.

Split files are written with the canonical keys that mace reads by default
(``REF_energy``, ``REF_forces``, ``REF_stress``), whatever keys the source file used, so
later steps (E0 fits, training, evaluation) need no key options.
"""

from __future__ import annotations

from .extxyz import (
    check_file,
    iter_frames,
    iter_numbered_frames,
    read_frames,
    write_extxyz,
)
from .label_keys import (
    CALC,
    CANONICAL,
    ISOLATED_ATOM,
    STRESS_SIZES,
    LabelKeys,
    canonical_frames,
    check_named_keys,
    detect_keys,
    file_label_keys,
    get_label,
    is_isolated_atom,
    key_candidates,
    mace_key_options,
    present_keys,
    stress_3x3,
    unknown_key_message,
)
from .splits import (
    Dataset,
    DatasetSummary,
    Split,
    load_dataset,
    load_split,
    make_split,
    register_files_as_split,
    split_indices,
    summarize,
)
from .structure_checks import (
    MAX_NEIGHBOUR_BINS,
    MIN_CELL_FLATNESS,
    MIN_CELL_LENGTH,
    NO_ATOMS,
    NOMINAL_CUTOFF,
    OVERLAP_DISTANCE,
    cell_problem,
    closest_overlap,
    huge_cell_problem,
    neighbour_bins,
    structure_problem,
)
from .validation import (
    FINDING_CODES,
    NO_ENERGY_MESSAGE,
    Finding,
    configuration_errors,
    configuration_text,
    first_error,
    validate,
)

__all__ = [
    "CALC", "CANONICAL", "FINDING_CODES", "ISOLATED_ATOM", "MAX_NEIGHBOUR_BINS",
    "MIN_CELL_FLATNESS", "MIN_CELL_LENGTH", "NOMINAL_CUTOFF", "NO_ATOMS", "NO_ENERGY_MESSAGE",
    "OVERLAP_DISTANCE", "STRESS_SIZES", "Dataset", "DatasetSummary", "Finding", "LabelKeys",
    "Split", "canonical_frames", "cell_problem", "check_file", "check_named_keys",
    "closest_overlap", "configuration_errors", "configuration_text", "detect_keys",
    "file_label_keys", "first_error", "get_label", "huge_cell_problem", "is_isolated_atom",
    "iter_frames", "iter_numbered_frames", "key_candidates", "load_dataset", "load_split",
    "mace_key_options", "make_split", "neighbour_bins", "present_keys", "read_frames",
    "register_files_as_split", "split_indices", "stress_3x3", "structure_problem",
    "summarize", "unknown_key_message", "validate", "write_extxyz",
]
