"""Parquet dataset of faces and image statuses: one file per image, written atomically.

Layout under `root`: `faces/<image_key>.parquet` (one row per face, no file for a photo without
faces) and `images/<image_key>.parquet` (one status row per photo). Any Parquet reader can glob
them, e.g. DuckDB `read_parquet('data/parquet/faces/**/*.parquet')`.

Two kinds of photo names cannot be mirrored as they are. A file name may have 255 bytes, and the
temporary name of an atomic write adds about 50 to the photo's: a name too long for that is stored
as `<its first bytes>~<hash of the key>.parquet` in the same folder. A path that is not valid UTF-8
(Linux allows any bytes; SQLite, DuckDB and JSON do not) goes to `_hashed/<...>~<hash>.parquet`.
Either way the real key is read from the file's `image_key` column (every row carries it).

The root is a local folder, or `s3://bucket/prefix/parquet` on a pyarrow S3 filesystem (several
nodes sharing one library): there a file is written as a temporary object, then published by a
server-side copy, so a reader sees the old object or the new one, never a part.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from facepipe.faces.records import Face, ImageRecord
from facepipe.keys import UnsafeKeyError, key_for_relpath, relpath_for_key
from facepipe.processes import alive

FACE_SCHEMA = pa.schema(
    [
        ("face_id", pa.string()),
        ("image_key", pa.string()),
        ("sha256", pa.string()),
        ("top", pa.int32()),
        ("right", pa.int32()),
        ("bottom", pa.int32()),
        ("left", pa.int32()),
        ("score", pa.float32()),
        ("detector", pa.string()),
        ("embedding", pa.list_(pa.float32(), 128)),
        ("crop", pa.binary()),
        ("person_id", pa.string()),
        ("model_version", pa.string()),
    ]
)

IMAGE_SCHEMA = pa.schema(
    [
        ("image_key", pa.string()),
        ("sha256", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("faces", pa.int32()),
        ("detector", pa.string()),
        ("model_version", pa.string()),
        ("seconds", pa.float32()),
        ("processed_at", pa.timestamp("us", tz="UTC")),
        # Photo metadata for analytics (null where the photo has none, and in files written before them).
        ("taken_at", pa.timestamp("us")),  # EXIF DateTimeOriginal: the camera's wall-clock time
        ("taken_at_offset", pa.string()),  # its UTC offset (OffsetTimeOriginal), e.g. "+02:00"
        ("camera_make", pa.string()),
        ("camera_model", pa.string()),
        ("gps_lat", pa.float64()),
        ("gps_lon", pa.float64()),
        ("file_size", pa.int64()),
        ("mtime", pa.timestamp("us", tz="UTC")),
    ]
)


METADATA_COLUMNS = (
    "taken_at",
    "taken_at_offset",
    "camera_make",
    "camera_model",
    "gps_lat",
    "gps_lon",
    "file_size",
    "mtime",
)


NAME_MAX = 255
"""Bytes in one file name (ext4, xfs, btrfs, tmpfs)."""

TEMP_EXTRA = len("..") + 7 + len("-") + 32 + len(".tmp")
"""What `write_table_atomic` adds to a name: dot, dot, pid (up to 7 digits), dash, uuid hex, suffix."""

LONG_NAME = NAME_MAX - TEMP_EXTRA
"""The longest file name written as is; a longer one is hashed (its temporary name would not fit)."""

_HASHED = re.compile(r"(?:^|[~/])[0-9a-f]{32}\.parquet$")  # also the `_refused/<hash>.parquet` of unsafe keys


FACES_DIR, IMAGES_DIR = "faces", "images"
"""The folders of the faces files and of the status files under the Parquet root."""

HASHED_DIR = "_hashed"
"""Where the files of photos whose path is not valid UTF-8 go."""


def mirrored_path(base: Path, rel: PurePosixPath, image_key: str) -> Path:
    """Where the file of the photo at `rel` (relative to the images root) goes under `base`."""
    plain = f"{rel.name}.parquet"
    if not _is_utf8(str(rel)):
        return base / HASHED_DIR / _hashed_name(rel.name, image_key)
    if len(plain.encode()) > LONG_NAME:
        return base.joinpath(*rel.parent.parts, _hashed_name(rel.name, image_key))
    return base.joinpath(*rel.parent.parts, plain)


def _scan_local(folder: str, rel: str, out: dict[str, tuple[int, int]]) -> None:
    """`file_stats` of a local folder: every `*.parquet` file not hidden (writers' temporary files) ->
    (mtime_ns, size), named POSIX-relative by `rel`; links to folders are not followed (as `rglob`)."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        with contextlib.suppress(FileNotFoundError):  # deleted while we look
            if entry.is_dir(follow_symlinks=False):
                _scan_local(entry.path, f"{rel}/{entry.name}", out)
            elif entry.name.endswith(".parquet") and not entry.name.startswith("."):
                st = entry.stat()
                out[f"{rel}/{entry.name}"] = (st.st_mtime_ns, st.st_size)


def _hashed_name(name: str, image_key: str) -> str:
    head = os.fsencode(name)[:80].decode("utf-8", "ignore")  # a readable hint; the hash makes it unique
    return f"{head}~{_key_hash(image_key)}.parquet"


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates: bytes os.scandir could not decode
        return False
    return True


def _key_hash(image_key: str) -> str:
    return hashlib.sha256(image_key.encode()).hexdigest()[:32]


def faces_table(faces: list[Face]) -> pa.Table:
    embeddings = np.asarray([f.embedding for f in faces], dtype=np.float32).reshape(-1)
    columns = {name: [getattr(f, name) for f in faces] for name in FACE_SCHEMA.names if name != "embedding"}
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(embeddings, pa.float32()), 128)
    return pa.table({name: columns[name] for name in FACE_SCHEMA.names}, schema=FACE_SCHEMA)


