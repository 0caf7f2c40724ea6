"""The README's "Python client" examples, run as written against the live app (``$CL_URL``, ``$CL_API_KEY``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "Python client"


def python_blocks(text: str, section: str) -> list[str]:
    """The ```python blocks between the heading ``section`` and the next heading of its level or above."""
    heading = re.search(rf"^(#+) {re.escape(section)}\s*$", text, flags=re.MULTILINE)
    assert heading, f"README.md has no heading {section!r}"
    level = len(heading.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", flags=re.MULTILINE).search(text, heading.end())
    body = text[heading.end() : end.start() if end else len(text)]
    return re.findall(r"^```python\n(.*?)^```", body, flags=re.MULTILINE | re.DOTALL)


def test_the_section_has_a_sync_and_an_async_example():
    blocks = python_blocks(README.read_text(), SECTION)
    assert len(blocks) == 2
    assert "Client()" in blocks[0] and "AsyncClient()" in blocks[1]


@pytest.mark.parametrize("index", [0, 1], ids=["sync", "async"])
def test_readme_example_runs(live, monkeypatch, capsys, index):
    block = python_blocks(README.read_text(), SECTION)[index]
    monkeypatch.setenv("CL_URL", live.url)
    monkeypatch.setenv("CL_API_KEY", live.keys["readme"])
    exec(compile(block, f"README.md ({SECTION}, example {index + 1})", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out.splitlines()
    if index == 0:
        label, version, arm = printed[0].split()
        assert int(label) in range(live.config.model.n_labels) and (version, arm) == ("base", "champion")
        assert printed[1] == "[]"  # no version published in this deployment
        assert printed[2].startswith("422 features POST /v1/predict answered 422: features: got 1 value")
    else:
        labels, text = printed[0].split("] ", 1)
        assert len(labels.strip("[").split(", ")) == 2 and text.startswith(("'", '"'))


def test_readme_openai_example_runs(live, monkeypatch, capsys):
    [block] = python_blocks(README.read_text(), "OpenAI-style completions")
    monkeypatch.setenv("CL_API_KEY", live.keys["readme"])
    block = block.replace("http://127.0.0.1:8000", live.url)  # the README shows the default port
    exec(compile(block, "README.md (OpenAI-style completions)", "exec"), {"__name__": "__readme__"})
    completion, chat, _streamed = capsys.readouterr().out.split("\n", 2)  # the streamed text may hold newlines
    model, text = completion.split(" ", 1)
    assert model == f"{live.config.mlflow.model_name}:base" and text.startswith(("'", '"'))
    chat_id, reply = chat.split(" ", 1)
    assert len(chat_id) == 32 and reply.startswith(("'", '"'))
