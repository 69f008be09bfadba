"""Keeping Dagster's image partitions equal to the files in the folder (used by `facepipe index`)."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from facepipe.defs.partitions import images_partitions
from facepipe.forget import forget_images
from facepipe.manifest import Manifest, SyncPlan


def sync_partitions(instance: dg.DagsterInstance, manifest: Manifest, defs: dg.Definitions | None = None) -> SyncPlan:
    """Erase deleted photos, add partitions for new ones (and any the instance lacks), record the diff.

    `defs` (default: facepipe.definitions, loaded only when a photo was deleted) names the stores to erase from.
    """
    plan = manifest.diff()
    if plan.deleted:
        if defs is None:
            from facepipe.definitions import defs
        forget_images(plan.deleted, manifest=manifest, **erasers(defs))
    added, gone = partition_changes(plan, instance.get_dynamic_partitions(images_partitions.name), manifest)
    if added:
        instance.add_dynamic_partitions(images_partitions.name, added)
    for key in gone:
        instance.delete_dynamic_partition(images_partitions.name, key)
    manifest.apply(plan)
    return plan


def partition_changes(plan: SyncPlan, known: Sequence[str], manifest: Manifest) -> tuple[list[str], list[str]]:
    """(keys to add, keys to delete) so the partitions become the files the manifest knows after `plan`;
    partitions the instance lacks (a new DAGSTER_HOME) are added back too. Call before `apply`."""
    existing = set(known)
    wanted = sorted((set(manifest.keys()) - set(plan.deleted)) | set(plan.new))
    return [k for k in wanted if k not in existing], [k for k in plan.deleted if k in existing]


def erasers(defs: dg.Definitions) -> dict:
    """The stores a deleted photo must vanish from, as configured in the definitions."""
    resources = defs.resources or {}
    stores = [resources[name] for name in ("qdrant", "pgvector") if name in resources]
    return {"parquet": resources["parquet"], "stores": stores}
