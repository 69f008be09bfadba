"""`facepipe index`: sync partitions with the folder, then materialize what is new, changed or stale.

Runs in-process through the same job the UI and the sensor launch, against the same Dagster
instance (DAGSTER_HOME, by default under the data folder), so the UI shows these runs too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from tqdm import tqdm

from facepipe.batching import DEFAULT_BATCH, contiguous_batches, range_tags
from facepipe.config import paths


def ensure_dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or paths().dagster_home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    fresh = not config.exists()
    if fresh or config.read_text() in OLD_DAGSTER_YAMLS:  # ours, unedited: bring it up to date
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    if fresh:  # create the storage now, so a webserver started next to us never races to migrate it
        with dg.DagsterInstance.get():
            pass
    return home


QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""The progress bar and summary speak for the run; Dagster's own events stay in the instance."""


DAGSTER_YAML = """\
telemetry:
  enabled: false
concurrency:
  pools:
    # Embedded Qdrant allows one writer: the export pools (facepipe_qdrant, facepipe_pgvector) run one step at a time.
    default_limit: 1
# Dagster's SQLite event log, same files, without an fsync and a checkpoint per event and with a run's
# asset events written in one transaction: 130 ms less per photo (facepipe/defs/storage.py).
event_log_storage:
  module: facepipe.defs.storage
  class: FastSqliteEventLogStorage
"""

OLD_DAGSTER_YAMLS = (
    """\
telemetry:
  enabled: false
concurrency:
  pools:
    # Embedded Qdrant allows one writer: the export pools (facepipe_qdrant, facepipe_pgvector) run one step at a time.
    default_limit: 1
""",
)
"""dagster.yaml files written by earlier versions: replaced by DAGSTER_YAML (same storage folders)."""


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
    seconds: float = 0.0


EXPORT_STORES = ("qdrant", "pgvector")


def repair_exports(manifest, defs: dg.Definitions) -> list[str]:
    """Compare each store with the Parquet; images that differ are exported again."""
    from facepipe.consistency import compare

    resources = defs.resources
    _, diffs = compare(resources["parquet"], {name: resources[name] for name in EXPORT_STORES})
    for name, diff in diffs.items():
        manifest.reset_exports(diff.images, name)
    return sorted({key for diff in diffs.values() for key in diff.images})


def run_index(show_progress: bool = True, batch_size: int = DEFAULT_BATCH, repair: bool = False) -> IndexReport:
    started = time.perf_counter()
    ensure_dagster_home()
    from facepipe import indexing
    from facepipe.compaction import Compactor
    from facepipe.defs.partitions import images_partitions
    from facepipe.defs.resources import library_from_env, parquet_from_env
    from facepipe.faces.models import dlib_build
    from facepipe.sync import sync_partitions

    # The Dagster definitions (and the store clients they import: ~1.5 s) are loaded only when something
    # is to be done, so an unchanged folder is a stat of each file and a few queries.
    instance = dg.DagsterInstance.get()
    library = library_from_env()
    manifest = library.manifest()
    parquet_from_env().sweep_temp_files()
    plan = sync_partitions(instance, manifest)
    report = IndexReport(new=len(plan.new), changed=len(plan.changed), deleted=len(plan.deleted))
    report.images = len(manifest.keys())
    if repair:
        report.repaired = repair_exports(manifest, _definitions())
    pending = sorted(
        set(manifest.pending(library.settings().model_version)).union(
            *(manifest.unexported(store) for store in EXPORT_STORES)
        )
    )
    order = instance.get_dynamic_partitions(images_partitions.name)
    batches = contiguous_batches(pending, order, batch_size)
    job = _definitions().resolve_job_def("index_images") if batches else None
    bar = tqdm(total=len(pending), unit="photo", disable=not show_progress or not pending, dynamic_ncols=True)
    if pending and show_progress:
        tqdm.write(
            f"facepipe: {len(pending)} photos to index with {library.settings().model_version} on {dlib_build()}"
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
        with embedded_postgres_held(bool(batches)):
            for batch in batches:
                result = job.execute_in_process(
                    instance=instance, raise_on_error=False, run_config=QUIET_CONSOLE, **run_target(batch)
                )
                if not result.success:
                    report.failed_runs.append(f"{batch[0]}..{batch[-1]} (run {result.run_id}): {failure(result)}")
    finally:
        remove_hook()
        bar.close()
    # The consolidated Parquet for analytics (parquet/compact/): only the shards whose photos moved.
    if Compactor(parquet_from_env()).is_stale():
        from facepipe.defs.compaction import refresh_compaction

        compacted = refresh_compaction(instance)
        if compacted is not None and not compacted.success:
            report.failed_runs.append(f"faces_compacted (run {compacted.run_id}): {failure(compacted)}")
    report.seconds = time.perf_counter() - started
    return report


def _definitions() -> dg.Definitions:
    from facepipe.definitions import defs

    return defs


@contextmanager
def embedded_postgres_held(active: bool) -> Iterator[None]:
    """Keep the embedded Postgres up from the first run to the last.

    Each run closes its pool at the end, and the last pool of the last process stops the server:
    without this, every batch would start and stop it again (0.5 s a run).
    """
    if not active or os.environ.get("FACEPIPE_PG_DSN"):
        yield
        return
    from facepipe.stores.embedded_pg import embedded_postgres

    server = embedded_postgres()

    def nothing_to_close() -> None:
        pass

    server.attach(nothing_to_close)
    try:
        yield
    finally:
        server.detach(nothing_to_close)


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
    """execute_in_process arguments for one key or a contiguous key range."""
    if len(batch) == 1:
        return {"partition_key": batch[0]}
    return {"tags": range_tags(batch)}
