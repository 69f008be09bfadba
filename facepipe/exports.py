"""A batch of photos into one vector store: the faces the Parquet holds, replaced in one bulk call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from facepipe.library import Library


def export_images(library: Library, store_name: str, keys: Sequence[str]) -> dict[str, int]:
    """Replace the photos' faces in the store (new ids upserted first, then the image's other ids
    deleted, so an unchanged photo never has a moment with no faces). Returns faces per photo."""
    manifest, store = library.manifest, library.store(store_name)
    gone = manifest.forgotten_among(keys)
    batch = library.parquet.load_faces([k for k in keys if k not in gone])
    store.replace_images(batch)
    manifest.mark_exported(store_name, batch)
    # Erasure wins: `forget` tombstones before it erases the stores, this looks after writing, so a
    # photo or face forgotten while this export ran is gone either way.
    gone = manifest.forgotten_among(batch)
    if gone:
        store.delete_images(sorted(gone))
    erased = manifest.forgotten_faces_among(f.face_id for faces in batch.values() for f in faces)
    if erased:
        store.delete_faces(sorted(erased))
    return {key: len(faces) for key, faces in batch.items() if key not in gone}
