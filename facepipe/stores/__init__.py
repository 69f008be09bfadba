"""Face stores: Qdrant and Postgres/pgvector behind one `FaceStore` protocol (and the Parquet store);
the vector stores are listed in `facepipe.stores.registry`.

Exports resolve lazily, so `import facepipe.stores.parquet` does not pull in qdrant-client and psycopg.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facepipe.stores.base import FaceStore, Match, StoreError
    from facepipe.stores.pgvector import PgVectorStore
    from facepipe.stores.qdrant import QdrantStore

__all__ = ["FaceStore", "Match", "PgVectorStore", "QdrantStore", "StoreError"]

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
