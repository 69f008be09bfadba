"""One dynamic partition per image file; the key is its escaped path under the images root."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import dagster as dg

from facepipe.settings import Settings
from facepipe.stores import registry

images_partitions = dg.DynamicPartitionsDefinition(name="images")


def drop_partitions(instance: dg.DagsterInstance, keys: Sequence[str], assets: Sequence[str]) -> list[str]:
    """Delete the partitions of erased photos and, where the storage can, their materialization records
    (whose metadata names the photos). Returns the keys that were partitions."""
    known = set(instance.get_dynamic_partitions(images_partitions.name))
    present = [k for k in keys if k in known]
    if present:
        for asset in assets:
            # Open-source event logs cannot wipe single partitions yet; their events hold the key
            # and face counts only (never embeddings or crops).
            with contextlib.suppress(NotImplementedError):
                instance.wipe_asset_partitions(dg.AssetKey(asset), present)
    for key in present:
        instance.delete_dynamic_partition(images_partitions.name, key)
    return present


def forget_partitions(settings: Settings, keys: Sequence[str]) -> list[str]:
    """What `facepipe forget` does in Dagster: drop the erased photos' partitions from the instance."""
    from facepipe.defs.instance import ensure_dagster_home

    ensure_dagster_home(settings)
    assets = ["faces", *(spec.asset_name for spec in registry.specs())]
    with dg.DagsterInstance.get() as instance:
        return drop_partitions(instance, keys, assets)
