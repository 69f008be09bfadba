"""Starting what `facepipe index` needs while Dagster loads on another thread.

Importing Dagster and opening its instance cost 1-2.5 s of one core (BENCHMARKS.md), nearly all Python
imports (the thread holds the GIL). Starting the embedded Postgres and the extraction workers costs
about as long again, but in other processes: this process only waits. One after the other, as
before, they added up; side by side, the longer hides the shorter. The workers also begin on the
first run's photos at once, so the cores extract while Dagster loads instead of idling; the run's
`faces` step takes those records as if it had queued the photos itself. A worker pool that fails to
start is left for the run to meet and report; an embedded Postgres that will not start stops the
index with its reason, as before (it was started right after Dagster then).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from facepipe.library import Library
from facepipe.manifest import SyncPlan

T = TypeVar("T")


def in_background(work: Callable[[], T], name: str) -> Future[T]:
    """Run `work` on a daemon thread; the future holds its result or its exception."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to whoever waits on the future
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


def uses_embedded_postgres(library: Library) -> bool:
    """pgvector is one of the stores, with no server named (the people and manifest state then stay
    in SQLite files: only the store needs the embedded server)."""
    return not library.settings.pg_dsn and "pgvector" in library.store_names


@contextmanager
def embedded_postgres_held(library: Library, active: bool = True) -> Iterator[None]:
    """Keep the embedded Postgres up (started now if it is not) until the block ends.

    Each run closes its pool at the end, and the last pool of the last process stops the server:
    without this, every batch of `facepipe index` would start and stop it again (0.5 s a run).
    A server that will not start (after `embedded_pg.START_PATIENCE`) raises StoreError with the reason,
    before any run: retrying it in every export step would take minutes to say the same.
    """
    if not active or not uses_embedded_postgres(library):
        yield
        return
    from facepipe.stores.embedded_pg import embedded_postgres

    server = embedded_postgres(library.data / "postgres", library.settings.pg_shared_buffers)

    def nothing_to_close() -> None:
        pass

    server.attach(nothing_to_close)
    try:
        yield
    finally:
        server.detach(nothing_to_close)


def wait(future: Future[T]) -> T:
    """The background work's result, once it is done (the time spent here is what it costs the caller)."""
    return future.result()


def first_photos(library: Library, diff: SyncPlan) -> list[str]:
    """The photos the index's first run will extract, as far as is known before Dagster is loaded:
    new, changed or never indexed with these settings, in key order, at most a run's worth. A guess
    that misses only costs their early start (`faces.batch.extract_early`)."""
    todo = set(diff.to_run) | set(library.manifest.pending(library.settings.extract.model_version))
    first = sorted(todo)[: library.settings.batch]  # tombstones looked up for these only (100k keys: 200 queries)
    gone = library.manifest.forgotten_among(first)
    return [key for key in first if key not in gone]


@contextmanager
def started(library: Library, photos: Sequence[str], open_dagster: Callable[[], T]) -> Iterator[T]:
    """`open_dagster()`'s result, made on another thread while this one starts the extraction workers
    on `photos` (when there are two or more) and the embedded Postgres; both stay up until the block
    ends, and the photos' records wait in the pool for the run that asks for them. A Postgres that
    will not start raises here, as it did when the index started it after Dagster.

    The order keeps the two threads from importing at the same time: the workers are spawned and the
    Postgres package imported before the Dagster thread starts, and starting Postgres only waits on
    other processes."""
    from facepipe.faces import batch

    workers = library.settings.worker_count
    if len(photos) >= 2 and workers >= 2 and isinstance(library.root, Path):  # one photo: in this process
        from facepipe.indexing import jobs_for

        with suppress(Exception):  # the run starts its own pool and reports what fails
            batch.warm_pool(library.settings.extract, workers)
            batch.extract_early(jobs_for(photos, library.root), library.settings.extract, workers)
    if uses_embedded_postgres(library):
        from facepipe.stores.embedded_pg import preload

        preload()
    try:
        dagster = in_background(open_dagster, "facepipe-dagster")
        with embedded_postgres_held(library):
            yield wait(dagster)
    finally:
        batch.drop_early()
