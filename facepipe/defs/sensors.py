"""The images sensor: partitions follow the folder as photos appear, change or disappear."""

import time

import dagster as dg

from facepipe.batching import DEFAULT_BATCH, contiguous_batches, range_tags
from facepipe.defs.partitions import images_partitions
from facepipe.defs.resources import PhotoLibrary
from facepipe.forget import forget_images
from facepipe.stores.parquet import ParquetStore
from facepipe.stores.pgvector import PgVectorStore
from facepipe.stores.qdrant import QdrantStore
from facepipe.sync import partition_changes

RUN_TARGETS = ["faces"]


def range_request(batch: list[str], reason: str) -> dg.RunRequest:
    return dg.RunRequest(
        partition_key=batch[0] if len(batch) == 1 else None,
        tags={**range_tags(batch), "facepipe/reason": reason},
    )


@dg.sensor(
    # faces_compacted is refreshed on its own schedule (facepipe/defs/compaction.py), not per run.
    target=dg.AssetSelection.assets(*RUN_TARGETS).downstream() - dg.AssetSelection.assets("faces_compacted"),
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def images_sensor(
    context: dg.SensorEvaluationContext,
    library: PhotoLibrary,
    parquet: ParquetStore,
    qdrant: QdrantStore,
    pgvector: PgVectorStore,
) -> dg.SensorResult:
    """Stat every file, hash only what moved; request runs only for new or changed content."""
    started = time.perf_counter()
    manifest = library.manifest()
    plan = manifest.diff()
    if plan.deleted:
        forget_images(plan.deleted, manifest=manifest, parquet=parquet, stores=[qdrant, pgvector])
    known = context.instance.get_dynamic_partitions(images_partitions.name)
    added, gone = partition_changes(plan, known, manifest)
    order = [k for k in known if k not in set(gone)] + added
    runs = [range_request(b, "new or changed") for b in contiguous_batches(plan.to_run, order, DEFAULT_BATCH)]
    context.log.info(
        f"{len(plan.new)} new, {len(plan.changed)} changed, {len(plan.deleted)} deleted, "
        f"{plan.unchanged} unchanged in {time.perf_counter() - started:.2f}s; {len(runs)} runs"
    )
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if added:
        requests.append(images_partitions.build_add_request(added))
    if gone:
        requests.append(images_partitions.build_delete_request(gone))
    manifest.apply(plan)
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests)
