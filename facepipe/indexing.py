"""Indexing a batch of photos: extract on every core, write Parquet, record it in the manifest.

Shared by the `faces` asset (every run, UI or CLI) so there is one way faces get written.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from facepipe.faces.batch import Job, extract_many
from facepipe.faces.records import ImageRecord
from facepipe.keys import UnsafeKeyError, path_for_key

if TYPE_CHECKING:
    from facepipe.library import Library

Progress = Callable[[ImageRecord], None]

_progress_hooks: list[Progress] = []

MARK_EVERY_SECONDS = 1.0
"""How often a batch records its finished photos in the manifest."""


def add_progress_hook(hook: Progress) -> Callable[[], None]:
    """Let an in-process caller (the CLI's progress bar) see each photo as it completes."""
    _progress_hooks.append(hook)
    return lambda: _progress_hooks.remove(hook)


@dataclass(frozen=True)
class PhotoResult:
    """What one photo of a batch came to: the per-partition metadata Dagster shows."""

    image_key: str
    status: str
    faces: int
    seconds: float
    reason: str | None = None
    skipped: bool = False  # already indexed from the same bytes and settings


@dataclass
class BatchSummary:
    images: int = 0
    skipped: int = 0
    faces: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    extract_seconds: float = 0.0
    photos: list[PhotoResult] = field(default_factory=list)


def jobs_for(keys: Sequence[str], images_root: Path) -> list[Job]:
    jobs: list[Job] = []
    for key in keys:
        try:
            jobs.append((key, path_for_key(key, images_root)))
        except UnsafeKeyError as exc:
            jobs.append((key, exc))
    return jobs


def index_batch(library: Library, keys: Sequence[str], force: bool = False) -> BatchSummary:
    """Extract and write the photos; ones already indexed from the same bytes and settings are skipped
    (a run that only needs to redo an export, or a backfill over a half-done batch, costs no detection)."""
    started = time.perf_counter()
    summary = BatchSummary()
    manifest, parquet, settings = library.manifest, library.parquet, library.settings.extract
    images_root, workers = library.root, library.settings.worker_count
    forgotten = manifest.forgotten_face_ids()
    todo = list(keys) if force else manifest.needs_indexing(keys, settings.model_version)
    todo = _not_forgotten(manifest, todo)
    summary.skipped = len(keys) - len(todo)
    todo_set = set(todo)
    summary.photos.extend(_skipped(library, [k for k in keys if k not in todo_set]))
    marks: list[tuple[str, str, str, str, int]] = []
    written: dict[str, list[str]] = {}  # written since the last tombstone check: key -> face ids
    flushed = time.monotonic()
    staging = contextlib.ExitStack()
    try:
        if isinstance(images_root, Path):
            jobs = jobs_for(todo, images_root)
        else:  # photos in a bucket: this batch is copied to a local folder the extractor reads, then dropped
            library.data.mkdir(parents=True, exist_ok=True)
            folder = staging.enter_context(tempfile.TemporaryDirectory(prefix=".photos-", dir=library.data))
            jobs = library.images.stage(todo, Path(folder))
        for record in extract_many(jobs, settings, workers):
            if forgotten:  # faces the user erased stay erased when their photo is processed again
                record.faces = [f for f in record.faces if f.face_id not in forgotten]
            parquet.write(record)
            written[record.image_key] = [f.face_id for f in record.faces]
            # Marked in one transaction per second, not per photo (tiny photos take less than a commit);
            # a photo written but not yet marked when the run dies is only indexed again.
            marks.append((record.image_key, record.sha256, settings.model_version, record.status, record.face_count))
            if time.monotonic() - flushed >= MARK_EVERY_SECONDS:
                manifest.mark_indexed_many(marks)
                drop_forgotten(library, written)
                marks, written, flushed = [], {}, time.monotonic()
            summary.images += 1
            summary.faces += record.face_count
            summary.extract_seconds += record.seconds
            if not record.ok:
                summary.errors.append((record.image_key, record.reason or "unknown"))
            summary.photos.append(
                PhotoResult(record.image_key, record.status, record.face_count, record.seconds, record.reason)
            )
            for hook in list(_progress_hooks):
                hook(record)
    finally:
        manifest.mark_indexed_many(marks)
        try:
            drop_forgotten(library, written)
        finally:
            staging.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _not_forgotten(manifest, keys: Sequence[str]) -> list[str]:
    gone = manifest.forgotten_among(keys)
    return [k for k in keys if k not in gone] if gone else list(keys)


def drop_forgotten(library: Library, written: dict[str, list[str]]) -> None:
    """The writer's half of "erasure wins": after writing, look for tombstones that appeared meanwhile.

    `forget` writes its tombstone before it erases, and this check runs after the write, so either
    `forget` erased what was written or this finds the tombstone and erases it itself."""
    if not written:
        return
    manifest, parquet = library.manifest, library.parquet
    for key in sorted(manifest.forgotten_among(written)):
        parquet.delete(key)
    erased = manifest.forgotten_faces_among(fid for ids in written.values() for fid in ids)
    if erased:
        parquet.drop_faces(erased)


def _skipped(library: Library, keys: Sequence[str]) -> list[PhotoResult]:
    """Photos the run did not extract again: their metadata is what their Parquet status row says."""
    results = []
    for key in keys:
        row = library.parquet.read_image(key)
        if row is None:
            results.append(PhotoResult(key, "ok", 0, 0.0, skipped=True))
        else:
            results.append(
                PhotoResult(key, row["status"], row["faces"] or 0, row["seconds"] or 0.0, row["reason"], skipped=True)
            )
    return results
