"""The `faces_compacted` asset: the per-photo Parquet consolidated into a few files for analytics.

Not part of the index runs (a batch of 64 photos would rewrite shards for a handful of rows): it runs
on its own, from `compaction_automation` on a cron (every 15 minutes) once
`people` (and so the faces) changed since the last tick, and at the end of `facepipe index`. A run
rewrites only the shards whose photos changed (facepipe.compaction).
"""

import dagster as dg

from facepipe.compaction import Compactor
from facepipe.defs.people import people
from facepipe.stores.parquet import ParquetStore

COMPACT_CRON = "*/15 * * * *"


@dg.asset(
    deps=[people],
    automation_condition=dg.AutomationCondition.on_cron(COMPACT_CRON),
    kinds={"parquet", "duckdb"},
    group_name="analytics",
)
def faces_compacted(context: dg.AssetExecutionContext, parquet: ParquetStore) -> dg.MaterializeResult:
    """Every face (all columns but the crop) in `parquet/compact/faces-*.parquet`, every photo's status in
    `parquet/compact/images-*.parquet`: a few large files, sorted by image_key, instead of one per photo."""
    report = Compactor(parquet).run()
    context.log.info(
        f"{report.files_read} photo files read, {report.files_dropped} gone, {report.shards_written} shards "
        f"written in {report.seconds:.2f}s"
    )
    return dg.MaterializeResult(metadata=report.metadata())


compact_job = dg.define_asset_job(
    "compact_faces", selection=[faces_compacted], description="Consolidate the per-photo Parquet for analytics."
)

compaction_automation = dg.AutomationConditionSensorDefinition(
    "compaction_automation",
    target=dg.AssetSelection.assets(faces_compacted),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
)


def refresh_compaction(instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult | None:
    """Run `faces_compacted` in-process if a per-photo file moved since it last ran (what `facepipe index` calls)."""
    from facepipe.definitions import defs

    if not Compactor(defs.resources["parquet"]).is_stale():
        return None
    return defs.resolve_job_def(compact_job.name).execute_in_process(
        instance=instance or dg.DagsterInstance.get(),
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
