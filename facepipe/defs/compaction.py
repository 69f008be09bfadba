"""The `faces_compacted` asset: the per-photo Parquet consolidated into a few files for analytics.

Not part of the index runs (a batch of photos would rewrite shards for a handful of rows): it runs
on its own, from `compaction_automation` on a cron (every 15 minutes) once `people` (and so the faces)
changed since the last tick, and at the end of `facepipe index` (in its process, recorded as a
materialization without a run). Either way only the shards whose photos changed are rewritten
(facepipe.compaction).
"""

import dagster as dg

from facepipe.defs.assets import OWNERS
from facepipe.defs.resources import LibraryResource
from facepipe.library import Library

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


def compact_in_process(library: Library, instance: dg.DagsterInstance) -> str | None:
    """What `facepipe index` does at its end: compact here and record a `faces_compacted` materialization
    with the same metadata, without a run (a run costs Dagster more than rewriting a few shards).
    Returns the error, if any, in one line."""
    try:
        report = library.compactor.run()
    except Exception as exc:  # reported by `facepipe index` (exit code 1); the per-photo files are untouched
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return f"faces_compacted failed: {type(exc).__name__}: {first_line}"
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key=faces_compacted.key, metadata=report.metadata())
    )
    return None
