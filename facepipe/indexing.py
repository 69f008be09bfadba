"""Indexing a batch of photos: extract on every core, write Parquet, record it in the manifest.

Shared by the `faces` asset (every run, UI or CLI) so there is one way faces get written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facepipe.faces.batch import Job, extract_many
from facepipe.faces.extract import ExtractSettings
from facepipe.faces.records import ImageRecord
from facepipe.keys import UnsafeKeyError, path_for_key
from facepipe.manifest import Manifest
from facepipe.stores.parquet import ParquetStore

Progress = Callable[[ImageRecord], None]

_progress_hooks: list[Progress] = []

MARK_EVERY_SECONDS = 1.0
"""How often a batch records its finished photos in the manifest."""


def add_progress_hook(hook: Progress) -> Callable[[], None]:
    """Let an in-process caller (the CLI's progress bar) see each photo as it completes."""
    _progress_hooks.append(hook)
    return lambda: _progress_hooks.remove(hook)


@dataclass
class BatchSummary:
    images: int = 0
    skipped: int = 0
    faces: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    extract_seconds: float = 0.0

    def metadata(self) -> dict[str, object]:
        return {
            "images": self.images,
            "skipped_unchanged": self.skipped,
            "faces": self.faces,
            "errors": len(self.errors),
            "seconds": round(self.seconds, 3),
            "extract_seconds": round(self.extract_seconds, 3),
            **({"error_files": "\n".join(f"{k}: {r}" for k, r in self.errors[:50])} if self.errors else {}),
        }


def jobs_for(keys: Sequence[str], images_root: Path) -> list[Job]:
    jobs: list[Job] = []
    for key in keys:
        try:
            jobs.append((key, path_for_key(key, images_root)))
        except UnsafeKeyError as exc:
            jobs.append((key, exc))
    return jobs


def index_batch(
    keys: Sequence[str],
    images_root: Path,
    manifest: Manifest,
    parquet: ParquetStore,
    settings: ExtractSettings,
    workers: int | None = None,
    force: bool = False,
) -> BatchSummary:
    """Extract and write the photos; ones already indexed from the same bytes and settings are skipped
    (a run that only needs to redo an export, or a backfill over a half-done batch, costs no detection)."""
    started = time.perf_counter()
    summary = BatchSummary()
    forgotten = manifest.forgotten_face_ids()
    todo = list(keys) if force else manifest.needs_indexing(keys, settings.model_version)
    summary.skipped = len(keys) - len(todo)
    marks: list[tuple[str, str, str, str]] = []
    flushed = time.monotonic()
    try:
        for record in extract_many(jobs_for(todo, images_root), settings, workers):
            if forgotten:  # faces the user erased stay erased when their photo is processed again
                record.faces = [f for f in record.faces if f.face_id not in forgotten]
            parquet.write(record)
            # Marked in one transaction per second, not per photo (tiny photos take less than a commit);
            # a photo written but not yet marked when the run dies is only indexed again.
            marks.append((record.image_key, record.sha256, settings.model_version, record.status))
            if time.monotonic() - flushed >= MARK_EVERY_SECONDS:
                manifest.mark_indexed_many(marks)
                marks, flushed = [], time.monotonic()
            summary.images += 1
            summary.faces += record.face_count
            summary.extract_seconds += record.seconds
            if not record.ok:
                summary.errors.append((record.image_key, record.reason or "unknown"))
            for hook in list(_progress_hooks):
                hook(record)
    finally:
        manifest.mark_indexed_many(marks)
    summary.seconds = time.perf_counter() - started
    return summary
