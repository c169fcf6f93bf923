"""The two kinds of failure a user sees.

`UsageError` is bad input or configuration (exit 2): nothing was written. Its
text is one line, "<what happened>. <what to do>". `OutcomeError` means the work
ran but its outcome is bad (exit 1), e.g. failed keys after `--wait`.
"""

from __future__ import annotations


class DjhpcError(Exception):
    exit_code = 2

    def __init__(self, what: str, todo: str = "") -> None:
        self.what = what.rstrip(". ")
        self.todo = todo.strip()
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.what}. {self.todo}" if self.todo else f"{self.what}."


class UsageError(DjhpcError):
    """Bad input or configuration; nothing was recorded or submitted."""


class OutcomeError(DjhpcError):
    """The operation ran, but its outcome is bad."""

    exit_code = 1
