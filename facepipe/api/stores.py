"""The face store of the API, held between requests.

A server process wants its store open between requests (opening embedded Qdrant loads the whole
collection), but embedded Qdrant is one process at a time: while the server holds the folder,
`facepipe index` and Dagster runs wait for it (and give up after their lock timeout). So the server
keeps the store open while requests come in and closes it after `idle_close` seconds (10) without
one; a search that finds the folder taken by an index run waits up to `lock_timeout` (15 s), then
answers 503 with Retry-After. With QDRANT_URL (a Qdrant server) or `--store pgvector` there is no
such lock and the store stays open until shutdown.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from facepipe.stores.base import FaceStore

if TYPE_CHECKING:
    from facepipe.library import Library


class HeldStore:
    """A store kept open across requests and closed after `idle` seconds without one (0: kept until close)."""

    def __init__(self, store: FaceStore, idle: float) -> None:
        self.store = store
        self.idle = idle
        self._lock = threading.Lock()
        self._busy = 0
        self._timer: threading.Timer | None = None

    @contextlib.contextmanager
    def use(self) -> Iterator[FaceStore]:
        with self._lock:
            self._busy += 1
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        try:
            yield self.store
        finally:
            with self._lock:
                self._busy -= 1
                if self._busy == 0 and self.idle > 0:
                    self._timer = threading.Timer(self.idle, self._release)
                    self._timer.daemon = True
                    self._timer.start()

    def _release(self) -> None:
        with self._lock:
            if self._busy == 0:
                self.store.close()
                self._timer = None

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self.store.close()


def open_store(
    library: Library, name: str, keep_open: bool = True, lock_timeout: float = 15.0
) -> tuple[FaceStore, bool]:
    """The library's store `name`; True when it is embedded Qdrant (one process at a time)."""
    from facepipe.stores import QdrantStore

    store = library.store(name)
    if not isinstance(store, QdrantStore):
        return store, False
    store.close()
    held = store.with_options(keep_open=keep_open, lock_timeout=lock_timeout)
    return held, held.is_local
