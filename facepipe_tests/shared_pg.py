"""A shared Postgres for the tests of state in Postgres: the embedded server, reached over its socket the
way a worker on another machine reaches a real one; each test gets a database of its own.

Workers live here, not in the test module, so multiprocessing's spawn can import them by name.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from facepipe.stores.embedded_pg import embedded_postgres

_numbers = itertools.count(1)


def with_database(uri: str, name: str) -> str:
    """The URI with another database name (the socket and user stay)."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI of one embedded Postgres for the whole session (stopped at the end)."""
    server = embedded_postgres(tmp_path_factory.mktemp("shared_pg") / "postgres")
    yield server.uri()
    server.release()


@pytest.fixture
def pg_dsn(pg_server: str) -> str:
    """A fresh, empty database on the shared server."""
    name = f"facepipe_t{next(_numbers)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return with_database(pg_server, name)


# -- child-process workers ---------------------------------------------------------------------------------


def manifest_writer(dsn: str, root: str, keys: list[str], store: str, rounds: int, start) -> None:
    """Upsert the same photos as the other writer, mark them indexed, and export them to this writer's store."""
    from facepipe.manifest import SCHEMA, Manifest, SyncPlan
    from facepipe.statedb import PostgresDB

    manifest = Manifest(PostgresDB(dsn, SCHEMA, name="manifest"), Path(root))
    start.wait(120)
    for n in range(rounds):
        plan = SyncPlan(new=keys, stats={k: (100 + n, 1_700_000_000_000_000_000 + n, f"sha-{k}") for k in keys})
        manifest.apply(plan)
        manifest.mark_indexed_many([(k, f"sha-{k}", "v1", "ok") for k in keys])
        manifest.mark_exported(store, keys)


def people_writer(dsn: str, tag: str, rounds: int, start) -> None:
    """Each round: a new person and a face of it, in one exclusive transaction (read, then write the counter)."""
    import numpy as np

    from facepipe.people import state

    db = state.postgres_db(dsn)
    start.wait(120)
    for n in range(rounds):
        with state.writing(db) as st:
            pid = st.new_person(state.timestamp())
            row = st.add_face(f"{tag}-{n}", f"{tag}/{n}.jpg", np.full(128, n, np.float32))
            st.set_persons_of({row: pid})
