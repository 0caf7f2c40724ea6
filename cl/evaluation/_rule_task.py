"""The rule task of the language-feedback protocol: prompts, phases and a rule-based judge.

A prompt is a family letter and a digit followed by ``>``, e.g. ``"a3>"``; the answer is one
digit. Each family has one rule (the digit it wants after ``>``, whatever ``n`` is) and the
rules change at known points, the phase boundaries. The default schedule:

=========  =====================  ================  ================
phase      traffic (families)     rule of ``a``     rule of ``b``
=========  =====================  ================  ================
learn      ``a`` and ``b``        ``"3"``           ``"5"``
flip       ``a`` only             ``"7"`` (flips)   ``"5"``
return     ``a`` and ``b``        ``"3"`` (back)    ``"5"``
=========  =====================  ================  ================

Family ``b`` never changes its rule but is silent during the flip, so whatever the learner
loses on it while it adapts ``a`` is forgetting; ``a``'s old rule coming back measures how
fast an overwritten rule is relearned. The digit ``n`` does not change the answer: it is
surface variation within a family (a tiny random base with a rank-4 adapter could not learn
an ``n``-dependent rule such as ``(n + 1) % 10`` within a few thousand events, even from
corrections).

Everything here is pure: the judge is a function of (prompt, output, phase).

Example:
    >>> phases = default_phases(learn=4, flip=2, back=2)
    >>> judge("a3>", "3", phases[0]), judge("a3>", "3", phases[1]), judge("b9>", "5", phases[1])
    (True, False, True)
    >>> flip_points(phases)
    [4, 6]
    >>> sample_prompts(phases[1], 3, np.random.default_rng(0))
    ['a8>', 'a6>', 'a5>']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ALPHABET",
    "FAMILIES",
    "Phase",
    "default_phases",
    "flip_points",
    "judge",
    "parse_prompt",
    "probe_prompts",
    "prompt",
    "sample_prompts",
]

ALPHABET = "0123456789"  # every answer, and every output the policy may serve
FAMILIES = ("a", "b")
N_VALUES = 10  # the digits n a prompt carries


@dataclass(frozen=True)
class Phase:
    """A stretch of the stream with fixed rules and traffic.

    Attributes:
        name: Display name (``"learn"``, ``"flip"``, ``"return"``).
        events: Feedback events in this phase.
        traffic: Families whose prompts arrive in this phase (uniformly).
        rules: The answer each family's prompts want, e.g. ``{"a": "3", "b": "5"}``.
    """

    name: str
    events: int
    traffic: tuple[str, ...]
    rules: Mapping[str, str]

    def __post_init__(self) -> None:
        problems = []
        if self.events < 1:
            problems.append(f"events={self.events} must be >= 1")
        unknown = [f for f in (*self.traffic, *self.rules) if f not in FAMILIES]
        if unknown or not self.traffic:
            problems.append(f"traffic {self.traffic} / rules {dict(self.rules)} must use families {FAMILIES}")
        if set(self.rules) != set(FAMILIES):
            problems.append(f"rules {dict(self.rules)} must give an answer for each of {FAMILIES}")
        bad = [a for a in self.rules.values() if len(a) != 1 or a not in ALPHABET]
        if bad:
            problems.append(f"answers {bad} must be single characters of {ALPHABET!r}")
        if problems:
            raise ValueError(f"Phase {self.name!r}: " + "; ".join(problems))


def default_phases(learn: int, flip: int, back: int) -> list[Phase]:
    """The schedule of the module docstring, with the given number of events per phase."""
    return [
        Phase("learn", learn, ("a", "b"), {"a": "3", "b": "5"}),
        Phase("flip", flip, ("a",), {"a": "7", "b": "5"}),
        Phase("return", back, ("a", "b"), {"a": "3", "b": "5"}),
    ]


def flip_points(phases: Sequence[Phase]) -> list[int]:
    """Event indices where a new phase starts (where the rules flip)."""
    return np.cumsum([p.events for p in phases])[:-1].tolist()


def prompt(family: str, n: int) -> str:
    """The prompt of ``family`` carrying digit ``n``: ``prompt("a", 3) == "a3>"``."""
    return f"{family}{n}>"


def parse_prompt(text: str) -> tuple[str, int]:
    """``(family, n)`` of a prompt made by :func:`prompt`.

    Raises:
        ValueError: Not such a prompt; the message shows the expected form.
    """
    if len(text) != 3 or text[0] not in FAMILIES or not text[1].isdigit() or text[2] != ">":
        raise ValueError(f"prompt {text!r} is not of the form '<family><digit>>' with family in {FAMILIES}, e.g. 'a3>'")
    return text[0], int(text[1])


def judge(text: str, output: str, phase: Phase) -> bool:
    """Thumbs up iff ``output`` is exactly the answer the prompt's family wants in ``phase``."""
    family, _ = parse_prompt(text)
    return output == phase.rules[family]


def sample_prompts(phase: Phase, k: int, rng: np.random.Generator) -> list[str]:
    """``k`` prompts of ``phase``'s traffic: a uniform family, then a uniform digit."""
    families = rng.choice(len(phase.traffic), size=k)
    digits = rng.integers(0, N_VALUES, size=k)
    return [prompt(phase.traffic[f], int(n)) for f, n in zip(families, digits)]


def probe_prompts(family: str) -> list[str]:
    """The fixed probe set of ``family``: one prompt per digit."""
    return [prompt(family, n) for n in range(N_VALUES)]
