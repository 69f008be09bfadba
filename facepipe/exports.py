"""A batch of photos into one vector store: the faces the Parquet holds, replaced in one bulk call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from facepipe.library import Library


def export_images(library: Library, store_name: str, keys: Sequence[str]) -> dict[str, int]:
    """Replace the photos' faces in the store (new ids upserted first, then the image's other ids
    deleted, so an unchanged photo never has a moment with no faces). Returns faces per photo."""
    batch = library.parquet.load_faces(keys)
    library.store(store_name).replace_images(batch)
    library.manifest.mark_exported(store_name, batch)
    return {key: len(faces) for key, faces in batch.items()}
