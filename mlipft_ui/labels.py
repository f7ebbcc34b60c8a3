"""Human names for the codes the core uses (validation findings, error codes)."""

from __future__ import annotations

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
