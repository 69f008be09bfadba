"""The Dagster layer: a thin shell of partitions, assets, sensors and checks over facepipe's core."""
