"""Fixtures and child-process workers for test_stores.py (real embedded stores, no mocks).

Workers live here, not in the test module, so multiprocessing's spawn can import them by name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facepipe.faces.records import Face, face_id

DIM = 128


def synthetic_face(
    key: str,
    box: tuple[int, int, int, int],
    embedding: np.ndarray,
    *,
    tag: str = "v1",
    score: float | None = None,
    detector: str = "hog",
) -> Face:
    """A face with no photo behind it: at `box` (top, right, bottom, left) of `key`, whose hash is named
    after `tag` (also its model version), with `embedding` and a stand-in crop."""
    return Face(
        face_id=face_id(key, f"sha-{tag}", box),
        image_key=key,
        sha256=f"sha-{tag}",
        top=box[0],
        right=box[1],
        bottom=box[2],
        left=box[3],
        score=score,
        detector=detector,
        embedding=embedding,
        crop=b"jpeg",
        model_version=tag,
    )


def clustered_faces(
    rng: np.random.Generator, image_keys: list[str], per_image: int, centers: np.ndarray, *, tag: str = "v1"
) -> dict[str, list[Face]]:
    """Faces whose embeddings sit near one of `centers` (like several photos of the same people)."""
    out: dict[str, list[Face]] = {}
    for key in image_keys:
        faces = []
        for i in range(per_image):
            box = (10 * i, 10 * i + 40, 10 * i + 40, 10 * i)
            center = centers[rng.integers(len(centers))]
            emb = (center + rng.normal(0, 0.02, DIM)).astype(np.float32)
            faces.append(synthetic_face(key, box, emb, tag=tag, score=0.9 if i % 2 else None, detector="cnn"))
        out[key] = faces
    return out


def centers_for(rng: np.random.Generator, n: int) -> np.ndarray:
    # ~1.6 apart from each other, faces ~0.3 from each other within a cluster: like dlib's scale.
    return rng.normal(0, 0.1, (n, DIM))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh FACEPIPE_DATA for the test module; the embedded servers in it are gone afterwards."""
    path = tmp_path_factory.mktemp("facepipe-data")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("QDRANT_URL", "QDRANT_API_KEY", "FACEPIPE_PG_DSN"):
            mp.delenv(name, raising=False)
        mp.setenv("FACEPIPE_DATA", str(path))
        yield path


@pytest.fixture(scope="module")
def qdrant_store(data_dir: Path) -> Iterator[Any]:
    from facepipe.stores import QdrantStore

    store = QdrantStore(path=data_dir / "qdrant")
    store.ensure_schema()
    yield store
    store.close()


@pytest.fixture(scope="module")
def pg_store(data_dir: Path) -> Iterator[Any]:
    from facepipe.stores import PgVectorStore
    from facepipe.stores.embedded_pg import embedded_postgres

    store = PgVectorStore(embedded_dir=data_dir / "postgres")
    store.ensure_schema()
    yield store
    store.close()
    server = embedded_postgres(data_dir / "postgres")
    server.release()
    assert not server.running(), "the last user left but the embedded Postgres still runs"


@pytest.fixture(params=["qdrant", "pgvector"])
def store(request: pytest.FixtureRequest) -> Any:
    """Each behaviour test runs against both stores, starting empty."""
    s = request.getfixturevalue("qdrant_store" if request.param == "qdrant" else "pg_store")
    wipe(s)
    return s


def wipe(store: Any) -> None:
    store.delete_images(list(store.face_ids_by_image()))
    assert store.count() == 0


# -- child processes ---------------------------------------------------------------------------------


def _use_data(data: str) -> None:
    os.environ["FACEPIPE_DATA"] = data
    for name in ("QDRANT_URL", "QDRANT_API_KEY", "FACEPIPE_PG_DSN"):
        os.environ.pop(name, None)


def pg_writer(data: str, prefix: str, n_images: int, seed: int, start: Any, out: Any) -> None:
    """Start-or-join the embedded Postgres, create the schema (racing the sibling) and write."""
    _use_data(data)
    from facepipe.stores import PgVectorStore

    rng = np.random.default_rng(seed)
    batch = clustered_faces(rng, [f"{prefix}/{i}.jpg" for i in range(n_images)], 3, centers_for(rng, 4))
    store = PgVectorStore(embedded_dir=Path(data) / "postgres")
    start.wait(30)  # both processes hit start-up and DDL together
    try:
        store.ensure_schema()
        store.replace_images(batch)
        out.put((prefix, "ok", sum(len(v) for v in store.face_ids_by_image(list(batch)).values()), os.getpid()))
    except BaseException as err:
        out.put((prefix, "error", repr(err), os.getpid()))
        raise
    finally:
        store.close()


def pg_holder(data: str, out: Any) -> None:
    """Join the embedded Postgres, write, tell the parent, then hang until killed with SIGKILL."""
    _use_data(data)
    from facepipe.stores import PgVectorStore

    rng = np.random.default_rng(7)
    store = PgVectorStore(embedded_dir=Path(data) / "postgres")
    store.replace_images(clustered_faces(rng, ["held/a.jpg"], 3, centers_for(rng, 2)))
    with store.connection() as conn:
        conn.execute("SELECT 1")
        out.put(("ready", os.getpid(), store.count()))
        # Flush before hanging: killed mid-send, this process would keep the queue's shared write lock.
        out.close()
        out.join_thread()
        time.sleep(600)


def pg_reader(data: str, out: Any) -> None:
    """Use the embedded Postgres after someone was killed; leave normally (the last one out stops it)."""
    _use_data(data)
    from facepipe.stores import PgVectorStore

    store = PgVectorStore(embedded_dir=Path(data) / "postgres")
    try:
        before = store.count()
        rng = np.random.default_rng(8)
        store.replace_images(clustered_faces(rng, ["after/b.jpg"], 2, centers_for(rng, 2)))
        out.put(("ok", before, store.count()))
    except BaseException as err:
        out.put(("error", repr(err), None))
        raise
    finally:
        store.close()


def qdrant_waiter(data: str, lock_timeout: float, out: Any) -> None:
    """Count the embedded Qdrant while another process may hold its lock."""
    _use_data(data)
    from facepipe.stores import QdrantStore, StoreError

    store = QdrantStore(path=Path(data) / "qdrant", lock_timeout=lock_timeout)
    out.put(("trying", lock_timeout, time.monotonic()))
    t0 = time.monotonic()
    try:
        n = store.count()
        out.put(("ok", lock_timeout, n, time.monotonic() - t0))
    except StoreError as err:
        out.put(("error", lock_timeout, str(err), time.monotonic() - t0))
    finally:
        store.close()
