"""The `faces_compacted` asset: the per-photo Parquet consolidated into a few files for analytics.

Not part of the index runs (a batch of 64 photos would rewrite shards for a handful of rows): it runs
on its own, from `compaction_automation` on a cron (every 15 minutes) once `people` (and so the faces)
changed since the last tick, and at the end of `facepipe index`. A run rewrites only the shards whose
photos changed (facepipe.compaction).
"""

import dagster as dg

from facepipe.defs.assets import OWNERS
from facepipe.defs.instance import QUIET_CONSOLE
from facepipe.defs.resources import LibraryResource

COMPACT_CRON = "*/15 * * * *"
COMPACT_JOB = "compact_faces"


@dg.asset(
    deps=["people"],
    automation_condition=dg.AutomationCondition.on_cron(COMPACT_CRON),
    kinds={"parquet", "duckdb"},
    group_name="analytics",
    owners=OWNERS,
    tags={"domain": "analytics", "personal_data": "yes"},
)
def faces_compacted(context: dg.AssetExecutionContext, library: LibraryResource) -> dg.MaterializeResult:
    """Every face (all columns but the crop) in `parquet/compact/faces-*.parquet`, every photo's status in
    `parquet/compact/images-*.parquet`: a few large files, sorted by image_key, instead of one per photo."""
    report = library.get().compactor.run()
    context.log.info(
        f"{report.files_read} photo files read, {report.files_dropped} gone, {report.shards_written} shards "
        f"written in {report.seconds:.2f}s"
    )
    return dg.MaterializeResult(metadata=report.metadata())


compact_job = dg.define_asset_job(
    COMPACT_JOB, selection=[faces_compacted], description="Consolidate the per-photo Parquet for analytics."
)

compaction_automation = dg.AutomationConditionSensorDefinition(
    "compaction_automation",
    target=dg.AssetSelection.assets(faces_compacted),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Consolidates the per-photo Parquet every 15 minutes once faces or people changed.",
)


def refresh_compaction(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """Run `faces_compacted` in-process (what `facepipe index` calls when a per-photo file moved)."""
    return defs.resolve_job_def(COMPACT_JOB).execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET_CONSOLE
    )
