"""What a finding is made of, what it reads, and the words findings share.

A :class:`Finding` is the typed result of one finding: its verdict, the numbers the verdict
is computed from (``numbers``), its table, its plots (:class:`Chart`) and further tables
(:class:`Table`), and its prose. It reads what the analysis measured from one
:class:`Evidence`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ..strategies import STRATEGIES

if TYPE_CHECKING:  # types only: the study and the comparison import nothing from here
    from ..compare import ComparisonRow
    from ..study import Study


@dataclass
class Chart:
    """One plot of a finding, drawn by its ``kind``.

    - ``"bar"``: ``series`` maps each bar's label to its value, in order;
    - ``"grouped_bar"``: ``series`` maps each group to its bars (label -> value); ``log``: a
      logarithmic value axis;
    - ``"learning_rates"``: ``series`` maps each line to ``[learning rates, errors]``;
    - ``"dimers"``: ``series`` maps each panel (an element pair) to its lines (label ->
      ``[distances, energies]``); ``pick`` names the choice between the panels, ``first`` is
      the panel shown first, and :meth:`panel_title` the title of each.

    ``below_table``: drawn after the finding's table rather than before it.
    """

    name: str                          # stable within the study: the plot's file name
    kind: str
    title: str
    ylabel: str = ""
    series: dict[str, Any] = field(default_factory=dict)
    log: bool = False
    pick: str = ""
    first: str = ""
    below_table: bool = False

    def panel_title(self, panel: str) -> str:
        """The title of one panel (``title`` names it ``{panel}``)."""
        return self.title.replace("{panel}", panel)


@dataclass
class Table:
    """A further table of a finding, shown after its plots."""

    name: str
    caption: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    #: decimals of the number columns that do not take one
    digits: dict[str, int] = field(default_factory=dict)


@dataclass
class Finding:
    """One of the study's findings as this data shows it.

    ``key`` names it for good (``"e0"``, ``"scratch"``, ...); ``number`` is its place in the
    study's list. ``numbers`` are the quantities its verdict is computed from, by name (each
    finding's module documents the rule); ``table`` its main table, with ``columns`` in
    reading order (a JSON object does not keep it) and ``digits`` the decimals of the number
    columns that do not take one; ``charts`` and ``tables`` what a page draws of it.
    """

    number: int
    title: str
    claim: str
    reproduced: bool | None           # None: could not be measured
    summary: str
    teaching: str
    table: list[dict[str, Any]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    key: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)
    charts: list[Chart] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    digits: dict[str, int] = field(default_factory=dict)
    #: a finding with more than two outcomes: which one (the short-range finding's
    #: ``"lost"``, ``"softened"`` or ``"kept"``); empty for the others
    level: str = ""
    #: the random structure search per model head label: ``structures``, ``collapsed``,
    #: ``median_closest`` (the short-range finding; empty for the others)
    collapses: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.columns and self.table:
            self.columns = list(self.table[0])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Finding:
        """A finding as stored; fields of another version are left aside."""
        f = cls(**known(cls, d))
        f.charts = [c if isinstance(c, Chart) else Chart(**known(Chart, c)) for c in f.charts]
        f.tables = [t if isinstance(t, Table) else Table(**known(Table, t)) for t in f.tables]
        return f


def known(cls: type, d: Any) -> dict[str, Any]:
    """The items of ``d`` that are fields of the dataclass ``cls``."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in (d or {}).items() if k in names}


