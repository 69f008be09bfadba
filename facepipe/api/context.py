"""What the routes share: the held store, the Parquet, the people state, the images folder, the settings and limits."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from facepipe.api.stores import HeldStore
from facepipe.faces.extract import ExtractSettings
from facepipe.objects import BucketImages
from facepipe.people import People, PersonIdSink
from facepipe.settings import DEFAULT_RENDERS
from facepipe.stores.parquet import ParquetStore


@dataclass(frozen=True)
class ApiContext:
    held: HeldStore
    parquet: ParquetStore
    people: People
    images_root: Path | BucketImages
    extract: ExtractSettings  # how query photos are read, as the index reads the library's photos
    max_upload: int
    searches: threading.BoundedSemaphore  # face extraction is CPU- and memory-heavy: more uploads wait
    renders: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(DEFAULT_RENDERS))
    """Photos decoded and drawn at once (a 100 MP PNG takes ~1 GB while drawn): more wait, then get 503."""
    render_wait: float = 60.0
    """Seconds a photo request waits for a rendering slot before it answers 503 with Retry-After."""
    sinks: Callable[[], AbstractContextManager[list[PersonIdSink]]] = field(default=lambda: _no_sinks())
    """The stores an edit sends person ids to, open for the edit."""


@contextlib.contextmanager
def _no_sinks() -> Iterator[list[PersonIdSink]]:
    yield []


def _context(request: Request) -> ApiContext:
    return request.app.state.context


Context = Annotated[ApiContext, Depends(_context)]
"""A route parameter of this type receives the app's context."""
