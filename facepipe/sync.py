"""Keeping Dagster's image partitions equal to the files in the folder (used by `facepipe index`)."""

from __future__ import annotations

import dagster as dg

from facepipe.defs.partitions import images_partitions
from facepipe.forget import forget_images
from facepipe.manifest import Manifest, SyncPlan


def sync_partitions(instance: dg.DagsterInstance, manifest: Manifest, defs: dg.Definitions) -> SyncPlan:
    """Erase deleted photos, add partitions for new ones (and any the instance lacks), record the diff."""
    plan = manifest.diff()
    if plan.deleted:
        forget_images(plan.deleted, manifest=manifest, **erasers(defs))
    known = set(instance.get_dynamic_partitions(images_partitions.name))
    wanted = sorted((set(manifest.keys()) - set(plan.deleted)) | set(plan.new))
    missing = [k for k in wanted if k not in known]
    if missing:
        instance.add_dynamic_partitions(images_partitions.name, missing)
    for key in plan.deleted:
        if key in known:
            instance.delete_dynamic_partition(images_partitions.name, key)
    manifest.apply(plan)
    return plan


def erasers(defs: dg.Definitions) -> dict:
    """The stores a deleted photo must vanish from, as configured in the definitions."""
    resources = defs.resources or {}
    stores = [resources[name] for name in ("qdrant", "pgvector") if name in resources]
    return {"parquet": resources["parquet"], "stores": stores}
