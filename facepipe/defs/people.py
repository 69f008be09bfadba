"""The `people` asset: every face clustered into persons (facepipe.people), pushed to Parquet and both stores.

Automation: `AutomationCondition.eager()`, evaluated by `people_automation` (on by default; the
default automation sensor has to be switched on in the UI). Eager requests a run once faces or
exports changed and none of them is missing or in progress, so a backfill of many batches ends in
one people run, not one per batch; the runs of `index_images` and of the images sensor include
`people` anyway (it is downstream of `faces`), so eager is what catches materializations launched
by hand. `on_cron` would add up to a period of delay for no saving: a run where little changed costs
a stat of every Parquet file plus work proportional to the change (facepipe.people.People.update).

Photos deleted by the images sensor delete partitions rather than materialize anything, which no
automation condition sees: `people_sensor` stats the Parquet files (no reading) every minute and
requests a run when they differ from what people last saw. `facepipe index` does the same check.
"""

import dagster as dg

from facepipe.defs.assets import faces
from facepipe.defs.exports import STORE_RETRY, pgvector_faces, qdrant_faces
from facepipe.people import People
from facepipe.stores.parquet import ParquetStore
from facepipe.stores.pgvector import PgVectorStore
from facepipe.stores.qdrant import QdrantStore


@dg.asset(
    deps=[faces, qdrant_faces, pgvector_faces],
    automation_condition=dg.AutomationCondition.eager(),
    retry_policy=STORE_RETRY,
    kinds={"python", "sqlite", "parquet"},
    group_name="people",
)
def people(
    context: dg.AssetExecutionContext, parquet: ParquetStore, qdrant: QdrantStore, pgvector: PgVectorStore
) -> dg.MaterializeResult:
    """Faces clustered into persons (Chinese whispers at 0.5, same-photo faces kept apart).

    Writes `person_id` into the faces Parquet (only files whose assignments changed) and into Qdrant
    and pgvector; keeps ids, names and merges in `people.sqlite` under the data folder.
    """
    report = People(parquet=parquet).update(stores=[qdrant, pgvector])
    context.log.info(
        f"{report.persons} persons over {report.assigned} of {report.faces} faces; {report.added} faces in, "
        f"{report.removed} out, {report.reclustered} re-clustered, {report.changed} person ids changed, "
        f"{report.files_rewritten} files rewritten in {report.seconds:.2f}s"
    )
    if report.retry:
        context.log.warning(f"rewritten by the faces asset meanwhile, left for the next run: {report.retry}")
    return dg.MaterializeResult(metadata=report.metadata())


people_job = dg.define_asset_job("people_job", selection=[people], description="Cluster faces into persons.")
PEOPLE_JOBS = {people_job.name, "index_images"}
"""Jobs whose runs end with `people` (index_images selects everything downstream of faces)."""

people_automation = dg.AutomationConditionSensorDefinition(
    "people_automation",
    target=dg.AssetSelection.assets(people),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)


@dg.sensor(job=people_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def people_sensor(context: dg.SensorEvaluationContext, parquet: ParquetStore) -> dg.SensorResult:
    """A run when the faces Parquet differs from what people last saw (deleted photos, mostly)."""
    if not People(parquet=parquet).is_stale():
        return dg.SensorResult(skip_reason="people are up to date with the faces Parquet")
    waiting = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING]
    in_flight = context.instance.get_runs(dg.RunsFilter(statuses=[*waiting, dg.DagsterRunStatus.STARTED]), limit=100)
    if any(run.job_name in PEOPLE_JOBS or people.key in (run.asset_selection or ()) for run in in_flight):
        # An index batch, an images-sensor run or the automation sensor's run will bring people up to date.
        return dg.SensorResult(skip_reason="a run that includes people is already on its way")
    return dg.SensorResult(run_requests=[dg.RunRequest()])


def refresh_people(instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult | None:
    """Run `people` in-process if the faces Parquet moved since it last ran (what `facepipe index` calls)."""
    from facepipe.definitions import defs

    if not People(parquet=defs.resources["parquet"]).is_stale():
        return None
    job = defs.resolve_job_def(people_job.name)
    return job.execute_in_process(
        instance=instance or dg.DagsterInstance.get(),
        raise_on_error=False,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
