"""The one Definitions object: what `dagster dev`, the daemon and `facepipe index` all load."""

import dagster as dg

from facepipe.defs.assets import faces
from facepipe.defs.resources import library_from_env, parquet_from_env
from facepipe.defs.sensors import images_sensor

index_job = dg.define_asset_job(
    "index_images",
    selection=dg.AssetSelection.assets(faces).downstream(),
    description="Faces of a batch of image partitions, then their exports.",
)

defs = dg.Definitions(
    assets=[faces],
    jobs=[index_job],
    sensors=[images_sensor],
    resources={"library": library_from_env(), "parquet": parquet_from_env()},
)
