"""The CLI's exit codes and its one error type, shared by the parser (``cli.py``) and the commands
(``cli_commands.py``) so that neither imports the other for them. Standard library only.

Exit codes: 0 success; 1 the model was rejected; 2 usage, file or input errors, a missing extra included.
"""

from __future__ import annotations

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A command's failure: its one stderr line and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


__all__ = ["EXIT_OK", "EXIT_REJECTED", "EXIT_USAGE", "CliError"]
