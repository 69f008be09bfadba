"""Partition keys: image paths relative to the images root, escaped where Dagster needs it.

Dagster rejects keys containing `...` or control characters, and `,` `[` `]` clash with its
range syntax. Those (and `%`, the escape character itself) are percent-encoded, so every key
maps back to exactly one path. Keys can be typed in the UI, so resolving one never leaves
the images root.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

_MUST_ESCAPE = re.compile(r"[%,\[\]\x00-\x1f\x7f]|\.{3,}")


class UnsafeKeyError(ValueError):
    """A key or path that would reach outside the images root."""


def _encode(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for ch in match.group() for b in ch.encode())


def key_for_relpath(relpath: str | PurePosixPath) -> str:
    """The partition key of a file, given its POSIX path relative to the images root."""
    return _MUST_ESCAPE.sub(_encode, str(relpath))


def relpath_for_key(key: str) -> PurePosixPath:
    """The relative path a key names; refuses absolute paths and `..` before any file is opened."""
    rel = PurePosixPath(unquote(key))
    if not key or rel.is_absolute() or any(part in ("..", "") for part in rel.parts) or "\x00" in str(rel):
        raise UnsafeKeyError(f"partition key {key!r} does not name a file inside the images root")
    return rel


def path_for_key(key: str, root: Path) -> Path:
    """The file a key names, resolved without following links out of the root."""
    root = root.resolve()
    path = root.joinpath(*relpath_for_key(key).parts)
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise UnsafeKeyError(f"partition key {key!r} resolves outside the images root (a link?)")
    return path
