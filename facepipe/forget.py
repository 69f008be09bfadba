"""Erasing photos and faces: every trace in Parquet, the vector stores, the clusters and the manifest.

Order matters for a crash half way: the stores and the Parquet go first and the manifest last, so
an interrupted erase is found again (and finished) by the next sync. A photo the user forgets gets its
tombstone first of all: every writer (a run extracting or exporting it right now, in this process or
another) checks for tombstones after it writes and erases what it wrote, so erasure wins every race;
the tombstone is marked erased last, and an unmarked one is erased again by the next sync. Dagster's own records of the
partitions are dropped by the Dagster shell (`facepipe.defs.partitions.drop_partitions`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from facepipe.library import Library


def erase_images(library: Library, keys: Sequence[str], keep_out: bool = False) -> None:
    """Erase the photos' faces everywhere. `keep_out`: the user asked, so never index them again."""
    if keep_out:
        library.manifest.tombstone(keys)
    for store in library.stores().values():
        store.delete_images(keys)
    for key in keys:
        library.parquet.delete(key)
    refresh_compacted(library)
    if keep_out:
        library.manifest.forget_images(keys)
    else:
        library.manifest.remove(keys)


def erase_faces(library: Library, face_ids: Iterable[str]) -> int:
    """Erase single faces (e.g. one person's) from photos that stay indexed; returns how many went."""
    wanted = set(face_ids)
    library.manifest.forget_faces(wanted)  # first: a re-index from now on already leaves them out
    for store in library.stores().values():
        store.delete_faces(sorted(wanted))
    held = library.parquet.face_ids_by_image()
    dropped = library.parquet.drop_faces(wanted)
    library.manifest.set_faces({k: len(ids - wanted) for k, ids in held.items() if ids & wanted})
    refresh_compacted(library)
    return dropped


def refresh_compacted(library: Library) -> None:
    """The consolidated analytics copy holds the faces too: rewrite the shards that held erased ones now,
    not at the next scheduled compaction."""
    if library.compactor.exists():
        library.compactor.run()


def _recluster(library: Library) -> None:
    library.people.update(stores=list(library.stores().values()))


def photos_to_forget(library: Library, keys: Sequence[str]) -> dict[str, int]:
    """What `forget_photos(keys)` would erase: each photo with its number of faces (a dry run).

    Raises KeyError naming the keys the library does not know."""
    known = set(library.manifest.keys()) | library.parquet.image_keys()
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise KeyError(f"unknown image key(s): {', '.join(unknown)} (see `facepipe status --list images`)")
    faces = library.parquet.face_ids_by_image(keys)
    return {key: len(faces.get(key, ())) for key in keys}


def forget_photos(library: Library, keys: Sequence[str]) -> list[str]:
    """Erase photos everywhere and keep them out of the index until `remember_photos`.

    Raises KeyError naming the keys the library does not know."""
    photos_to_forget(library, keys)
    erase_images(library, keys, keep_out=True)
    library.people.forget_images(keys)
    _recluster(library)
    return list(keys)


def faces_of_person(library: Library, person_id: str) -> tuple[str, dict[str, str]]:
    """(the person's current id, {face_id: image_key} of their faces): what `forget_person` erases.

    Raises KeyError for a person the library does not know or who has no face."""
    import pyarrow.compute as pc

    from facepipe.people import PeopleError

    try:
        person_id = library.people.canonical(person_id)
    except PeopleError as exc:
        raise KeyError(str(exc)) from None
    table = library.parquet.faces(["face_id", "image_key", "person_id"])
    table = table.filter(pc.equal(table.column("person_id"), person_id))
    faces = dict(zip(table.column("face_id").to_pylist(), table.column("image_key").to_pylist(), strict=True))
    if not faces:
        raise KeyError(f"unknown person {person_id!r} (see `facepipe people`)")
    return person_id, faces


def forget_person(library: Library, person_id: str) -> int:
    """Erase every face of one person (their photos stay, minus them) and the person itself."""
    person_id, faces = faces_of_person(library, person_id)
    erased = erase_faces(library, list(faces))
    library.people.forget(person_id)
    _recluster(library)
    return erased


def remember_photos(library: Library, keys: Sequence[str]) -> list[str]:
    """Undo `forget_photos`: the next sync indexes them again if the files are still there."""
    return library.manifest.remember_images(keys)
