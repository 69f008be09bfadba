"""The one Definitions object: what `dagster dev`, the daemon and `facepipe index` all load."""

import dagster as dg

from facepipe.defs.assets import faces
from facepipe.defs.checks import stores_match_parquet
from facepipe.defs.compaction import compact_job, compaction_automation, faces_compacted
from facepipe.defs.exports import pgvector_faces, qdrant_faces
from facepipe.defs.people import people, people_automation, people_job, people_sensor
from facepipe.defs.resources import library_from_env, parquet_from_env
from facepipe.defs.sensors import images_sensor
from facepipe.stores import stores_from_env

qdrant, pgvector = stores_from_env()

index_job = dg.define_asset_job(
    "index_images",
    # Compaction runs on its own (cron, end of `facepipe index`), not once per batch.
    selection=dg.AssetSelection.assets(faces).downstream().without_checks() - dg.AssetSelection.assets(faces_compacted),
    description="Faces of a batch of image partitions, their exports to Qdrant and pgvector, then people.",
)

check_job = dg.define_asset_job(
    "check_stores",
    selection=dg.AssetSelection.checks(stores_match_parquet),
    description="Compare the face ids in Qdrant and pgvector with the Parquet.",
)

defs = dg.Definitions(
    assets=[faces, qdrant_faces, pgvector_faces, people, faces_compacted],
    asset_checks=[stores_match_parquet],
    jobs=[index_job, check_job, people_job, compact_job],
    schedules=[dg.ScheduleDefinition(job=check_job, cron_schedule="0 3 * * *")],
    sensors=[images_sensor, people_sensor, people_automation, compaction_automation],
    resources={
        "library": library_from_env(),
        "parquet": parquet_from_env(),
        "qdrant": qdrant,
        "pgvector": pgvector,
    },
)
