"""The Dagster layer: a thin shell of partitions, assets, sensors and checks over facepipe's core."""

import warnings

import dagster as dg

# backfill_policy and pools are marked beta; they are what makes batched runs possible.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