@dataclass
class Evidence:
    """What the analysis measured, which every finding reads.

    ``rows``: the comparison of every model head on the test sets (later rows of the same
    model and head replace earlier ones); ``walls``: per element pair, the dimer-wall verdict
    of each model head (:class:`~mlipft_core.analysis.RepulsionVerdict` as a dict, by its
    label); ``has_reference``: whether reference dimer curves judged the walls;
    ``short_range``: the short-range probe of each model head (None: not probed), or the
    reason it failed in ``probe_problem``; ``search``: the random structure search of each
    model head (:class:`~mlipft_core.probes.SearchResult` as a dict with its ``model``
    label), or the reason it failed in ``search_problem``.
    """

    study: Study
    rows: list[ComparisonRow] = field(default_factory=list)
    walls: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    pairs: list[str] = field(default_factory=list)
    has_reference: bool = True
    short_range: list[dict[str, Any]] | None = None
    probe_problem: str = ""
    #: the random structure search of each model head (None: not searched), the reason it
    #: failed, and the elements searched
    search: list[dict[str, Any]] | None = None
    search_problem: str = ""
    search_elements: list[str] = field(default_factory=list)

    def _heads(self, name: str) -> dict[str, ComparisonRow]:
        heads: dict[str, ComparisonRow] = {}
        for r in self.rows:
            if r.name == name:
                heads[r.head] = r
        return heads

    def target_row(self, name: str) -> ComparisonRow | None:
        """Model ``name``'s row on the target: its head other than the pretraining one."""
        return next((r for h, r in self._heads(name).items() if h != "pt_head"), None)

    def pt_row(self, name: str) -> ComparisonRow | None:
        """Model ``name``'s row on the pretraining structures: its pretraining head, or its
        only one."""
        heads = self._heads(name)
        return heads.get("pt_head") or next(iter(heads.values()), None)

    def run_ids(self, *roles: str) -> list[str]:
        """The final runs of ``roles`` the study has."""
        return [self.study.finals[r] for r in roles if r in self.study.finals]


# ----------------------------------------------------------------------------- words
def fmt(v: float | None, unit: str = "", digits: int = 1) -> str:
    """A number with its unit, ``"n/a"`` when there is none."""
    return "n/a" if v is None else f"{v:,.{digits}f}{(' ' + unit) if unit else ''}"


def lr_text(v: float | None) -> str:
    """A learning rate in a table, a dash when the pilot found none."""
    return "—" if v is None else f"{v:g}"


def strategy_title(s: str) -> str:
    """A strategy's title (:data:`~mlipft_core.strategies.STRATEGIES`), else its key."""
    return STRATEGIES[s].title if s in STRATEGIES else s


def head_name(head: str | None, multihead: bool = True) -> str:
    """How a head reads in a table: a replay model's heads by their role (mace names the
    fine-tuning head ``Default`` and the replayed one ``pt_head``); any other by its name."""
    if not multihead:
        return "the only head"
    return {"pt_head": "pretraining head", "Default": "target head"}.get(head or "",
                                                                       f"head {head}")


def display_name(label: str, *, plot: bool = False) -> str:
    """A model-head label in words: ``"multihead-replay [pt_head]"`` ->
    ``"Multihead replay, pretraining head"`` (``plot``: ``"Multihead replay [pretraining
    head]"``, the form plots group colours by). Reference curves keep their label."""
    role, _, head = label.partition(" [")
    head = head.rstrip("]")
    if role == "reference":
        return label
    name = "Foundation model" if role == "foundation" else strategy_title(role)
    if not head:
        return name
    return f"{name} [{head_name(head)}]" if plot else f"{name}, {head_name(head)}"


def role_title(role: str, small_size: int | None = None) -> str:
    """A study's model by its role, in words: ``"naive-average-e0"`` -> ``"Naive fine-tuning
    with 'average' E0s"``."""
    small = f" on {small_size} structures" if small_size else " on the small training set"
    return {"foundation": "Foundation model", "weak foundation": "Weaker foundation model",
            "naive-average-e0": "Naive fine-tuning with 'average' E0s",
            "naive-weak": "Naive fine-tuning of the weaker foundation model",
            "naive-small": "Naive fine-tuning" + small,
            "scratch-small": "Training from scratch" + small}.get(role) or strategy_title(role)


def bar_series(table: list[dict[str, Any]], label: str, value: str) -> dict[str, Any]:
    """A bar chart's series from two columns of a table: label -> value, in row order."""
    return {str(row.get(label)): row.get(value) for row in table}
