"""Write protocol results as Markdown with PNG plots (``docs/eval/``), and an index of every goal.

Each result becomes ``<name>.md`` (summary, goals, tables, figures, settings), its figures
``<name>-<stem>.png`` and ``<name>.json`` (the goals and headline tables as data), so the
index ``README.md`` can be rebuilt from whatever protocols have been run, in any order.

Example:
    >>> import tempfile
    >>> from cl.evaluation.result import Goal, ProtocolResult, Table
    >>> r = ProtocolResult("demo", "Demo", quick=True, summary="A check.")
    >>> r.goals.append(Goal("accuracy", 0.91234, 0.9))
    >>> r.tables.append(Table("scores", ["method", "acc"], [["ours", 0.91234]]))
    >>> out = Path(tempfile.mkdtemp())
    >>> md = write_report(r, out).read_text()
    >>> "| accuracy | 0.912 | ≥ 0.900 | met |" in md, "| ours | 0.912 |" in md
    (True, True)
    >>> "| [Demo](demo.md) (quick) | accuracy | 0.912 | ≥ 0.900 | met |" in write_index(out).read_text()
    True
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from cl.evaluation.result import Goal, ProtocolResult

__all__ = ["format_value", "write_index", "write_report"]


def format_value(value: Any) -> str:
    """Numbers to 3 decimals (NaN as "—"), everything else as text.

    >>> format_value(0.123456), format_value(12), format_value(float("nan")), format_value("x|y")
    ('0.123', '12', '—', 'x\\\\|y')
    """
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value).replace("|", "\\|")


def _table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(v) for v in row) + " |" for row in rows]
    return lines


def _goal_row(goal: Goal) -> list[Any]:
    sign = "≥" if goal.higher_is_better else "≤"
    return [goal.name, goal.value, f"{sign} {format_value(goal.target)}", "met" if goal.met else "**not met**"]


def write_report(result: ProtocolResult, out: Path, written_by: str = "cl eval") -> Path:
    """Write ``<out>/<name>.md``, its PNGs and ``<name>.json``; returns the Markdown's path."""
    out.mkdir(parents=True, exist_ok=True)
    size = "quick (test-suite) size" if result.quick else "full size"
    size = "" if written_by != "cl eval" else f", {size}"
    lines = [f"# {result.title}", "", f"_Written by `{written_by}` on {time.strftime('%Y-%m-%d %H:%M')}{size}._", ""]
    if result.summary:
        lines += [result.summary.strip(), ""]
    if result.goals:
        lines += ["## Goals", "", *_table(["goal", "measured", "target", ""], [_goal_row(g) for g in result.goals]), ""]
    for table in result.tables:
        lines += [f"## {table.title}", "", *_table(table.columns, table.rows), ""]
    for figure in result.figures:
        png = f"{result.name}-{figure.stem}.png"
        figure.figure.savefig(out / png, dpi=110, bbox_inches="tight")
        lines += [f"![{figure.caption}]({png})", "", f"_{figure.caption}_", ""]
    if result.settings:
        lines += ["## Settings", "", "```json", json.dumps(result.settings, indent=1, default=str), "```", ""]
    path = out / f"{result.name}.md"
    path.write_text("\n".join(lines))
    data = {
        "name": result.name,
        "title": result.title,
        "quick": result.quick,
        "goals": [{**g.__dict__, "met": g.met} for g in result.goals],
    }
    (out / f"{result.name}.json").write_text(json.dumps(data, indent=1, default=_jsonable))
    return path


def _jsonable(value: Any) -> Any:
    return float(value) if hasattr(value, "__float__") else str(value)


def write_index(out: Path) -> Path:
    """``<out>/README.md``: every written protocol's goals in one table."""
    rows = []
    for data_file in sorted(out.glob("*.json")):
        data = json.loads(data_file.read_text())
        link = f"[{data['title']}]({data['name']}.md)" + (" (quick)" if data.get("quick") else "")
        goals = [Goal(g["name"], g["value"], g["target"], g["higher_is_better"]) for g in data["goals"]]
        rows += [[link, *_goal_row(g)] for g in goals] or [[link, "—", "", "", ""]]
    lines = [
        "# Evaluation reports",
        "",
        "Written by `cl eval` (protocols) and `cl report` (the running service); the README's",
        "numbers come from these files.",
        "",
        *_table(["report", "goal", "measured", "target", ""], rows),
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path
