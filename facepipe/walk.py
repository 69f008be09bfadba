"""One walker for the folders facepipe reads: the images folder and its own Parquet dataset."""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Iterator
from pathlib import Path


def walk_files(
    root: Path, suffixes: Collection[str], links_inside: bool = False
) -> Iterator[tuple[str, os.stat_result]]:
    """(POSIX path relative to root, stat) of every regular file whose suffix (lower-cased) is in `suffixes`.

    Hidden entries (a leading dot: also facepipe's temporary files) are skipped, linked folders are never
    entered, and unreadable entries are passed over. With `links_inside`, a link to a file inside `root`
    counts as that file (a photo library may link photos between albums); links that leave the root,
    dangle or loop are ignored.
    """
    root = root.resolve()
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_symlink():
                    if not links_inside:
                        continue
                    target = Path(entry.path).resolve(strict=True)
                    if not target.is_relative_to(root):
                        continue
                    info = target.stat()
                    if stat.S_ISDIR(info.st_mode):
                        continue
                else:
                    info = entry.stat(follow_symlinks=False)
            except (OSError, RuntimeError):  # vanished, unreadable, dangling or a link loop
                continue
            if stat.S_ISDIR(info.st_mode):
                stack.append((Path(entry.path), f"{prefix}{entry.name}/"))
            elif stat.S_ISREG(info.st_mode) and os.path.splitext(entry.name)[1].lower() in suffixes:
                yield prefix + entry.name, info
