"""The images sensor: partitions follow the folder as photos appear, change or disappear."""

import time

import dagster as dg

from facepipe import sync
from facepipe.defs.partitions import images_partitions
from facepipe.defs.people import INDEX_JOB
from facepipe.defs.resources import LibraryResource
from facepipe.library import LibraryError
from facepipe.partition_ranges import range_tags


def range_request(batch: list[str], reason: str) -> dg.RunRequest:
    return dg.RunRequest(
        partition_key=batch[0] if len(batch) == 1 else None,
        tags={**range_tags(batch), "facepipe/reason": reason},
    )


@dg.sensor(
    job_name=INDEX_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Follows the images folder: new photos get partitions and runs, changed ones are re-run, "
    "deleted ones are erased everywhere. A missing or emptied folder, or one that would erase more than "
    "FACEPIPE_MAX_DELETE_SHARE of the library, deletes nothing and says so.",
)
def images_sensor(context: dg.SensorEvaluationContext, library: LibraryResource) -> dg.SensorResult:
    """Stat every file, hash only what moved; request runs only for new or changed content."""
    started = time.perf_counter()
    lib = library.get()
    known = context.instance.get_dynamic_partitions(images_partitions.name)
    try:
        outcome = sync.plan(lib, known)
    except LibraryError as exc:
        return dg.SensorResult(skip_reason=str(exc))
    finally:
        lib.close()
    plan = outcome.plan
    batches = sync.commit(lib, outcome, pending=False)
    runs = [range_request(batch, "new or changed") for batch in batches]
    context.log.info(
        f"{lib.banner()}: {len(plan.new)} new, {len(plan.changed)} changed, {len(plan.deleted)} deleted, "
        f"{plan.unchanged} unchanged in {time.perf_counter() - started:.2f}s; {len(runs)} runs"
    )
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if outcome.add_partitions:
        requests.append(images_partitions.build_add_request(outcome.add_partitions))
    if outcome.delete_partitions:
        requests.append(images_partitions.build_delete_request(outcome.delete_partitions))
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests)
