"""The vector stores facepipe exports to, listed once.

Exports (one Dagster asset per entry), the consistency checks, erasure, `status`, `search --store`,
the HTTP API and the manifest's export tracking all iterate this registry, so adding a store is one
adapter module plus one `register(...)` call (README, "Extending").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from facepipe.stores.base import FaceStore, describe_dsn

if TYPE_CHECKING:
    from facepipe.settings import Settings


@dataclass(frozen=True)
class StoreSpec:
    """How to build one vector store from the settings, and how it shows up in Dagster."""

    name: str
    """Short name: `--store NAME`, keys of `status --json`, the manifest's export records."""
    build: Callable[[Settings], FaceStore]
    describe: Callable[[Settings], str]
    """Where the store is, for banners and the library record: never a secret."""
    asset: str = ""
    """The Dagster asset holding this store's copy (default `<name>_faces`)."""
    kind: str = ""
    """Dagster kind tag shown on the asset (default: the name)."""
    description: str = ""

    @property
    def asset_name(self) -> str:
        return self.asset or f"{self.name}_faces"


_STORES: dict[str, StoreSpec] = {}


def register(spec: StoreSpec) -> StoreSpec:
    """Add (or replace) a store; everything that iterates `specs()` picks it up."""
    _STORES[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _STORES.pop(name, None)


def specs() -> list[StoreSpec]:
    """The registered stores, in registration order (the first is the default for searches)."""
    return list(_STORES.values())


def names() -> list[str]:
    return list(_STORES)


def spec(name: str) -> StoreSpec:
    try:
        return _STORES[name]
    except KeyError:
        raise KeyError(f"unknown store {name!r} (known: {', '.join(_STORES)})") from None


def _qdrant(settings: Settings) -> FaceStore:
    from facepipe.stores.qdrant import QdrantStore

    return QdrantStore(url=settings.qdrant_url, api_key=settings.qdrant_api_key, path=str(settings.data / "qdrant"))


def _pgvector(settings: Settings) -> FaceStore:
    from facepipe.stores.pgvector import PgVectorStore

    return PgVectorStore(dsn=settings.pg_dsn, embedded_dir=str(settings.data / "postgres"))


register(
    StoreSpec(
        name="qdrant",
        build=_qdrant,
        describe=lambda s: f"Qdrant server at {describe_dsn(s.qdrant_url)}" if s.qdrant_url else "embedded Qdrant",
        kind="qdrant",
        description="The faces in Qdrant collection `faces` (128-d, Euclid; payload = the record minus embedding "
        "and crop; point id = face_id).",
    )
)
register(
    StoreSpec(
        name="pgvector",
        build=_pgvector,
        describe=lambda s: f"Postgres at {describe_dsn(s.pg_dsn)}" if s.pg_dsn else "embedded Postgres+pgvector",
        kind="postgres",
        description="The faces in Postgres table `faces` (embedding vector(128), HNSW index with vector_l2_ops).",
    )
)
