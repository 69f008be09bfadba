"""Erasing photos and faces: every trace in Parquet, the vector stores and the manifest.

Order matters for a crash half way: the stores and the Parquet go first and the manifest last, so
an interrupted erase is found again (and finished) by the next sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from facepipe.manifest import Manifest
from facepipe.stores.parquet import ParquetStore


class ImageEraser(Protocol):
    def delete_images(self, image_keys: Sequence[str]) -> None: ...


class FaceEraser(Protocol):
    def delete_faces(self, face_ids: Sequence[str]) -> None: ...


def forget_images(
    keys: Sequence[str],
    *,
    manifest: Manifest,
    parquet: ParquetStore,
    stores: Sequence[ImageEraser] = (),
    keep_out: bool = False,
) -> None:
    """Erase the photos' faces everywhere. `keep_out`: the user asked, so never index them again."""
    for store in stores:
        store.delete_images(keys)
    for key in keys:
        parquet.delete(key)
    if keep_out:
        manifest.forget_images(keys)
    else:
        manifest.remove(keys)


def forget_faces(
    face_ids: Iterable[str],
    *,
    manifest: Manifest,
    parquet: ParquetStore,
    stores: Sequence[FaceEraser] = (),
) -> int:
    """Erase single faces (e.g. one person's) from photos that stay indexed; returns how many went."""
    wanted = set(face_ids)
    manifest.forget_faces(wanted)  # first: a re-index from now on already leaves them out
    for store in stores:
        store.delete_faces(sorted(wanted))
    return parquet.drop_faces(wanted)
