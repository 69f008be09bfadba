"""The `people` asset: every face clustered into persons (facepipe.people), pushed to Parquet and all stores.

Automation: `AutomationCondition.eager()`, evaluated by `people_automation` (on by default). Eager
requests a run once the photos' assets changed and none of them is missing or in progress, so a
backfill of many batches ends in one people run, not one per batch; the runs of `index_images`
(`facepipe index` and the images sensor) include `people` anyway, so eager is what catches
materializations launched from the UI. A run where little changed costs a stat of every Parquet
file plus work proportional to the change (facepipe.people.People.update).

Photos deleted by the images sensor delete partitions rather than materialize anything, which no
automation condition sees: `people_sensor` stats the Parquet files (no reading) every minute and
requests a run when they differ from what people last saw. `facepipe index` does the same check.
"""

import dagster as dg

from facepipe.defs.assets import FACES, OWNERS
from facepipe.defs.instance import QUIET_CONSOLE
from facepipe.defs.partitions import in_process_tags
from facepipe.defs.resources import LibraryResource
from facepipe.settings import Settings
from facepipe.stores import registry

PEOPLE_JOB = "people_job"
INDEX_JOB = "index_images"
PEOPLE_JOBS = {PEOPLE_JOB, INDEX_JOB}
"""Jobs whose runs end with `people` (index_images selects everything downstream of faces)."""


def build_people(settings: Settings) -> tuple[dg.AssetsDefinition, dg.SensorDefinition, dg.SensorDefinition]:
    @dg.asset(
        deps=[FACES, *(spec.asset_name for spec in registry.specs())],
        automation_condition=dg.AutomationCondition.eager(),
        retry_policy=dg.RetryPolicy(max_retries=3, delay=settings.retry_delay, backoff=dg.Backoff.EXPONENTIAL),
        kinds={"python", "sqlite", "parquet"},
        group_name="people",
        owners=OWNERS,
        tags={"domain": "people", "personal_data": "yes"},
    )
    def people(context: dg.AssetExecutionContext, library: LibraryResource) -> dg.MaterializeResult:
        """Faces clustered into persons (Chinese whispers at 0.5, same-photo faces kept apart).

        Writes `person_id` into the faces Parquet (only files whose assignments changed) and into every
        store; keeps ids, names and merges in `people.sqlite` under the data folder.
        """
        lib = library.get()
        try:
            report = lib.people.update(stores=list(lib.stores().values()))
        finally:
            lib.close()
        context.log.info(
            f"{report.persons} persons over {report.assigned} of {report.faces} faces; {report.added} faces in, "
            f"{report.removed} out, {report.reclustered} re-clustered, {report.changed} person ids changed, "
            f"{report.files_rewritten} files rewritten in {report.seconds:.2f}s"
        )
        if report.retry:
            context.log.warning(f"rewritten by the faces asset meanwhile, left for the next run: {report.retry}")
        return dg.MaterializeResult(metadata=report.metadata())

    people_automation = dg.AutomationConditionSensorDefinition(
        "people_automation",
        target=dg.AssetSelection.assets(people),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description="Clusters people after photos were materialized outside `index_images` (UI, backfills).",
    )

    @dg.sensor(
        job_name=PEOPLE_JOB,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Clusters people again when the faces Parquet changed without a run (photos deleted).",
    )
    def people_sensor(context: dg.SensorEvaluationContext, library: LibraryResource) -> dg.SensorResult:
        """A run when the faces Parquet differs from what people last saw (deleted photos, mostly)."""
        if not library.get().people.is_stale():
            return dg.SensorResult(skip_reason="people are up to date with the faces Parquet")
        waiting = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING]
        statuses = [*waiting, dg.DagsterRunStatus.STARTED]
        in_flight = context.instance.get_runs(dg.RunsFilter(statuses=statuses), limit=100)
        if any(run.job_name in PEOPLE_JOBS or people.key in (run.asset_selection or ()) for run in in_flight):
            # An index batch, an images-sensor run or the automation sensor's run will bring people up to date.
            return dg.SensorResult(skip_reason="a run that includes people is already on its way")
        return dg.SensorResult(run_requests=[dg.RunRequest()])

    return people, people_automation, people_sensor


def refresh_people(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """Run `people` in-process (what `facepipe index` does when photos were only deleted)."""
    return defs.resolve_job_def(PEOPLE_JOB).execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET_CONSOLE, tags=in_process_tags()
    )
