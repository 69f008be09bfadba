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


def specs(settings: Settings | None = None) -> list[StoreSpec]:
    """The stores in use, in registration order (the first is the default for searches): every registered
    one, or those FACEPIPE_STORES names (a user with only Postgres leaves Qdrant out)."""
    from facepipe.settings import SettingsError, current

    settings = settings or current()
    if settings.stores is None:
        return list(_STORES.values())
    unknown = [name for name in settings.stores if name not in _STORES]
    if unknown:
        known = ", ".join(_STORES)
        raise SettingsError(f"FACEPIPE_STORES names unknown store(s) {', '.join(unknown)} (known: {known})")
    return [spec for name, spec in _STORES.items() if name in settings.stores]


def names(settings: Settings | None = None) -> list[str]:
    return [spec.name for spec in specs(settings)]


def spec(name: str, settings: Settings | None = None) -> StoreSpec:
    """The store of this name, if it is in use."""
    for found in specs(settings):
        if found.name == name:
            return found
    raise KeyError(f"unknown store {name!r} (in use: {', '.join(names(settings))})")


def _qdrant(settings: Settings) -> FaceStore:
    from facepipe.stores.qdrant import QdrantStore

    return QdrantStore(url=settings.qdrant_url, api_key=settings.qdrant_api_key, path=str(settings.data / "qdrant"))


def _pgvector(settings: Settings) -> FaceStore:
    from facepipe.stores.pgvector import PgVectorStore

    return PgVectorStore(
        dsn=settings.pg_dsn, embedded_dir=str(settings.data / "postgres"), shared_buffers=settings.pg_shared_buffers
    )


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
