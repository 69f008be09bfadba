"""Assembling the Definitions for one library: what `dagster dev`, the daemon and `facepipe index` load."""

from __future__ import annotations

import dagster as dg

from facepipe.defs.assets import build_index_photos
from facepipe.defs.checks import build_checks
from facepipe.defs.compaction import compact_job, compaction_automation, faces_compacted
from facepipe.defs.people import INDEX_JOB, PEOPLE_JOB, build_people
from facepipe.defs.resources import LibraryResource
from facepipe.defs.sensors import images_sensor
from facepipe.library import Library

CHECK_JOB = "check_stores"


def build_definitions(library: Library) -> dg.Definitions:
    settings = library.settings
    index_photos = build_index_photos(settings)
    people, people_automation, people_sensor = build_people(settings)
    stores_match_parquet, photos_readable = build_checks()
    index_job = dg.define_asset_job(
        INDEX_JOB,
        selection=dg.AssetSelection.assets(index_photos, people).without_checks(),
        description="The faces of a batch of image partitions into the Parquet and every store, then people.",
    )
    people_job = dg.define_asset_job(PEOPLE_JOB, selection=[people], description="Cluster faces into persons.")
    check_job = dg.define_asset_job(
        CHECK_JOB,
        selection=dg.AssetSelection.checks(stores_match_parquet, photos_readable),
        description="Every photo readable; every store holds the Parquet's face ids.",
    )
    return dg.Definitions(
        assets=[index_photos, people, faces_compacted],
        asset_checks=[stores_match_parquet, photos_readable],
        jobs=[index_job, check_job, people_job, compact_job],
        schedules=[
            dg.ScheduleDefinition(
                name="check_stores_nightly",
                job=check_job,
                cron_schedule="0 3 * * *",
                description="The consistency checks every night (turn it on in the UI).",
            )
        ],
        sensors=[images_sensor, people_sensor, people_automation, compaction_automation],
        resources={"library": LibraryResource.of(library)},
        # A run's steps (index_photos, then people) run one after the other anyway, and extraction has
        # its own worker pool: a subprocess per step would only add its start-up (seconds per run).
        executor=dg.in_process_executor,
    )
