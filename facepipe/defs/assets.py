"""The `faces` asset: each image partition's faces, boxes, crops and embeddings, as Parquet."""

import dagster as dg

from facepipe.batching import DEFAULT_BATCH
from facepipe.defs.partitions import images_partitions
from facepipe.defs.resources import PhotoLibrary
from facepipe.faces.extract import ExtractSettings
from facepipe.indexing import index_batch
from facepipe.stores.parquet import ParquetStore

BATCH_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=DEFAULT_BATCH)


class FacesConfig(dg.Config):
    force: bool = False
    """Extract again even photos already indexed from the same bytes with the same settings."""


@dg.asset(
    partitions_def=images_partitions,
    backfill_policy=BATCH_POLICY,
    # Changing detection or embedding settings changes this, so Dagster marks every partition stale.
    code_version=ExtractSettings.from_env().model_version,
    kinds={"python", "parquet"},
    group_name="faces",
)
def faces(
    context: dg.AssetExecutionContext, config: FacesConfig, library: PhotoLibrary, parquet: ParquetStore
) -> dg.MaterializeResult:
    """Every face of each photo in the run: box, detector score, 128-d embedding and a JPEG crop.

    Unreadable photos get an `error` status row with the reason instead of failing the run.
    """
    settings = library.settings()
    summary = index_batch(
        context.partition_keys,
        library.root,
        library.manifest(),
        parquet,
        settings,
        library.workers or None,
        force=config.force,
    )
    for key, reason in summary.errors:
        context.log.warning(f"{key}: {reason}")
    context.log.info(
        f"{summary.images} images, {summary.faces} faces, {len(summary.errors)} errors in {summary.seconds:.1f}s"
    )
    return dg.MaterializeResult(metadata={**summary.metadata(), "detector": settings.detect.detector})
