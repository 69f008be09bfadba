"""The SQLite state files of a data folder (manifest, people): a damaged one is named with the way out.

A file that is not SQLite, or whose pages are damaged (a disk error, a copy cut short), would otherwise
surface as a bare `sqlite3.DatabaseError` deep in a traceback, naming no file. Every state file is
opened through `open_state`, which turns exactly that into a `StateFileError` saying which file and
what to do; a locked or busy database stays the `sqlite3.OperationalError` it is.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class StateFileError(Exception):
    """A state file cannot be read; the message names it and says how to recover (exit code 2)."""


def is_damage(exc: BaseException) -> bool:
    """Whether a sqlite3 error means the file itself is damaged (not locked, not a bad query)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.DatabaseError) and code is not None and code & 0xFF in _DAMAGED


@contextlib.contextmanager
def damage_named(path: Path, way_out: str) -> Iterator[None]:
    """Within the block, a damaged-file error of `path` becomes a StateFileError naming it and `way_out`."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        raise StateFileError(f"{path} is damaged ({exc}): {way_out}") from None
