"""Extracting many photos at once on every core, one dlib thread per process."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from facepipe.faces.extract import ExtractSettings, extract_faces
from facepipe.faces.records import ImageRecord

MAX_FILE_BYTES = 512 * 1024 * 1024
"""Refuse to read a single file larger than this; no photo is, and reading it would cost RAM."""

Job = tuple[str, Path | Exception]
"""(image key, its path, or the reason it has none, e.g. it points outside the images root)."""


def read_photo(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"file is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES / 2**20:.0f} MiB limit")
    return path.read_bytes()


def extract_file(key: str, path: Path | Exception, settings: ExtractSettings) -> ImageRecord:
    """Like extract_faces, but any failure to reach the bytes becomes an error record too."""
    if isinstance(path, Exception):
        return _error(key, settings, str(path))
    try:
        data = read_photo(path)
    except FileNotFoundError:
        return _error(key, settings, "file not found (deleted after it was scheduled?)")
    except (OSError, ValueError) as exc:
        return _error(key, settings, f"cannot read file: {exc}")
    return extract_faces(data, key, settings)


def _error(key: str, settings: ExtractSettings, reason: str) -> ImageRecord:
    return ImageRecord(
        image_key=key,
        sha256="",
        status="error",
        reason=reason,
        detector=settings.detect.detector,
        model_version=settings.model_version,
    )


def default_workers() -> int:
    return int(os.environ.get("FACEPIPE_WORKERS") or os.cpu_count() or 1)


def _init_worker() -> None:
    # One BLAS/OpenMP thread per process: the pool already keeps every core busy.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"


def extract_many(
    jobs: Sequence[Job],
    settings: ExtractSettings,
    workers: int | None = None,
) -> Iterator[ImageRecord]:
    """Records in completion order; a crash in one photo's extraction fails only that photo."""
    workers = min(workers or default_workers(), len(jobs))
    if workers <= 1:
        for key, path in jobs:
            yield _safe(key, path, settings)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        futures = {pool.submit(extract_file, key, path, settings): key for key, path in jobs}
        for future in as_completed(futures):
            key = futures[future]
            try:
                yield future.result()
            except Exception as exc:  # a worker died (e.g. out of memory) or dlib raised
                yield _error(key, settings, f"extraction failed: {type(exc).__name__}: {exc}")


def _safe(key: str, path: Path | Exception, settings: ExtractSettings) -> ImageRecord:
    try:
        return extract_file(key, path, settings)
    except Exception as exc:
        return _error(key, settings, f"extraction failed: {type(exc).__name__}: {exc}")
