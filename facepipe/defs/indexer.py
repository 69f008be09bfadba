"""`facepipe index`: sync the partitions with the folder, then materialize what is new, changed or stale.

Runs in-process through the same job the UI and the sensor launch (`index_images`), against the same
Dagster instance (DAGSTER_HOME, by default under the data folder), so the UI shows these runs too.
The sync itself is the sensor's (facepipe.sync); only applying its partition changes differs.
"""

from __future__ import annotations

import importlib
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field

import dagster as dg
from tqdm import tqdm

from facepipe import heal, indexing, sync
from facepipe.defs.build import build_definitions
from facepipe.defs.compaction import compact_in_process
from facepipe.defs.instance import QUIET_CONSOLE, ensure_dagster_home
from facepipe.defs.partitions import (
    drop_partitions,
    images_partitions,
    in_process_tags,
    partition_assets,
    runs_in_flight,
)
from facepipe.defs.people import INDEX_JOB, refresh_people
from facepipe.library import Library
from facepipe.manifest import SyncPlan
from facepipe.partition_ranges import contiguous_batches, range_tags
from facepipe.settings import Settings
from facepipe.warmup import embedded_postgres_held


@dataclass
class IndexReport:
    images: int = 0  # photos in the folder
    processed: int = 0
    faces: int = 0
    new: int = 0
    changed: int = 0
    deleted: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    failed_runs: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # images whose store copies differed
    damaged: list[str] = field(default_factory=list)  # images whose Parquet was lost or damaged: extracted again
    people: dict = field(default_factory=dict)
    seconds: float = 0.0


def repair_exports(library: Library) -> list[str]:
    """Compare each store with the Parquet face id by face id; images that differ are exported again
    (a damaged or missing Parquet file is extracted again instead, never exported as "no faces")."""
    return heal.heal(library, full=True).repaired


def live_batches(library: Library, instance: dg.DagsterInstance, batch: list[str]) -> list[list[str]]:
    """The batch minus photos forgotten since it was planned, as ranges of the partitions there are now
    (a range must never name a key `forget` deleted)."""
    gone = library.manifest.forgotten_among(batch)
    if not gone:
        return [batch]
    order = instance.get_dynamic_partitions(images_partitions.name)
    return contiguous_batches([k for k in batch if k not in gone], order, library.settings.batch)


def drop_forgotten_partitions(library: Library, instance: dg.DagsterInstance) -> None:
    """Partitions of photos forgotten while a run was in flight (`forget` leaves them to the run's end),
    once no run is in flight (one may name them in its range)."""
    if runs_in_flight(instance):
        return
    gone = library.manifest.forgotten_among(instance.get_dynamic_partitions(images_partitions.name))
    if gone:
        drop_partitions(instance, sorted(gone), partition_assets())


RUN_MODULES = (
    "dagster._core.execution.execute_in_process",
    "dagster._core.execution.plan.active",
    "dagster._core.executor.in_process",
    "dagster._core.instance.runs.run_domain",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.system_config.composite_descent",
    "facepipe.people.library",
)
"""What the first run of a process imports (measured: the in-process executor, run creation, log
capture, the people asset's clustering), loaded with the instance instead."""


def open_instance(settings: Settings) -> dg.DagsterInstance:
    """The Dagster home made or brought up to date, and its instance (which imports Dagster's storage:
    most of the cost), with what the first run imports. Safe on a thread of its own once
    `export_dagster_home` ran on the main one: `facepipe index` opens it while the workers extract."""
    ensure_dagster_home(settings)
    instance = dg.DagsterInstance.get()
    for name in RUN_MODULES:
        with suppress(ImportError):  # a module Dagster moved is only imported by the run itself
            importlib.import_module(name)
    return instance


@dataclass(frozen=True)
class Loaded:
    """What an index needs of Dagster, made in one go: `facepipe index` makes it on a thread of its own
    while the workers extract the first photos."""

    instance: dg.DagsterInstance
    defs: dg.Definitions
    job: dg.JobDefinition


def load(library: Library) -> Loaded:
    """The instance (`open_instance`), the library's Definitions and its index job, resolved."""
    instance = open_instance(library.settings)
    defs = build_definitions(library)
    return Loaded(instance, defs, defs.resolve_job_def(INDEX_JOB))


