"""Export assets: the same faces as the Parquet, in Qdrant and in Postgres/pgvector.

Each run replaces the faces of its partitions in one bulk call per store: new ids are upserted,
then the image's other ids deleted, so an unchanged photo never has a moment with no faces.
"""

import os

import dagster as dg

from facepipe.defs.assets import BATCH_POLICY, faces
from facepipe.defs.partitions import images_partitions
from facepipe.defs.resources import PhotoLibrary
from facepipe.stores.base import FaceStore
from facepipe.stores.parquet import ParquetStore

STORE_RETRY = dg.RetryPolicy(
    max_retries=3, delay=float(os.environ.get("FACEPIPE_RETRY_DELAY") or 2), backoff=dg.Backoff.EXPONENTIAL
)
"""A store that is briefly down (restart, network blip) is retried after 2, 4 and 8 seconds."""


def export(
    context: dg.AssetExecutionContext, library: PhotoLibrary, parquet: ParquetStore, store: FaceStore, name: str
) -> dg.MaterializeResult:
    batch = parquet.load_faces(context.partition_keys)
    store.replace_images(batch)
    library.manifest().mark_exported(name, batch)
    count = sum(len(v) for v in batch.values())
    context.log.info(f"{count} faces of {len(batch)} images exported")
    return dg.MaterializeResult(metadata={"images": len(batch), "faces": count})


def export_asset(name: str, store_key: str, kind: str, description: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        deps=[faces],
        partitions_def=images_partitions,
        backfill_policy=BATCH_POLICY,
        automation_condition=dg.AutomationCondition.eager(),
        retry_policy=STORE_RETRY,
        # Embedded Qdrant allows one client at a time; a pool of 1 queues writers instead of failing.
        pool=f"facepipe_{store_key}",
        kinds={kind},
        group_name="faces",
        description=description,
        required_resource_keys={"library", "parquet", store_key},
    )
    def _export(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        resources = context.resources
        return export(context, resources.library, resources.parquet, getattr(resources, store_key), store_key)

    return _export


qdrant_faces = export_asset("qdrant_faces", "qdrant", "qdrant", "The faces in Qdrant collection `faces`.")
pgvector_faces = export_asset(
    "pgvector_faces", "pgvector", "postgres", "The faces in Postgres table `faces` (pgvector)."
)
