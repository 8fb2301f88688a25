"""One error type for everything a user can fix: the CLI prints it without a traceback and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (config, recipe, data row, path). The message must say where and what was expected."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class StageFailed(Exception):
    """A stage ran and failed in a way that is not the user's input (e.g. an RL track crashed); what it finished is
    kept. Exit code 1."""

    exit_code = 1
