"""The examples in docs/rollout.md run, so the prose cannot drift from the code."""

import doctest
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "rollout.md"


def test_docs_rollout_examples_run():
    result = doctest.testfile(str(DOC), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0
