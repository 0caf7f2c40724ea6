"""The evaluation suite (``cl eval``, ``cl report``): continual-learning protocols run
through the service's own learner code, with baselines side by side."""

from cl.evaluation.result import Figure, Goal, ProtocolResult, Table

__all__ = ["Figure", "Goal", "ProtocolResult", "Table"]
