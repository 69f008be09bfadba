"""Erasing photos and faces: every trace in Parquet, the vector stores and the manifest.

Order matters for a crash half way: the stores and the Parquet go first and the manifest last, so
an interrupted erase is found again (and finished) by the next sync.
"""

from __future__ import annotations

import contextlib
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
    refresh_compacted(parquet)
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
    dropped = parquet.drop_faces(wanted)
    refresh_compacted(parquet)
    return dropped


def refresh_compacted(parquet: ParquetStore) -> None:
    """The consolidated analytics copy holds the faces too: rewrite the shards that held erased ones now,
    not at the next scheduled compaction."""
    from facepipe.compaction import Compactor

    compactor = Compactor(parquet)
    if compactor.folder.exists():
        compactor.run()


# -- what `facepipe forget` does: the above, plus Dagster's own records and the person clusters --------

ERASED_ASSETS = ("faces", "qdrant_faces", "pgvector_faces")


def _context():
    from facepipe.definitions import defs
    from facepipe.runner import ensure_dagster_home

    ensure_dagster_home()
    resources = defs.resources
    library = resources["library"]
    return library.manifest(), resources["parquet"], [resources["qdrant"], resources["pgvector"]]


def _drop_partitions(keys: Sequence[str]) -> None:
    """Delete the partitions and their materialization records (whose metadata names the photos)."""
    import dagster as dg

    from facepipe.defs.partitions import images_partitions

    with dg.DagsterInstance.get() as instance:
        known = set(instance.get_dynamic_partitions(images_partitions.name))
        present = [k for k in keys if k in known]
        for asset in ERASED_ASSETS:
            if present:
                # Open-source event logs cannot wipe single partitions yet; their events hold the key
                # and face counts only (never embeddings or crops). Wiped where the storage can.
                with contextlib.suppress(NotImplementedError):
                    instance.wipe_asset_partitions(dg.AssetKey(asset), present)
        for key in present:
            instance.delete_dynamic_partition(images_partitions.name, key)


def _recluster(stores: Sequence) -> None:
    from facepipe.people import People

    People().update(stores=stores)


def forget_photos(keys: Sequence[str]) -> list[str]:
    """Erase photos everywhere and keep them out of the index until `remember_photos`."""
    manifest, parquet, stores = _context()
    known = set(manifest.keys()) | parquet.image_keys()
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise KeyError(f"unknown image key(s): {', '.join(unknown)} (see `facepipe status` or the Parquet)")
    try:
        forget_images(keys, manifest=manifest, parquet=parquet, stores=stores, keep_out=True)
        _drop_partitions(keys)
        _recluster(stores)
    finally:
        for store in stores:
            store.close()
    return list(keys)


def forget_person(person_id: str) -> int:
    """Erase every face of one person (their photos stay, minus them) and the person itself."""
    import pyarrow.compute as pc

    from facepipe.people import People, PeopleError

    manifest, parquet, stores = _context()
    people = People()
    try:
        person_id = people.canonical(person_id)
    except PeopleError as exc:
        raise KeyError(str(exc)) from None
    table = parquet.faces(["face_id", "person_id"])
    ids = table.filter(pc.equal(table.column("person_id"), person_id)).column("face_id").to_pylist()
    if not ids:
        raise KeyError(f"unknown person {person_id!r} (see `facepipe people`)")
    try:
        erased = forget_faces(ids, manifest=manifest, parquet=parquet, stores=stores)
        people.forget(person_id)
        _recluster(stores)
    finally:
        for store in stores:
            store.close()
    return erased


def remember_photos(keys: Sequence[str]) -> list[str]:
    manifest, _, stores = _context()
    for store in stores:
        store.close()
    return manifest.remember_images(keys)
