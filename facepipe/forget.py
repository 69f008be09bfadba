"""Erasing photos: every trace of their faces, in Parquet, the vector stores and the manifest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from facepipe.manifest import Manifest
from facepipe.stores.parquet import ParquetStore


class ImageEraser(Protocol):
    def delete_images(self, image_keys: Sequence[str]) -> None: ...


def forget_images(
    keys: Sequence[str], *, manifest: Manifest, parquet: ParquetStore, stores: Sequence[ImageEraser] = ()
) -> None:
    """Stores first, manifest last: if this is interrupted, the next sync finds the keys again."""
    for store in stores:
        store.delete_images(keys)
    for key in keys:
        parquet.delete(key)
    manifest.remove(keys)
