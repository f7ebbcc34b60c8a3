"""Atomic reference energies (E0s): every method mace offers, with diagnostics.

A MACE model predicts ``E = sum_i E0[Z_i] + E_interaction``. When the reference method of the
target data differs from the foundation model's (another functional, xTB, CCSD(T)), absolute
energies disagree by eV to keV per atom; the E0s must absorb that offset.

Methods (the names of ``mace_run_train --E0s``):

``foundation``
    the model's own E0s (first head when it has several);
``average``
    least squares of total reference energy on composition, ignoring the model;
``estimated``
    model-aware re-estimation: foundation E0s plus a least-squares correction fitted to
    ``E_ref - E_foundation`` (what ``mace_run_train --E0s estimated`` does);
``isolated``
    energies of ``IsolatedAtom`` configurations in the data (or a separate file);
``explicit``
    values given by the user (a dict or a JSON file).

For each method the module reports per-element values, the rank and condition number of the
least-squares problem, the per-configuration offset ``(E_ref - E_model) / N`` before and after
replacing the model's E0s, its RMSE, and which elements the data cannot determine.

This module is the E0 side's public face; the work is done in

- :mod:`.e0_fit`: the methods, the fit and its diagnostics (:func:`compute`);
- :mod:`.e0_inputs`: the training data read and evaluated once (:func:`prepare`), and what
  an isolated atom is (:func:`is_isolated_atom`);
- :mod:`.e0_choices`: the verdict and the choices saved in a workspace;
- :mod:`.e0_for_runs`: the E0s of a run spec, resolved and checked.

Rank-deficient fits and the physical anchor
-------------------------------------------
When the compositions of the training data obey a linear relation (in the SN2 demo every
configuration has ``n_H = 3 n_C``), least squares determines only some combinations of E0s;
any value along the undetermined directions fits the data equally well. Those directions are
not harmless: they set the asymptote of every dimer curve and the energy of every structure
whose composition lies outside the family. The fit methods therefore take the undetermined
directions from a *prior* and fit only what the data determines::

    E0 = prior + pinv(A) (b - A prior)

which leaves the residual of the fit exactly as it is. The prior, in order of preference:

1. the isolated-atom energies of the reference method (``IsolatedAtom`` configurations in the
   data or ``isolated_file``), the physical zero of the E0 decomposition (``anchor =
   "isolated atoms"``);
2. for ``estimated``, the foundation model's own E0s, i.e. the foundation E0s change as little
   as possible (``anchor = "foundation E0s"``); across levels of theory that split is arbitrary,
   so the result carries a warning naming what the data cannot determine and what to supply;
3. for ``average``, zero (the minimum-norm solution, ``anchor = "none"``), with the same warning.
"""

from .e0_choices import (
                         Verdict,
                         assess,
                         choice_file,
                         choice_problem,
                         load_choice,
                         read_choice,
                         save_choice,
                         verdict,
)
from .e0_fit import (
                         ANCHOR_FOUNDATION,
                         ANCHOR_ISOLATED,
                         ANCHOR_NONE,
                         FIT_METHODS,
                         LEVEL_MISMATCH_EV_PER_ATOM,
                         METHODS,
                         MIN_FIT_CONFIGS,
                         E0Error,
                         E0Inputs,
                         E0Result,
                         FitDiagnostics,
                         anchored_lstsq,
                         composition_matrix,
                         composition_relations,
                         compute,
                         compute_all,
                         diagnose,
                         format_energy_per_atom,
                         is_choice_id,
                         level_offset_ev_per_atom,
                         levels_differ,
                         load_explicit,
                         mace_e0s_argument,
                         relative_per_atom,
)
from .e0_inputs import (
                         cached_inputs,
                         is_isolated_atom,
                         isolated_energies,
                         isolated_mask,
                         prepare,
                         series_energies,
)

__all__ = ["ANCHOR_FOUNDATION", "ANCHOR_ISOLATED", "ANCHOR_NONE", "FIT_METHODS",
           "LEVEL_MISMATCH_EV_PER_ATOM", "level_offset_ev_per_atom", "levels_differ",
           "relative_per_atom", "METHODS", "MIN_FIT_CONFIGS", "E0Error", "E0Inputs",
           "E0Result", "FitDiagnostics", "Verdict", "anchored_lstsq", "assess",
           "cached_inputs", "choice_file", "choice_problem", "composition_matrix",
           "composition_relations", "compute", "compute_all", "diagnose",
           "format_energy_per_atom", "is_choice_id", "is_isolated_atom", "isolated_energies",
           "isolated_mask",
           "load_choice", "load_explicit", "mace_e0s_argument", "prepare", "read_choice",
           "save_choice", "series_energies", "verdict"]
