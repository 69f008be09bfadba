"""Face stores: Qdrant and Postgres/pgvector behind one `FaceStore` protocol (and the Parquet store).

Exports resolve lazily, so `import facepipe.stores.parquet` does not pull in qdrant-client and psycopg.
"""

from __future__ import annotations

import os
from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facepipe.stores.base import FaceStore, Match, StoreError
    from facepipe.stores.pgvector import PgVectorStore
    from facepipe.stores.qdrant import QdrantStore

__all__ = ["FaceStore", "Match", "PgVectorStore", "QdrantStore", "StoreError", "stores_from_env"]

_WHERE = {
    "FaceStore": "base",
    "Match": "base",
    "StoreError": "base",
    "PgVectorStore": "pgvector",
    "QdrantStore": "qdrant",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"facepipe.stores.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'facepipe.stores' has no attribute {name!r}")


def stores_from_env() -> tuple[QdrantStore, PgVectorStore]:
    """Both stores as the environment says. Set variables become `dagster.EnvVar`s, so the secret values
    never sit in resource config (Dagster shows config in its UI); unset ones mean "embedded"."""
    import dagster as dg

    from facepipe.stores.pgvector import PgVectorStore
    from facepipe.stores.qdrant import QdrantStore

    def env(name: str) -> str | None:
        return dg.EnvVar(name) if os.environ.get(name) else None

    # path stays unset: the embedded folder follows FACEPIPE_DATA when the store is used, not when built.
    qdrant = QdrantStore(url=env("QDRANT_URL"), api_key=env("QDRANT_API_KEY"))
    return qdrant, PgVectorStore(dsn=env("FACEPIPE_PG_DSN"))
