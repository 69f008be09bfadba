"""Grouping partition keys into Dagster runs: a run covers one contiguous range of keys."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def contiguous_batches(selected: Iterable[str], ordered: Sequence[str], max_size: int) -> list[list[str]]:
    """Split `selected` into runs of keys that are adjacent in the partition order `ordered`.

    A Dagster run targets a key range, so only neighbours can share a run; new photos are
    added together and so always batch well.
    """
    wanted = set(selected)
    batches: list[list[str]] = []
    current: list[str] = []
    for key in ordered:
        if key in wanted and len(current) < max_size:
            current.append(key)
            continue
        if current:
            batches.append(current)
        current = [key] if key in wanted else []
    if current:
        batches.append(current)
    return batches


def range_tags(batch: Sequence[str]) -> dict[str, str]:
    """Run tags that make one Dagster run cover the batch (a single key needs none: use partition_key)."""
    if len(batch) < 2:
        return {}
    return {"dagster/asset_partition_range_start": batch[0], "dagster/asset_partition_range_end": batch[-1]}
