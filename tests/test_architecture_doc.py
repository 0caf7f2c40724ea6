"""docs/architecture.md stays true: every path it names exists, and its import table is the tested one."""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_layering import MAY_IMPORT

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
PATH = re.compile(r"`([\w./-]+(?:\.py|/))`")


def named_paths(text: str) -> list[str]:
    """Paths in backticks: ``pkg/file.py`` or ``pkg/folder/``."""
    return [p for p in PATH.findall(text) if "/" in p]


def test_every_path_the_architecture_names_exists():
    paths = named_paths(DOC.read_text())
    assert len(paths) > 30, "the doc should walk a request and a rating file by file"
    missing = [p for p in paths if not (REPO / p).exists()]
    assert missing == [], f"docs/architecture.md names paths that do not exist: {missing}"


def test_the_import_table_is_the_one_the_layering_test_enforces():
    rows = re.findall(r"^\| `(\w+)/` \| [^|]+ \| ([^|]+) \|$", DOC.read_text(), flags=re.M)
    table = {pkg: set(re.findall(r"`(\w+)`", allowed)) for pkg, allowed in rows}
    assert table == MAY_IMPORT


def test_a_wrong_path_would_be_caught():
    assert named_paths("see `serve/nowhere.py` and `cl/config/`, not `cl.events`") == ["serve/nowhere.py", "cl/config/"]