def run_index(
    library: Library,
    show_progress: bool = True,
    repair: bool = False,
    confirm_deletions: bool = False,
    diff: SyncPlan | None = None,
    loaded: Loaded | None = None,
) -> IndexReport:
    """Everything `facepipe index` does after the no-Dagster fast path found work (raises LibraryError).

    `loaded`: Dagster loaded already for this library (the CLI loads it while the workers start)."""
    started = time.perf_counter()
    loaded = loaded or load(library)
    instance = loaded.instance
    library.parquet.sweep_temp_files()
    outcome = sync.plan(
        library, instance.get_dynamic_partitions(images_partitions.name), confirmed=confirm_deletions, diff=diff
    )
    if outcome.add_partitions:
        instance.add_dynamic_partitions(images_partitions.name, outcome.add_partitions)
    for key in outcome.delete_partitions:
        instance.delete_dynamic_partition(images_partitions.name, key)
    drop_forgotten_partitions(library, instance)
    plan = outcome.plan
    report = IndexReport(new=len(plan.new), changed=len(plan.changed), deleted=len(plan.deleted))
    # A store mid-export differs from the manifest, and healing deletes store copies of photos the
    # manifest does not list yet: heal only with no other run in flight (the sensor waits the same way).
    if runs_in_flight(instance):
        print("facepipe: another run is in flight; healing is left to the next index or sensor tick", file=sys.stderr)
    else:
        healing = heal.heal(library, full=repair)
        report.repaired, report.damaged = healing.repaired, sorted(healing.damaged)
    batches = sync.commit(library, outcome, pending=True)
    report.images = len(library.manifest.keys())
    pending = sum(len(b) for b in batches)
    bar = tqdm(total=pending, unit="photo", disable=not show_progress or not pending, dynamic_ncols=True)
    if pending and show_progress:
        from facepipe.faces.models import dlib_build

        tqdm.write(
            f"facepipe: {library.banner()}: {pending} photos to index with "
            f"{library.settings.extract.model_version} on {dlib_build(library.settings.extract.engines)}"
        )

    def progress(record) -> None:
        bar.update(1)
        report.processed += 1
        report.faces += record.face_count
        if not record.ok:
            report.errors.append((record.image_key, record.reason or "unknown"))
        bar.set_postfix(faces=report.faces, errors=len(report.errors), refresh=False)

    remove_hook = indexing.add_progress_hook(progress)
    try:
        with embedded_postgres_held(library, bool(batches)):
            for planned in batches:
                for batch in live_batches(library, instance, planned):
                    result = loaded.job.execute_in_process(
                        instance=instance, raise_on_error=False, run_config=QUIET_CONSOLE, **run_target(batch)
                    )
                    if not result.success:
                        report.failed_runs.append(f"{batch[0]}..{batch[-1]} (run {result.run_id}): {failure(result)}")
            drop_forgotten_partitions(library, instance)
            # Deleted photos (no run) and runs that failed before people: one more clustering pass.
            if library.people.is_stale():
                result = refresh_people(loaded.defs, instance)
                if not result.success:
                    report.people["error"] = f"clustering people failed (run {result.run_id}): {failure(result)}"
    finally:
        remove_hook()
        bar.close()
        library.close()
    # The consolidated Parquet for analytics (parquet/compact/): only the shards whose photos moved.
    if library.compactor.is_stale():
        error = compact_in_process(library, instance)
        if error:
            report.failed_runs.append(error)
    report.people.setdefault("persons", len(library.people.list()))
    heal.check_parquet(library)  # read the footers of what this run wrote now, not in the next fast path
    report.seconds = time.perf_counter() - started
    return report


def failure(result: dg.ExecuteInProcessResult) -> str:
    """Which step failed and why, in one line (messages from the stores never carry secrets).

    After retries Dagster's own failure says only "Exceeded max_retries"; the cause is on the retries.
    """
    causes: dict[str, str] = {}
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if event.step_key and error is not None and (event.is_step_failure or event.is_step_up_for_retry):
            cause = error.cause if error.cause and "max_retries" in error.message else error
            causes[event.step_key] = cause.message.strip().splitlines()[0]
            if event.is_step_failure:
                return f"{event.step_key} failed: {causes[event.step_key]}"
    return next((f"{step} failed: {msg}" for step, msg in causes.items()), "run failed")


def run_target(batch: list[str]) -> dict:
    """execute_in_process arguments for one key or a contiguous key range (tagged with this process)."""
    tags = in_process_tags()
    if len(batch) == 1:
        return {"partition_key": batch[0], "tags": tags}
    return {"tags": {**range_tags(batch), **tags}}
