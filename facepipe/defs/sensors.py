"""The images sensor: partitions follow the folder as photos appear, change or disappear, and what the
Parquet or a store lost behind facepipe's back is healed, as `facepipe index` heals it."""

import json
import time

import dagster as dg

from facepipe import heal, sync
from facepipe.defs.partitions import images_partitions, runs_in_flight
from facepipe.defs.people import INDEX_JOB
from facepipe.defs.resources import LibraryResource
from facepipe.library import LibraryError
from facepipe.partition_ranges import range_tags

STORE_CHECK_SECONDS = 300
"""How often (at most) a tick counts the faces in each store against the manifest; counting may start
the embedded Postgres (1-2 s). The Parquet check (one stat per file) runs on every tick."""


def range_request(batch: list[str], reason: str) -> dg.RunRequest:
    return dg.RunRequest(
        partition_key=batch[0] if len(batch) == 1 else None,
        tags={**range_tags(batch), "facepipe/reason": reason},
    )


def stores_checked(cursor: str | None) -> float:
    """When a tick last counted the stores (epoch seconds; 0 when never or the cursor is unreadable)."""
    try:
        value = json.loads(cursor or "{}").get("stores_checked", 0)
    except (ValueError, AttributeError):
        return 0.0
    return float(value) if isinstance(value, int | float) else 0.0


HEALING_LINES = 100
"""Photos named one by one in a tick's log (a lost Parquet folder would name every photo)."""


def log_healing(context: dg.SensorEvaluationContext, healing: heal.Healing) -> None:
    lines = healing.lines()
    for line in lines[:HEALING_LINES]:
        context.log.warning(f"healing: {line}")
    if len(lines) > HEALING_LINES:
        context.log.warning(f"healing: ... and {len(lines) - HEALING_LINES} more")


@dg.sensor(
    job_name=INDEX_JOB,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Follows the images folder: new photos get partitions and runs, changed ones are re-run, "
    "deleted ones are erased everywhere. A missing or emptied folder, or one that would erase more than "
    "FACEPIPE_MAX_DELETE_SHARE of the library, deletes nothing and says so. When no run is in flight it "
    "heals too, as `facepipe index` does: lost or damaged Parquet files (every tick) are extracted again, "
    f"stores whose face count drifted (checked every {STORE_CHECK_SECONDS // 60} minutes) exported again.",
)
def images_sensor(context: dg.SensorEvaluationContext, library: LibraryResource) -> dg.SensorResult:
    """Stat every file, hash only what moved; request runs only for new or changed content, and for what
    healing marked."""
    started = time.perf_counter()
    lib = library.get()
    cursor = context.cursor
    try:
        known = context.instance.get_dynamic_partitions(images_partitions.name)
        try:
            outcome = sync.plan(lib, known)
        except LibraryError as exc:
            return dg.SensorResult(skip_reason=str(exc), cursor=cursor)
        # A run mid-export legitimately differs from the manifest, and healing deletes strays: only
        # between runs. What a run writes is checked by the first tick after it.
        healing = None
        if not runs_in_flight(context.instance):
            now = time.time()
            check_stores = now - stores_checked(cursor) >= STORE_CHECK_SECONDS
            healing = heal.heal(lib, stores=check_stores)
            if check_stores:
                cursor = json.dumps({"stores_checked": int(now)})
        plan = outcome.plan
        batches = sync.commit(lib, outcome, pending=False)
        runs = [range_request(batch, "new or changed") for batch in batches]
        if healing is not None:
            log_healing(context, healing)  # also a store that could not be checked
            if healing.found:
                healed = sync.healed_batches(lib, outcome)
                runs += [range_request(batch, "healed") for batch in healed]
                context.log.info(
                    f"healing: {len(healing.damaged)} photos extracted again (damaged), {len(healing.repaired)} "
                    f"exported again (repaired); {sum(map(len, healed))} photos in {len(healed)} runs"
                )
        context.log.info(
            f"{lib.banner()}: {len(plan.new)} new, {len(plan.changed)} changed, {len(plan.deleted)} deleted, "
            f"{plan.unchanged} unchanged in {time.perf_counter() - started:.2f}s; {len(runs)} runs"
            + ("" if healing is not None else " (a run is in flight: no healing this tick)")
        )
    finally:
        lib.close()
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if outcome.add_partitions:
        requests.append(images_partitions.build_add_request(outcome.add_partitions))
    if outcome.delete_partitions:
        requests.append(images_partitions.build_delete_request(outcome.delete_partitions))
    return dg.SensorResult(run_requests=runs, dynamic_partitions_requests=requests, cursor=cursor)
