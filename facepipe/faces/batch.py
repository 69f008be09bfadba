"""Extracting many photos at once on every core, one dlib thread per process."""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

from facepipe.faces.extract import ExtractSettings, extract_faces, warm_up
from facepipe.faces.records import ImageRecord
from facepipe.keys import printable

MAX_FILE_BYTES = 512 * 1024 * 1024
"""Refuse to read a single file larger than this; no photo is, and reading it would cost RAM."""

POOL_IDLE_SECONDS = 120.0
"""A worker pool unused this long is shut down (its processes hold the models, ~0.5 GB each)."""

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
    record = extract_faces(data, key, settings)
    record.metadata = replace(record.metadata, mtime=_mtime(path))
    return record


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


def _error(key: str, settings: ExtractSettings, reason: str) -> ImageRecord:
    return ImageRecord(
        image_key=key,
        sha256="",
        status="error",
        reason=printable(reason),  # an OSError names the file, whose bytes may not be UTF-8
        detector=settings.detect.detector,
        model_version=settings.model_version,
    )


ORPHAN_CHECK_SECONDS = 0.5
"""How often a worker checks that the process that started it is still its parent."""


def _init_worker(parent: int | None = None) -> None:
    # One BLAS/OpenMP thread per process: the pool already keeps every core busy.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    if parent is not None:
        threading.Thread(target=_exit_when_orphaned, args=(parent,), name="orphan-watch", daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    """End this worker once its parent is gone (a SIGKILLed `facepipe index` runs no cleanup, and each
    worker holds the models, 0.5-1.2 GB). When the parent dies the worker is re-parented, so `getppid()`
    changes; polled (portable), not Linux's parent-death signal, which fires when the parent *thread*
    that spawned the worker ends, and the shared pool outlives the thread of the run that started it.
    The resource tracker exits by itself once its last user (the parent, these workers) is gone."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_SECONDS)
    os._exit(1)


class _SharedPool:
    """One worker pool per process, kept between calls.

    `facepipe index` runs one Dagster run per batch of photos, each calling extract_many: a fresh
    pool per call would spawn the workers and load the models again every time (about a second of
    both cores per run). Settings travel with each photo, so one pool serves any settings; it is
    rebuilt when the worker count changes, after a worker died and in a forked child, and it is
    shut down after POOL_IDLE_SECONDS unused and at exit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._key: tuple | None = None
        self._users = 0
        self._timer: threading.Timer | None = None

    @staticmethod
    def _key_now(workers: int) -> tuple:
        return (os.getpid(), workers)

    def acquire(self, workers: int) -> tuple[ProcessPoolExecutor, bool]:
        """(pool, shared); a call that finds the shared pool busy with other settings gets its own."""
        key = self._key_now(workers)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._pool is not None and self._key != key:
                if self._users:
                    return _new_pool(workers), False
                self._drop_locked()
            if self._pool is None:
                self._pool, self._key = _new_pool(workers), key
            self._users += 1
            return self._pool, True

    def release(self, pool: ProcessPoolExecutor, shared: bool, broken: bool = False) -> None:
        if not shared:
            pool.shutdown(wait=False, cancel_futures=True)
            return
        with self._lock:
            self._users -= 1
            if pool is not self._pool:
                return
            if broken:
                self._drop_locked()
            elif self._users == 0:
                self._timer = threading.Timer(POOL_IDLE_SECONDS, self.shutdown)
                self._timer.daemon = True
                self._timer.start()

    def shutdown(self) -> None:
        with self._lock:
            if self._users == 0:
                self._drop_locked()

    def _drop_locked(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None and self._key is not None and self._key[0] == os.getpid():
            pool.shutdown(wait=False, cancel_futures=True)
        self._key = None


def _new_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(os.getpid(),)
    )


_shared = _SharedPool()
atexit.register(_shared.shutdown)


def _largest_first(jobs: Sequence[Job]) -> list[Job]:
    """Big photos first, so the pool does not end a batch with one worker on a big photo, the other idle."""

    def size(job: Job) -> int:
        try:
            return job[1].stat().st_size if isinstance(job[1], Path) else 0
        except OSError:
            return 0

    return sorted(jobs, key=size, reverse=True)


def _in_a_worker(settings: ExtractSettings) -> ExtractSettings:
    """One onnxruntime thread per worker process too: the pool already keeps every core busy."""
    return replace(settings, engines=replace(settings.engines, threads=1))


def warm_pool(settings: ExtractSettings, workers: int | None = None) -> None:
    """Start the shared pool's workers and load their models now, without waiting for them.

    `facepipe index` calls this while Dagster loads, so the first photos of its run find the workers
    ready (each spends ~0.5-1 s of a core starting and loading the networks). The workers are the
    ones `extract_many` uses next with the same worker count (or shut down after POOL_IDLE_SECONDS)."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1:
        return
    pool, shared = _shared.acquire(workers)
    try:
        for _ in range(workers):  # the pool starts a process per task while none is idle
            pool.submit(warm_up, _in_a_worker(settings))
    except BrokenProcessPool:
        _shared.release(pool, shared, broken=True)
        return
    _shared.release(pool, shared)


class _Early:
    """Photos handed to the shared pool before the run that extracts them asked for them.

    `facepipe index` starts the first photos this way while Dagster loads (it would otherwise only
    wait); the run's `extract_many` then takes each photo's future instead of queuing it again. A
    future is taken only with the same settings and while the file's size and mtime are those it had
    when it was handed over; anything else is extracted as usual and what is never taken is dropped.
    """

    def __init__(self) -> None:
        self._futures: dict[tuple[str, Path], tuple[Future, ExtractSettings, tuple[int, int]]] = {}
        self._pool: tuple[ProcessPoolExecutor, bool] | None = None

    def start(self, jobs: Sequence[Job], settings: ExtractSettings, workers: int) -> int:
        self.drop()
        paths = [(key, path, stat) for key, path in _largest_first(jobs) if (stat := _stat(path)) is not None]
        if workers <= 1 or len(paths) < 2:
            return 0
        settings = _in_a_worker(settings)
        self._pool = _shared.acquire(workers)
        for key, path, stat in paths:
            try:
                future = self._pool[0].submit(extract_file, key, path, settings)
            except BrokenProcessPool:  # left for the run to meet and report
                break
            self._futures[(key, path)] = (future, settings, stat)
        return len(self._futures)

    def take(self, jobs: Sequence[Job], settings: ExtractSettings) -> dict[str, Future]:
        """The early futures of these jobs that still hold, by key (the others are dropped)."""
        taken: dict[str, Future] = {}
        if not self._futures:
            return taken
        wanted = _in_a_worker(settings)
        for key, path in jobs:
            early = self._futures.pop((key, path), None) if isinstance(path, Path) else None
            if early is None:
                continue
            future, made_with, stat = early
            if made_with == wanted and _stat(path) == stat:
                taken[key] = future
            else:
                future.cancel()
        return taken

    def drop(self) -> None:
        """Cancel what was never taken and let the pool go idle."""
        for future, _, _ in self._futures.values():
            future.cancel()
        self._futures.clear()
        held, self._pool = self._pool, None
        if held is not None:
            _shared.release(*held)


def _stat(path: Path | Exception) -> tuple[int, int] | None:
    try:
        info = path.stat() if isinstance(path, Path) else None
    except OSError:
        return None
    return None if info is None else (info.st_size, info.st_mtime_ns)


_early = _Early()


def extract_early(jobs: Sequence[Job], settings: ExtractSettings, workers: int | None = None) -> int:
    """Start extracting these photos on the shared pool now, for a later `extract_many` of this
    process to take (replacing any earlier ones not taken); how many were started."""
    return _early.start(jobs, settings, workers or os.cpu_count() or 1)


def drop_early() -> None:
    """Forget the photos `extract_early` started that no `extract_many` took."""
    _early.drop()


def extract_many(
    jobs: Sequence[Job],
    settings: ExtractSettings,
    workers: int | None = None,
) -> Iterator[ImageRecord]:
    """Records in completion order; a crash in one photo's extraction fails only that photo."""
    workers = workers or os.cpu_count() or 1
    early = _early.take(jobs, settings)
    futures: dict[Future, str] = {future: key for key, future in early.items()}
    jobs = [job for job in jobs if job[0] not in early] if early else jobs
    if not early and min(workers, len(jobs)) <= 1:
        for key, path in jobs:
            yield _safe(key, path, settings)
        return
    settings = _in_a_worker(settings)
    pool, shared = _shared.acquire(workers)  # sized by the setting, not the batch, so every batch can reuse it
    broken = False
    try:
        for key, path in _largest_first(jobs):
            try:
                futures[pool.submit(extract_file, key, path, settings)] = key
            except BrokenProcessPool as exc:  # a worker died while we were still submitting
                broken = True
                yield _error(key, settings, f"extraction failed: {type(exc).__name__}: {exc}")
        for future in as_completed(futures):
            key = futures[future]
            try:
                yield future.result()
            except Exception as exc:  # a worker died (e.g. out of memory) or dlib raised
                broken = broken or isinstance(exc, BrokenProcessPool)
                yield _error(key, settings, f"extraction failed: {type(exc).__name__}: {exc}")
    finally:
        for future in futures:  # the caller stopped early: leave none of its photos queued
            future.cancel()
        _shared.release(pool, shared, broken)


def _safe(key: str, path: Path | Exception, settings: ExtractSettings) -> ImageRecord:
    try:
        return extract_file(key, path, settings)
    except Exception as exc:
        return _error(key, settings, f"extraction failed: {type(exc).__name__}: {exc}")