def faces_from_table(table: pa.Table) -> list[Face]:
    if table.num_rows == 0:
        return []
    embeddings = table.column("embedding").combine_chunks().flatten().to_numpy().reshape(-1, 128)
    rows = table.drop_columns(["embedding"]).to_pylist()
    return [Face(**row, embedding=vector) for row, vector in zip(rows, embeddings, strict=True)]


def image_table(record: ImageRecord) -> pa.Table:
    row = {
        "image_key": record.image_key,
        "sha256": record.sha256,
        "status": record.status,
        "reason": record.reason,
        "width": record.width,
        "height": record.height,
        "faces": record.face_count,
        "detector": record.detector,
        "model_version": record.model_version,
        "seconds": record.seconds,
        "processed_at": datetime.now(UTC),
        **{name: getattr(record.metadata, name) for name in METADATA_COLUMNS},
    }
    return pa.Table.from_pylist([row], schema=IMAGE_SCHEMA)


class DamagedParquet(ValueError):
    """A Parquet file that is cut short or unreadable; the message names it and the way out."""

    def __init__(self, path: PurePath, why: object) -> None:
        super().__init__(f"{path} is damaged ({why}); `facepipe index` extracts its photo again")
        self.path = path


_UNREADABLE = (OSError, pa.ArrowException)
"""What pyarrow raises for a truncated, empty or garbled file (FileNotFoundError is told apart first)."""


