"""One dynamic partition per image file; the key is its escaped path under the images root."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import dagster as dg

from facepipe.processes import alive
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
    with dg.DagsterInstance.get() as instance:
        if runs_in_flight(instance):
            # A run's partition range may name these keys: deleting them now would fail it. The photos
            # are already erased (tombstones keep the run from writing them); the next `facepipe index`
            # with no run in flight (the running one's own, at its end) drops the partitions.
            return []
        return drop_partitions(instance, keys, partition_assets())


def partition_assets() -> list[str]:
    return ["faces", *(spec.asset_name for spec in registry.specs())]


PID_TAG = "facepipe/pid"
"""Tag of the runs `facepipe index` executes in its own process: a run whose process is gone (killed
hard, so Dagster still says "started") is not in flight."""


def in_process_tags() -> dict[str, str]:
    return {PID_TAG: str(os.getpid())}


def runs_in_flight(instance: dg.DagsterInstance) -> bool:
    """Whether a run is queued or running (other than one whose `facepipe index` process is dead)."""
    statuses = [
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=statuses), limit=100):
        pid = record.dagster_run.tags.get(PID_TAG, "")
        if not pid.isdigit() or alive(int(pid)):
            return True
    return False
