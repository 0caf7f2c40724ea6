"""What one evaluation protocol hands to the report writer: goals, tables and figures.

Every protocol in :mod:`cl.evaluation` returns a :class:`ProtocolResult`; ``cl report``
turns each into ``docs/eval/<name>.md`` with its PNG plots, so protocols never format
Markdown or pick file paths themselves.

Example:
    >>> r = ProtocolResult("demo", "A demo protocol", quick=True)
    >>> r.goals.append(Goal("average accuracy", value=0.93, target=0.92))
    >>> r.tables.append(Table("scores", ["method", "acc"], [["ours", 0.93]]))
    >>> r.goals[0].met, r.tables[0].columns
    (True, ['method', 'acc'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Figure", "Goal", "ProtocolResult", "Table"]


@dataclass(frozen=True)
class Goal:
    """A number the issue names, measured: ``met`` when ``value`` is on the right side of ``target``."""

    name: str
    value: float
    target: float
    higher_is_better: bool = True

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target


@dataclass(frozen=True)
class Table:
    """A titled table: ``rows`` are lists in ``columns`` order (floats are rounded when written)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class Figure:
    """A matplotlib figure to save as ``<stem>.png`` beside the protocol's Markdown."""

    stem: str
    caption: str
    figure: Any  # matplotlib.figure.Figure (kept Any so importing this module needs no matplotlib)


@dataclass
class ProtocolResult:
    """The outcome of one protocol run.

    Attributes:
        name: File-safe name (``split_digits``): the report is ``docs/eval/<name>.md``.
        title: Heading of the report.
        quick: Whether this was the quick (test-suite) size rather than the full one.
        summary: A few sentences on what was run and what it shows.
        goals: The issue's numbered goals, measured.
        tables: Result tables, in report order.
        figures: Plots, in report order.
        settings: Seeds and sizes, written under the tables so a run can be repeated.
    """

    name: str
    title: str
    quick: bool
    summary: str = ""
    goals: list[Goal] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
