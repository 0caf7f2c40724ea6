"""The packages' layering, read from their import statements (docs/architecture.md draws it).

``kernels`` imports nothing of ours; ``cl`` (the domain) only ``kernels``; ``streams`` and
``infra`` build on ``cl``; ``learners`` and ``serve`` wire ``cl`` and ``streams`` together. The
one exception is the CLI (``cl/cli/``), the composition root: it may reach any package, but
only inside a command's function, so importing ``cl`` never loads Ray Serve or Kafka.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("cl", "kernels", "streams", "infra", "learners", "serve", "bench", "tests")
MAY_IMPORT = {
    "kernels": set(),
    "cl": {"kernels"},
    "streams": {"cl"},
    "infra": {"cl"},
    "learners": {"cl", "streams"},
    "serve": {"cl", "streams"},
}
COMPOSITION_ROOT = "cl/cli/"  # may import anything, lazily


def imports(source: str) -> list[tuple[str, int, bool]]:
    """(top-level package, line, whether inside a function) of every absolute import in ``source``."""
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name.split(".")[0], child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], child.lineno, in_function))
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


def violations(package: str, root: Path = REPO) -> list[str]:
    """Every import in ``package`` of one of our packages that the layering forbids."""
    out = []
    for path in sorted((root / package).rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for top, line, lazy in imports(path.read_text()):
            if top not in OURS or top == package or top in MAY_IMPORT[package]:
                continue
            if rel.startswith(COMPOSITION_ROOT) and lazy:
                continue
            where = (
                "at module level in the composition root; import it inside the command"
                if rel.startswith(COMPOSITION_ROOT)
                else ""
            )
            out.append(
                f"{rel}:{line} imports {top}"
                + (
                    f" ({where})"
                    if where
                    else f"; {package} may import {sorted(MAY_IMPORT[package]) or 'nothing of ours'}"
                )
            )
    return out


@pytest.mark.parametrize("package", list(MAY_IMPORT))
def test_package_imports_only_what_its_layer_may(package):
    assert violations(package) == []


def test_the_check_finds_a_forbidden_import(tmp_path):
    (tmp_path / "cl" / "cli").mkdir(parents=True)
    (tmp_path / "kernels").mkdir()
    (tmp_path / "cl" / "bad.py").write_text("def f():\n    from streams import EventProducer\n")
    (tmp_path / "cl" / "cli" / "ok.py").write_text("def f():\n    import serve.app\n")
    (tmp_path / "cl" / "cli" / "eager.py").write_text("import learners.online\n")
    (tmp_path / "kernels" / "k.py").write_text("import torch\nfrom cl.model import MoE\n")
    assert violations("cl", tmp_path) == [
        "cl/bad.py:2 imports streams; cl may import ['kernels']",
        "cl/cli/eager.py:1 imports learners (at module level in the composition root; import it inside the command)",
    ]
    assert violations("kernels", tmp_path) == ["kernels/k.py:2 imports cl; kernels may import nothing of ours"]
