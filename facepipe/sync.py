"""Keeping the library equal to the images folder: the one routine `facepipe index` and the sensor share.

`plan` diffs the folder against the manifest, refuses to read a missing or emptied folder as
"every photo was deleted", erases what is really gone and says which partitions to add or delete;
the caller applies those to Dagster (the index in-process, the sensor through its result), then
`commit` records the diff and groups the photos to process into runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from facepipe.forget import erase_images
from facepipe.library import Library, LibraryError
from facepipe.manifest import SyncPlan
from facepipe.partition_ranges import contiguous_batches


class DeletionsHeld(LibraryError):
    """The folder says more photos are gone than is believable; nothing was erased."""


@dataclass
class SyncOutcome:
    plan: SyncPlan
    add_partitions: list[str] = field(default_factory=list)
    delete_partitions: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    """Every partition key after the sync, in the instance's order (runs cover contiguous ranges)."""


def check_deletions(library: Library, plan: SyncPlan, confirmed: bool = False) -> None:
    """Raise DeletionsHeld when the diff would erase all photos, or more than the allowed share."""
    if not plan.deleted or confirmed:
        return
    known = plan.unchanged + len(plan.changed) + len(plan.deleted)
    remaining = plan.unchanged + len(plan.changed) + len(plan.new)
    share = library.settings.max_delete_share
    how = (
        "If that is what you want, run `facepipe index --confirm-deletions` "
        "(or set FACEPIPE_MAX_DELETE_SHARE=1 for the sensor)."
    )
    if remaining == 0:
        raise DeletionsHeld(
            f"the images folder {library.root} holds none of the library's {known} photos now "
            f"(an unmounted or emptied folder?): nothing was deleted. {how}"
        )
    if len(plan.deleted) > share * known:
        raise DeletionsHeld(
            f"{len(plan.deleted)} of the library's {known} photos are gone from {library.root} "
            f"(more than {share:.0%}): nothing was deleted. {how}"
        )


def plan(
    library: Library, known_partitions: Sequence[str], confirmed: bool = False, diff: SyncPlan | None = None
) -> SyncOutcome:
    """Diff, guard, erase the deleted photos everywhere, and the partition changes to make."""
    library.check_root()
    sync_plan = diff if diff is not None else library.manifest.diff()
    check_deletions(library, sync_plan, confirmed)
    if sync_plan.deleted:
        erase_images(library, sync_plan.deleted)
    unfinished = library.manifest.unfinished_forgets()
    if unfinished:  # a `forget` interrupted half way: its tombstones are there, the erasure is finished here
        erase_images(library, unfinished, keep_out=True)
    existing = set(known_partitions)
    wanted = sorted((set(library.manifest.keys()) - set(sync_plan.deleted)) | set(sync_plan.new))
    added = [k for k in wanted if k not in existing]  # also partitions a fresh Dagster home lacks
    gone = [k for k in sync_plan.deleted if k in existing]
    gone_set = set(gone)
    order = [k for k in known_partitions if k not in gone_set] + added
    return SyncOutcome(sync_plan, added, gone, order)


def commit(library: Library, outcome: SyncOutcome, pending: bool) -> list[list[str]]:
    """Record the diff, then the runs to launch: new and changed photos, or with `pending` everything
    not yet indexed with the current settings or not yet in every store."""
    library.manifest.apply(outcome.plan)
    library.record()
    return batches(library, outcome, pending_keys(library) if pending else set(outcome.plan.to_run))


def pending_keys(library: Library) -> set[str]:
    """Photos not yet indexed from their current bytes with the current settings, or not yet in every
    store (what healing marks lands here too: damaged photos are pending, differing ones unexported)."""
    manifest = library.manifest
    return set(manifest.pending(library.settings.extract.model_version)).union(
        *(manifest.unexported(name) for name in library.store_names)
    )


def batches(library: Library, outcome: SyncOutcome, keys: Iterable[str]) -> list[list[str]]:
    """The keys as runs: contiguous ranges of the partitions after the sync, at most a batch each."""
    return contiguous_batches(sorted(set(keys)), outcome.order, library.settings.batch)


def healed_batches(library: Library, outcome: SyncOutcome) -> list[list[str]]:
    """After `heal` and `commit(pending=False)`, the runs that finish the healing: everything pending or
    unexported (the selection of `commit(pending=True)`), less what the diff's own runs cover. Call it
    only when no run is in flight (a running photo is pending too) and healing found something (a
    store that is down leaves its photos unexported: they are not re-run on every tick)."""
    return batches(library, outcome, pending_keys(library) - set(outcome.plan.to_run))


def nothing_to_do(library: Library, diff: SyncPlan | None = None) -> SyncPlan | None:
    """The diff (`diff`, or one made now) when the folder, the manifest and every store agree (no
    Dagster needed), else None."""
    library.check_root()
    diff = diff if diff is not None else library.manifest.diff()
    if diff or library.manifest.pending(library.settings.extract.model_version):
        return None
    if library.manifest.unfinished_forgets():
        return None
    if any(library.manifest.unexported(name) for name in library.store_names):
        return None
    return diff
