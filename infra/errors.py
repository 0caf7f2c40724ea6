"""The one error the stack raises: what went wrong and what to do about it."""

from __future__ import annotations


class StackError(RuntimeError):
    """A local service could not be started, reached or stopped.

    Args:
        message: what is wrong, naming the component.
        fix: what the user should do.
    """

    def __init__(self, message: str, fix: str = ""):
        self.message = message
        self.fix = fix
        super().__init__(f"{message}\n  fix: {fix}" if fix else message)
