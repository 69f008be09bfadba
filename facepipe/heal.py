"""Self-healing: find what the Parquet or a store lost behind facepipe's back, and put it right.

Two checks, cheap enough for every `facepipe index` (also the "Nothing to do" path):

* Parquet: one stat per file against the manifest. A photo whose faces or status file is missing, or
  whose file changed since its footer was last read and now reads short (truncated, garbled, fewer rows
  than the manifest counts), is *damaged*: it is extracted again from the photo. A damaged file is never
  read as "this photo has no faces", so it never reaches the stores as a deletion.
* Stores: each store's face count against the sum the manifest records for what it exported. Only a
  store whose count differs (or every store under `--repair`) is compared face id by face id with the
  Parquet, and the photos that differ are exported again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from facepipe.stores.base import FaceStore, StoreError
from facepipe.stores.parquet import DamagedParquet

if TYPE_CHECKING:
    from facepipe.library import Library


@dataclass
class Healing:
    damaged: dict[str, str] = field(default_factory=dict)
    """Photo -> why its Parquet is unusable; these are extracted again."""
    reexport: dict[str, list[str]] = field(default_factory=dict)
    """Store -> photos whose faces there differ from the Parquet; these are exported again."""
    unavailable: dict[str, str] = field(default_factory=dict)
    """Store -> why it could not be checked (down): left for the export to report."""
    strays: dict[str, list[str]] = field(default_factory=dict)
    """Store -> photos of `reexport` the library no longer has: deleted there, not exported."""

    @property
    def repaired(self) -> list[str]:
        return sorted({key for keys in self.reexport.values() for key in keys})

    @property
    def found(self) -> bool:
        """Whether anything was marked for extraction or export, or deleted as a stray."""
        return bool(self.damaged) or any(self.reexport.values())

    def lines(self) -> list[str]:
        """What was found and done, photo by photo, for a log."""
        out = [f"{key}: Parquet unusable ({why}): extracted again" for key, why in sorted(self.damaged.items())]
        for name, keys in sorted(self.reexport.items()):
            strays = set(self.strays.get(name, ()))
            out += [
                f"{key}: not in the library, deleted from {name}"
                if key in strays
                else f"{key}: faces in {name} differ from the Parquet: exported again"
                for key in keys
            ]
        out += [f"{name} could not be checked: {why}" for name, why in sorted(self.unavailable.items())]
        return out


def check_parquet(library: Library) -> dict[str, str]:
    """Indexed photos whose Parquet files are missing or damaged -> why (and records the files found whole).

    Reads a footer only for files whose (mtime, size) moved since the last check: after a run, the
    files it wrote; otherwise the files changed behind facepipe's back."""
    manifest, parquet = library.manifest, library.parquet
    stats = parquet.file_stats()
    checked = manifest.checked_files()
    damaged: dict[str, str] = {}
    whole: dict[str, tuple[int, int]] = {}
    counted: dict[str, int] = {}

    def rows(rel: str) -> int | None:
        """Rows of a file (footer read only if it moved), None when it is missing; raises DamagedParquet."""
        if rel not in stats:
            return None
        if checked.get(rel) == stats[rel]:
            return -1  # whole when last read, unchanged since
        n = parquet.rows_in(parquet.base / rel)
        whole[rel] = stats[rel]
        return n

    for key, (_status, faces) in manifest.indexed_faces().items():
        faces_rel, status_rel = parquet.rel_paths(key)
        try:
            if rows(status_rel) is None:
                damaged[key] = f"{status_rel} is missing"
                continue
            n = rows(faces_rel)
        except (DamagedParquet, FileNotFoundError) as exc:
            damaged[key] = str(exc)
            continue
        if faces is None:  # a manifest from before face counts: learn it from the files once
            if n is None:
                row = parquet.read_image(key) or {}
                n = 0 if not row.get("faces") else None
            if n is None:
                damaged[key] = f"{faces_rel} is missing"
            elif n >= 0:
                counted[key] = n
            continue
        if n is None and faces > 0:
            damaged[key] = f"{faces_rel} is missing ({faces} faces expected)"
        elif n is not None and n >= 0 and n != faces:
            damaged[key] = f"{faces_rel} holds {n} faces, {faces} expected"
    if counted:
        manifest.set_faces(counted)
    manifest.record_checked(whole, gone=[rel for rel in checked if rel not in stats])
    return damaged


def drifting_stores(library: Library) -> dict[str, str]:
    """Stores whose face count differs from what the manifest says they hold -> how (one count each)."""
    out: dict[str, str] = {}
    for name, store in library.stores().items():
        expected = library.manifest.expected_faces(name)
        try:
            held = _count_if_free(store)
        except StoreError:
            continue  # down or busy: the export fails and says so; nothing to learn here
        if expected is None or held != expected:
            out[name] = f"holds {held} faces, the manifest {'some unknown' if expected is None else expected}"
    return out


QUICK_LOCK_SECONDS = 2.0
"""How long the cheap check waits for an embedded Qdrant another process holds (a server answering
searches, a run exporting) before it leaves the count for another time."""


def _count_if_free(store: FaceStore) -> int:
    with_options = getattr(store, "with_options", None)
    if not getattr(store, "is_local", False) or with_options is None:
        return store.count()
    quick = with_options(lock_timeout=QUICK_LOCK_SECONDS)
    try:
        return quick.count()
    finally:
        quick.close()


def heal(library: Library, full: bool = False, stores: bool = True) -> Healing:
    """Mark damaged photos for extraction and differing photos for export (`full`: compare every store
    face id by face id, not only the ones whose count is off). The caller's runs then do the work.

    `stores=False` checks the Parquet only (one stat per file): the sensor does that every tick and
    counts the stores, which may start the embedded Postgres, less often. Never call this while a run
    is in flight: a store mid-export differs from the manifest, and faces of photos the manifest does
    not list as indexed are deleted from the stores as strays."""
    manifest, parquet = library.manifest, library.parquet
    healing = Healing(damaged=check_parquet(library))
    if healing.damaged:
        manifest.reindex(healing.damaged)
    if not stores and not full:
        return healing
    names = library.store_names if full else list(drifting_stores(library))
    if not names:
        return healing
    parquet.damaged.clear()
    truth = parquet.face_ids_by_image()
    indexed = manifest.indexed_faces()
    unusable = set(healing.damaged) | {_key_of(library, path) for path in parquet.damaged}
    for name in names:
        store = library.store(name)
        try:
            held = store.face_ids_by_image()
        except StoreError as exc:
            healing.unavailable[name] = str(exc)
            continue
        differ = sorted(
            key
            for key in set(truth) | set(held)
            if key not in unusable and truth.get(key, set()) != held.get(key, set())
        )
        strays = [key for key in differ if key not in indexed]  # photos the library no longer has
        if strays:
            store.delete_images(strays)
            healing.strays[name] = strays
        manifest.reset_exports([key for key in differ if key in indexed], name)
        healing.reexport[name] = differ
    # The Parquet is the truth: the counts the cheap check compares with follow it.
    manifest.set_faces({key: len(truth.get(key, ())) for key in indexed if key not in unusable})
    return healing


def _key_of(library: Library, path) -> str:
    with contextlib.suppress(ValueError):
        return library.parquet.image_key_of_face_file(path.relative_to(library.parquet.faces_dir).as_posix()) or ""
    return ""


def looks_whole(library: Library) -> bool:
    """The cheap check of the "Nothing to do" path: no damaged Parquet, every store's count as expected."""
    return not check_parquet(library) and not drifting_stores(library)
