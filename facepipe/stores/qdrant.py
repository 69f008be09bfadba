"""Faces in Qdrant: a server when a url is given, else Qdrant's engine in-process under `path`.

`QdrantStore` only chooses the engine and forwards the `FaceStore` calls:

* `url` set: `ServerQdrantStore` (qdrant-client; facepipe.stores.qdrant_server), shared by any number of
  processes.
* `url` unset: `EdgeQdrantStore` (qdrant-edge-py; facepipe.stores.qdrant_edge) in `path`, which is
  `<data>/qdrant`: one process at a time, the others wait up to `lock_timeout` seconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facepipe.faces.records import Face
from facepipe.stores.base import Match, StoreBase
from facepipe.stores.qdrant_edge import EdgeQdrantStore

if TYPE_CHECKING:
    from facepipe.stores.qdrant_server import ServerQdrantStore


class QdrantStore(StoreBase):
    """Collection `faces` (128-d, Euclid). `url` unset: the embedded engine in `path`.

    `keep_open` (embedded only): keep the engine and the folder lock between operations until `close()`,
    for a process answering many searches; other processes then wait for it.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        path: Path | str | None = None,
        *,
        lock_timeout: float = 60.0,
        keep_open: bool = False,
    ) -> None:
        self._config = (url, api_key, path)
        self.engine: EdgeQdrantStore | ServerQdrantStore
        if url:
            from facepipe.stores.qdrant_server import ServerQdrantStore  # qdrant-client takes a second to import

            self.engine = ServerQdrantStore(url, api_key)
        elif path is None:
            raise ValueError("QdrantStore needs a url (a Qdrant server) or a path (the embedded engine's folder)")
        else:
            self.engine = EdgeQdrantStore(path, lock_timeout=lock_timeout, keep_open=keep_open)

    def __repr__(self) -> str:
        return f"QdrantStore({self.engine!r})"

    def with_options(self, *, lock_timeout: float = 60.0, keep_open: bool = False) -> QdrantStore:
        """The same store (url, key, folder) with other embedded-engine options (a server holding it open)."""
        url, api_key, path = self._config
        return QdrantStore(url, api_key, path, lock_timeout=lock_timeout, keep_open=keep_open)

    @property
    def is_local(self) -> bool:
        """True for the embedded engine (one process at a time)."""
        return isinstance(self.engine, EdgeQdrantStore)

    @property
    def folder(self) -> Path | None:
        return self.engine.folder if isinstance(self.engine, EdgeQdrantStore) else None

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """Hold the engine for a block (embedded: this process keeps the folder meanwhile)."""
        if isinstance(self.engine, EdgeQdrantStore):
            with self.engine.session() as engine:
                yield engine
        else:
            with self.engine.client() as client:
                yield client

    def ensure_schema(self) -> None:
        self.engine.ensure_schema()

    def replace_images(self, faces_by_image: Mapping[str, Sequence[Face]]) -> None:
        self.engine.replace_images(faces_by_image)

    def delete_images(self, image_keys: Iterable[str]) -> None:
        self.engine.delete_images(image_keys)

    def delete_faces(self, face_ids: Iterable[str]) -> None:
        self.engine.delete_faces(face_ids)

    def search_many(
        self, embeddings: Sequence[np.ndarray] | np.ndarray, top_k: int = 10, max_distance: float | None = None
    ) -> list[list[Match]]:
        return self.engine.search_many(embeddings, top_k, max_distance)

    def face_ids_by_image(self, image_keys: Iterable[str] | None = None) -> dict[str, set[str]]:
        return self.engine.face_ids_by_image(image_keys)

    def faces_of_images(self, image_keys: Iterable[str]) -> dict[str, list[Match]]:
        return self.engine.faces_of_images(image_keys)

    def images_of_person(self, person_id: str) -> list[str]:
        return self.engine.images_of_person(person_id)

    def count(self) -> int:
        return self.engine.count()

    def set_person_ids(self, mapping: Mapping[str, str | None]) -> None:
        self.engine.set_person_ids(mapping)

    def compact(self, progress: bool = False) -> dict[str, Any]:
        """Embedded: rebuild the shard so no byte of a deleted face remains in its files (see qdrant_edge)."""
        return self.engine.compact(progress)

    def close(self) -> None:
        self.engine.close()
