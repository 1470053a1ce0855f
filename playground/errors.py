"""The one base class of the playground's errors.

Every error the engine raises for a user to read (bad input, an unreachable component, a refused operation)
derives from :class:`PlaygroundError`, keeping its historical built-in base too (``GitError`` is still a
``RuntimeError``). The CLI (``playground.cli.main``) turns any ``PlaygroundError`` that reaches it into one line
on stderr, ``playground COMMAND: message``, and the exit status ``exit_code`` (1 unless a subclass says
otherwise), never a traceback.
"""

from __future__ import annotations

__all__ = ["PlaygroundError"]


class PlaygroundError(Exception):
    """An error for the user: its message says what went wrong and how to fix it. ``exit_code``: the CLI's exit
    status for it (the class's, 1 by default, unless given for this error)."""

    exit_code: int = 1

    def __init__(self, *args: object, exit_code: int | None = None) -> None:
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code
