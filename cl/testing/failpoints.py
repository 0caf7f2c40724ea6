"""Fault injection for crash tests: a named point where the process can be made to die.

``failpoint(name)`` does nothing unless ``name`` is listed in the comma-separated environment
variable ``CL_FAILPOINTS``; then the process exits at once with status 137, as if it had been
killed (no ``finally``, no ``atexit``, no flush). Tests use it to crash a learner at the exact
step of a snapshot whose interruption they want to prove harmless.

Example:
    >>> import os
    >>> os.environ.pop(FAILPOINTS_ENV, None)
    >>> failpoint("snapshot.after_publish")  # not armed: returns
"""

from __future__ import annotations

import os
import sys

__all__ = ["FAILPOINTS_ENV", "failpoint"]

FAILPOINTS_ENV = "CL_FAILPOINTS"


def failpoint(name: str) -> None:
    """Exit the process with status 137 if ``name`` is armed in ``$CL_FAILPOINTS``."""
    armed = {part.strip() for part in os.environ.get(FAILPOINTS_ENV, "").split(",")}
    if name in armed:
        sys.stderr.write(f"failpoint {name}: killing the process (armed by {FAILPOINTS_ENV})\n")
        sys.stderr.flush()
        os._exit(137)
