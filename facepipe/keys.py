"""Partition keys: image paths relative to the images root, escaped where Dagster needs it.

Dagster rejects keys containing `...` or control characters, and `,` `[` `]` clash with its
range syntax. Those (and `%`, the escape character itself) are percent-encoded, so every key
maps back to exactly one path. A file name that is not valid UTF-8 (Linux allows any bytes)
reaches Python as lone surrogates (`surrogateescape`), which no database or JSON can store:
each such byte is percent-encoded too, so the key is plain UTF-8 and decodes back to the very
bytes on disk. Keys can be typed in the UI, so resolving one never leaves the images root.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from urllib.parse import unquote_to_bytes

_MUST_ESCAPE = re.compile(r"[%,\[\]\x00-\x1f\x7f\udc80-\udcff]|\.{3,}")


class UnsafeKeyError(ValueError):
    """A key or path that would reach outside the images root."""


def _encode(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in os.fsencode(match.group()))


def key_for_relpath(relpath: str | PurePosixPath) -> str:
    """The partition key of a file, given its POSIX path relative to the images root (as os.scandir names it)."""
    return _MUST_ESCAPE.sub(_encode, str(relpath))


def relpath_for_key(key: str) -> PurePosixPath:
    """The relative path a key names; refuses absolute paths and `..` before any file is opened.

    Decoded as the file system does (bytes -> str with surrogateescape), so a non-UTF-8 name comes back
    byte for byte."""
    try:
        rel = PurePosixPath(os.fsdecode(unquote_to_bytes(key))) if key else PurePosixPath()
    except UnicodeEncodeError:  # a typed key with lone surrogates: no file name decodes to it
        raise UnsafeKeyError(f"partition key {printable(key)!r} is not valid UTF-8") from None
    if not key or rel.is_absolute() or any(part in ("..", "") for part in rel.parts) or "\x00" in str(rel):
        raise UnsafeKeyError(f"partition key {key!r} does not name a file inside the images root")
    return rel


def path_for_key(key: str, root: Path) -> Path:
    """The file a key names, resolved without following links out of the root."""
    root = root.resolve()
    path = root.joinpath(*relpath_for_key(key).parts)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):  # a link loop: nothing can be opened through it, reading it fails cleanly
        return path
    if not resolved.is_relative_to(root):
        raise UnsafeKeyError(f"partition key {key!r} resolves outside the images root (a link?)")
    return path


def printable(text: str) -> str:
    """A path or message safe for JSON, Parquet and logs: bytes that are not UTF-8 shown as `\\xe9`."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
