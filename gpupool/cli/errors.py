"""How an error escaping a command is shown: one line on stderr each, exit code 2.

Shared by the Typer app (gpupool.cli.main) and the fast path (gpupool.cli.fast),
so both print exactly the same lines. Imports nothing heavy: typer, SQLAlchemy
and http.client stay unimported until a command needs them.
"""

from __future__ import annotations

import sys

from gpupool.model import GpupoolError
from gpupool.safe_text import terminal


def error_lines(exc: BaseException) -> list[str] | None:
    """The ``error: ...`` lines for an error a command may raise; None for a bug
    (which keeps its traceback)."""
    if isinstance(exc, GpupoolError):
        return [f"error: {terminal(line)}" for line in _problem_lines(exc)]
    if isinstance(exc, OSError | UnicodeError):
        return [f"error: {terminal(_io_problem(exc))}"]
    if _is_database_error(exc):
        return [f"error: database: {terminal(_database_problem(exc))}"]
    return None


def print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr, flush=True)


def _problem_lines(exc: GpupoolError) -> list[str]:
    """One line per problem (a policy document lists all of its own), each escaped on
    its own, so a line break inside user text never starts a line."""
    problems = getattr(exc, "problems", None)
    if problems:
        return [f"{where}: {what}" for where, what in problems]
    return [str(exc)]


def _io_problem(exc: OSError | UnicodeError) -> str:
    """An unreadable input, a directory given as a file, a file that is not UTF-8."""
    if isinstance(exc, UnicodeError):
        return f"input is not UTF-8 text ({exc.__class__.__name__})"
    where = exc.filename if exc.filename is not None else "input"
    return f"{where}: {exc.strerror or exc}"


def _is_database_error(exc: BaseException) -> bool:
    """A SQLAlchemy error escaping a command (checked by module: sqlalchemy stays unimported
    until a command needs it)."""
    return type(exc).__module__.startswith("sqlalchemy.")


def _database_problem(exc: BaseException) -> str:
    """One line from a driver error (the transaction was rolled back: nothing written)."""
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"{first} (nothing was written)"
