"""The faces Parquet side of people: reading the files that moved, and writing person ids back into
them (only the files whose ids changed) and into the stores; the `people.parquet` snapshot."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import PurePath

import pyarrow as pa

from facepipe.people.records import Person, PersonIdSink, Stat
from facepipe.stores.parquet import ParquetStore

FACE_COLUMNS = ["face_id", "image_key", "embedding", "person_id", "top", "right", "bottom", "left"]
"""What people reads of a faces file."""


def stat_of(parquet: ParquetStore, path: PurePath) -> Stat:
    """(mtime_ns, size), (0, 0) for a missing file."""
    return parquet.stat(path) or (0, 0)


def read_face_file(parquet: ParquetStore, rel: str) -> tuple[pa.Table | None, Stat]:
    """The people columns of one faces file and its stat as read (None: gone, or damaged: then it is
    listed in `parquet.damaged` and left as it was until `facepipe index` extracts its photo again)."""
    path = parquet.faces_dir / rel
    st = parquet.stat(path)
    try:
        if st is None:
            raise FileNotFoundError(path)
        table = parquet.read_table(path, columns=FACE_COLUMNS)
    except FileNotFoundError:
        return None, (0, 0)
    except (OSError, pa.ArrowException):
        parquet.damaged.add(path)
        return None, (0, 0)
    return table, st


def person_id_changes(
    before: Mapping[str, str],
    after: Mapping[str, str],
    in_parquet: Mapping[str, Mapping[str, str | None]],
    image_of: Mapping[str, str],
) -> dict[str, dict[str, str | None]]:
    """image_key -> face_id -> person_id for what Parquet and the stores must change: faces whose person
    changed, and faces of files the faces asset rewrote (with a null person_id, which the exports copied
    to the stores). `in_parquet` is what the files read hold, `image_of` every known face's image."""
    updates: dict[str, str | None] = {}
    for fid in before.keys() | after.keys():
        if before.get(fid) != after.get(fid) and fid in image_of:
            updates[fid] = after.get(fid)
    for faces in in_parquet.values():
        for fid, pid in faces.items():
            if pid != after.get(fid) and fid in image_of:
                updates[fid] = after.get(fid)
    by_image: dict[str, dict[str, str | None]] = defaultdict(dict)
    for fid, pid in updates.items():
        by_image[image_of[fid]][fid] = pid
    return dict(by_image)


def push_to_stores(stores: Sequence[PersonIdSink], by_image: Mapping[str, Mapping[str, str | None]]) -> None:
    mapping = {fid: pid for faces in by_image.values() for fid, pid in faces.items()}
    for store in stores:
        store.set_person_ids(mapping)


def rewrite_person_ids(
    parquet: ParquetStore,
    by_image: Mapping[str, Mapping[str, str | None]],
    read_stats: Mapping[str, tuple[str, Stat]],
    known: Mapping[str, tuple[str, Stat]],
) -> tuple[int, list[str], dict[str, tuple[str, Stat]]]:
    """Set person_id in the Parquet files of these images (only these). `read_stats` are the files read
    in this run (path -> (image key, stat when read)), `known` the files as recorded before. Returns the
    files written, the images left for the next run, and the files' stats to record.

    A file the faces asset replaced after we read it is left alone (its new faces are for the next
    run); the stat is compared right before the atomic replace, so that window is microseconds.
    """
    stats = dict(read_stats)
    rel_of = {key: rel for rel, (key, _) in read_stats.items()}
    written, retry = 0, []
    for key, mapping in sorted(by_image.items()):
        rel = rel_of.get(key) or parquet.faces_path(key).relative_to(parquet.faces_dir).as_posix()
        path = parquet.faces_dir / rel
        before = stat_of(parquet, path)
        expected = stats[rel][1] if rel in stats else known[rel][1] if rel in known else None
        try:
            table = parquet.read_table(path)
        except FileNotFoundError:
            continue
        ids = table.column("face_id").to_pylist()
        current = table.column("person_id").to_pylist()
        wanted = [mapping.get(fid, pid) for fid, pid in zip(ids, current, strict=True)]
        if wanted == current:
            continue
        column = table.schema.get_field_index("person_id")
        table = table.set_column(column, table.schema.field(column), pa.array(wanted, pa.string()))
        if stat_of(parquet, path) != before or (rel in stats and before != expected):
            retry.append(key)  # rewritten by the faces asset meanwhile
            stats.pop(rel, None)
            continue
        parquet.write_table(table, path)
        written += 1
        if before == expected:  # else: we have not read this version's faces yet, so let the next run do it
            stats[rel] = (key, stat_of(parquet, path))
    return written, retry, stats


def write_snapshot(people: Sequence[Person], parquet: ParquetStore, path: PurePath) -> None:
    """One row per person, for analytics next to the faces dataset."""
    table = pa.table(
        {
            "person_id": pa.array([p.person_id for p in people], pa.string()),
            "name": pa.array([p.name for p in people], pa.string()),
            "faces": pa.array([p.faces for p in people], pa.int32()),
            "images": pa.array([len(p.image_keys) for p in people], pa.int32()),
            "image_keys": pa.array([p.image_keys for p in people], pa.list_(pa.string())),
            "cover_face_id": pa.array([p.cover_face_id for p in people], pa.string()),
        }
    )
    parquet.write_table(table, path)