def write_table_atomic(table: pa.Table, path: PurePath, row_group_size: int | None = None, fs: Any = None) -> None:
    """Readers see the old file or the new one, never half of one (a killed run leaves only a temp,
    named so that `ParquetStore.sweep_temp_files` finds it). `fs`: a pyarrow filesystem (object storage)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
    if fs is not None:
        try:
            pq.write_table(table, str(tmp), compression="zstd", row_group_size=row_group_size, filesystem=fs)
            fs.move(str(tmp), str(path))  # S3: a copy, atomic per object, then the temp's delete
        finally:
            _delete(fs, tmp)
        return
    assert isinstance(path, Path) and isinstance(tmp, Path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _delete(fs: Any, path: PurePath) -> None:
    with contextlib.suppress(FileNotFoundError):
        if fs.get_file_info(str(path)).type != pafs.FileType.NotFound:
            fs.delete_file(str(path))


class ParquetStore:
    """The analytics copy of every face; the source the vector stores are checked against."""

    def __init__(self, root: Path | str, fs: Any = None) -> None:
        self.fs = fs
        """None: a local folder; else the pyarrow filesystem `root` (s3://bucket/prefix) is on."""
        if fs is None:
            self.base: Any = Path(root)
        else:
            from facepipe.objects import bucket_path

            self.url = str(root)
            self.base = PurePosixPath(bucket_path(self.url))
        self.damaged: set[PurePath] = set()
        """Files a read over the whole dataset had to skip (reported by `status`, healed by `index`)."""

    def __repr__(self) -> str:
        return f"ParquetStore({self.url if self.fs is not None else str(self.base)!r})"

    @property
    def remote(self) -> bool:
        return self.fs is not None

    @property
    def faces_dir(self) -> Path:
        return self.base / FACES_DIR

    @property
    def images_dir(self) -> Path:
        return self.base / IMAGES_DIR

    # -- file operations on either kind of root ----------------------------------------------------------

    def stat(self, path: PurePath) -> tuple[int, int] | None:
        """(mtime_ns, size) of a file (on S3: LastModified), or None when it does not exist."""
        if self.fs is None:
            try:
                st = Path(path).stat()
            except FileNotFoundError:
                return None
            return (st.st_mtime_ns, st.st_size)
        info = self.fs.get_file_info(str(path))
        return None if info.type == pafs.FileType.NotFound else (info.mtime_ns or 0, info.size or 0)

    def read_table(self, path: PurePath, columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
        """Raises FileNotFoundError for a missing file, as a local read does. `schema`: read as this schema
        (columns a file written by an older version lacks come back null)."""
        if self.fs is None:
            return pq.read_table(path, columns=columns, schema=schema, use_threads=False)
        if self.fs.get_file_info(str(path)).type == pafs.FileType.NotFound:
            raise FileNotFoundError(str(path))
        return pq.read_table(str(path), columns=columns, schema=schema, filesystem=self.fs, use_threads=False)

    def rows_in(self, path: PurePath) -> int:
        """Rows of a Parquet file from its footer alone (cheap); raises DamagedParquet, FileNotFoundError."""
        try:
            if self.fs is None:
                return pq.read_metadata(path).num_rows
            if self.fs.get_file_info(str(path)).type == pafs.FileType.NotFound:
                raise FileNotFoundError(str(path))
            with self.fs.open_input_file(str(path)) as handle:
                return pq.read_metadata(handle).num_rows
        except FileNotFoundError:
            raise
        except _UNREADABLE as exc:
            raise DamagedParquet(path, exc) from None

    def write_table(self, table: pa.Table, path: PurePath, row_group_size: int | None = None) -> None:
        write_table_atomic(table, path, row_group_size, fs=self.fs)

    def unlink(self, path: PurePath) -> None:
        if self.fs is None:
            Path(path).unlink(missing_ok=True)
        else:
            _delete(self.fs, path)

    def files_under(self, base: PurePath, suffix: str = ".parquet") -> Iterator[tuple[PurePath, int, int]]:
        """(path, mtime_ns, size) of every file under `base` whose name ends so."""
        if self.fs is None:
            for file in Path(base).rglob(f"*{suffix}") if Path(base).exists() else ():
                with contextlib.suppress(FileNotFoundError):  # deleted while we look
                    st = file.stat()
                    yield file, st.st_mtime_ns, st.st_size
            return
        selector = pafs.FileSelector(str(base), recursive=True, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.type == pafs.FileType.File and info.base_name.endswith(suffix):
                yield PurePosixPath(info.path), info.mtime_ns or 0, info.size or 0

    def _file(self, base: Path, image_key: str) -> Path:
        try:
            rel = relpath_for_key(image_key)
        except UnsafeKeyError:  # a key typed in the UI that points outside: its error row still needs a home
            return base / "_refused" / (_key_hash(image_key) + ".parquet")
        return mirrored_path(base, rel, image_key)

    def rel_paths(self, image_key: str) -> tuple[str, str]:
        """(faces file, status file) of a photo, relative to the Parquet root: the keys of `file_stats`."""
        with contextlib.suppress(UnsafeKeyError):
            path = relpath_for_key(image_key)
            rel = str(path)
            if path.name and _is_utf8(rel) and len(f"{path.name}.parquet".encode()) <= LONG_NAME:
                # `mirrored_path`'s plain case as strings, the key parsed once (the sensor's Parquet
                # check asks this for every photo on every tick)
                return (f"{FACES_DIR}/{rel}.parquet", f"{IMAGES_DIR}/{rel}.parquet")
        root = len(str(self.base)) + 1
        return tuple(str(self._file(base, image_key))[root:] for base in self.bases)

    @property
    def bases(self) -> tuple[Path, Path]:
        return (self.faces_dir, self.images_dir)

    def file_stats(self) -> dict[str, tuple[int, int]]:
        """Every faces and status file (relative to the Parquet root, POSIX) with its (mtime_ns, size)."""
        out: dict[str, tuple[int, int]] = {}
        if self.fs is None:  # one scandir per folder, no Path per file (every sensor tick does this)
            for base in self.bases:
                _scan_local(str(base), base.name, out)
            return out
        for base in self.bases:
            for path, mtime_ns, size in self.files_under(base):
                if not path.name.startswith("."):  # temporary files of writers in flight
                    out[PurePosixPath(path.relative_to(self.base)).as_posix()] = (mtime_ns, size)
        return out

    def image_key_of_file(self, base: Path, rel: str) -> str | None:
        """The image key a file (relative to `base`, POSIX) was written for: the inverse of `_file`.

        A plain name is decoded from the path; a hashed one is read from the file (None when it is gone or
        unreadable)."""
        if not _HASHED.search(rel):
            return key_for_relpath(rel.removesuffix(".parquet"))
        try:
            keys = self.read_table(base / rel, columns=["image_key"]).column("image_key")
        except (OSError, pa.ArrowInvalid):
            return None
        return keys[0].as_py() if len(keys) else None

    def image_key_of_face_file(self, rel: str) -> str | None:
        """The image key a faces file (relative to `faces_dir`) was written for."""
        return self.image_key_of_file(self.faces_dir, rel)

    def face_file_stats(self) -> dict[str, tuple[int, int]]:
        """Every faces file (path relative to `faces_dir`, POSIX) with its (mtime_ns, size)."""
        return {
            file.relative_to(self.faces_dir).as_posix(): (mtime_ns, size)
            for file, mtime_ns, size in self.files_under(self.faces_dir)
        }

    def write(self, record: ImageRecord) -> None:
        """Replace everything stored for the image; the status row goes last so it marks completion."""
        faces_file = self.faces_path(record.image_key)
        if record.faces:
            self.write_table(faces_table(record.faces), faces_file)
        else:
            self.unlink(faces_file)
        self.write_table(image_table(record), self._file(self.images_dir, record.image_key))

    def delete(self, image_key: str) -> None:
        for base in (self.faces_dir, self.images_dir):
            path = self._file(base, image_key)
            self.unlink(path)
            if self.fs is None:  # object storage has no folders to leave behind
                _prune_empty_dirs(path.parent, base)

    def read_faces(self, image_key: str, columns: list[str] | None = None) -> pa.Table:
        """The photo's faces (none when it has no file); raises DamagedParquet for a file cut short, so a
        damaged file is never read as "this photo has no faces" (and pushed to the stores as a deletion)."""
        path = self.faces_path(image_key)
        try:
            return self.read_table(path, columns)
        except FileNotFoundError:
            return FACE_SCHEMA.empty_table().select(columns or FACE_SCHEMA.names)
        except _UNREADABLE as exc:
            raise DamagedParquet(path, exc) from None

    def read_image(self, image_key: str) -> dict | None:
        """The photo's status row, or None if it was never written (or is unreadable)."""
        path = self._file(self.images_dir, image_key)
        try:
            rows = self.read_table(path).to_pylist()
        except (OSError, pa.ArrowInvalid):
            return None
        return rows[0] if rows else None

    def faces_path(self, image_key: str) -> Path:
        """Where the photo's faces are (or would be) written."""
        return self._file(self.faces_dir, image_key)

    def drop_faces(self, face_ids: set[str]) -> int:
        """Rewrite the images that hold any of these faces without them; returns how many were dropped."""
        index = self.faces(["image_key", "face_id"])
        keys = {k for k, f in zip(*index.to_pydict().values(), strict=True) if f in face_ids}
        dropped = 0
        for key in sorted(keys):
            faces = self.load_faces([key])[key]
            kept = [f for f in faces if f.face_id not in face_ids]
            dropped += len(faces) - len(kept)
            path = self.faces_path(key)
            if kept:
                self.write_table(faces_table(kept), path)
            else:
                self.unlink(path)
        return dropped

    def load_faces(self, image_keys: Iterable[str]) -> dict[str, list[Face]]:
        """The stored faces of each image as records (what the vector stores are filled from)."""
        return {key: faces_from_table(self.read_faces(key)) for key in image_keys}

    def faces(self, columns: list[str] | None = None) -> pa.Table:
        """Every readable face; damaged files are skipped and listed in `damaged`."""
        return self._read_all(self.faces_dir, FACE_SCHEMA, columns)

    def images(self, columns: list[str] | None = None) -> pa.Table:
        return self._read_all(self.images_dir, IMAGE_SCHEMA, columns)

    def _read_all(self, base: PurePath, schema: pa.Schema, columns: list[str] | None) -> pa.Table:
        files = [str(path) for path, _, _ in self.files_under(base)]
        empty = schema.empty_table().select(columns or schema.names)
        if not files:
            return empty
        try:
            return ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs).to_table(columns=columns)
        except FileNotFoundError:
            pass  # rewritten or erased while we read: read file by file
        except _UNREADABLE:
            pass  # one bad file fails the whole dataset: read file by file and skip the bad ones
        tables = []
        for file in files:
            path = Path(file) if self.fs is None else PurePosixPath(file)
            try:
                tables.append(self.read_table(path, columns, schema))
            except FileNotFoundError:
                continue
            except _UNREADABLE:
                self.damaged.add(path)
        return pa.concat_tables(tables) if tables else empty

    def image_keys(self) -> set[str]:
        return set(self.images(["image_key"]).column("image_key").to_pylist())

    def face_ids_by_image(self, image_keys: Iterable[str] | None = None) -> dict[str, set[str]]:
        if image_keys is None:
            table = self.faces(["image_key", "face_id"])
        else:
            table = pa.concat_tables(
                [self.read_faces(k, ["image_key", "face_id"]) for k in image_keys]
                or [FACE_SCHEMA.empty_table().select(["image_key", "face_id"])]
            )
        result: dict[str, set[str]] = {}
        for key, fid in zip(table.column("image_key").to_pylist(), table.column("face_id").to_pylist(), strict=True):
            result.setdefault(key, set()).add(fid)
        return result

    def iter_face_files(self) -> Iterator[Path]:
        for path, _, _ in self.files_under(self.faces_dir):
            yield path  # type: ignore[misc]  # a PurePosixPath in a bucket

    def sweep_temp_files(self) -> int:
        """Remove half-written files left by killed processes (they may hold faces: personal data).
        In a bucket shared by nodes a temp's pid means nothing here: only temps older than a day go."""
        removed = 0
        day_ago = (datetime.now(UTC).timestamp() - 86400) * 1e9
        for tmp, mtime_ns, _ in self.files_under(self.base, ".tmp"):
            if not tmp.name.startswith("."):
                continue
            pid = tmp.name.rsplit(".", 2)[-2].split("-", 1)[0]
            stale = mtime_ns < day_ago if self.fs is not None else not pid.isdigit() or not alive(int(pid))
            if stale:
                self.unlink(tmp)
                removed += 1
        return removed


def _prune_empty_dirs(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_relative_to(stop):
        with contextlib.suppress(OSError):
            folder.rmdir()
        if folder.exists():
            return
        folder = folder.parent
