"""Object storage: `s3://bucket/prefix` for the photos (`FACEPIPE_IMAGES`) and the Parquet (`FACEPIPE_DATA`).

Through pyarrow's own S3 filesystem rather than fsspec/s3fs: pyarrow already reads and writes the
Parquet (so no second client and no aiobotocore stack to install), its Parquet and dataset readers take
the filesystem directly, and it lists objects with their size and LastModified in one paged call. What
it does not give is the ETag; facepipe does not need it: a PUT always moves LastModified, so (size,
LastModified) notices every replaced object as (size, mtime) does on a disk, and the content's sha256
(read once, when that stat moved) stays the photo's identity, so face ids are the same whether the
photos are on a disk or in a bucket (an ETag is not a content hash for multipart uploads anyway).

Credentials come from the settings (the AWS_* variables), else from the AWS SDK's usual chain (instance
profile, web identity in Kubernetes): never from a file of facepipe's.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from facepipe.keys import UnsafeKeyError, key_for_relpath, relpath_for_key

SCHEME = "s3://"


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SCHEME)


def bucket_path(url: str) -> str:
    """`s3://bucket/prefix/` -> `bucket/prefix` (pyarrow's path form); refuses a URL without a bucket."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{url!r} is not an s3://bucket/prefix URL")
    path = PurePosixPath(parts.netloc, *[p for p in parts.path.split("/") if p])
    if any(p in (".", "..") for p in path.parts):
        raise ValueError(f"{url!r}: no . or .. in an object prefix")
    return str(path)


@dataclass(frozen=True)
class S3Config:
    """How to reach the object store (all from the environment; secrets stay out of `repr`)."""

    endpoint: str | None = None
    """FACEPIPE_S3_ENDPOINT or AWS_ENDPOINT_URL, e.g. `http://127.0.0.1:9000` (MinIO, a test server)."""
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


_filesystems: dict[S3Config, Any] = {}


def s3_filesystem(config: S3Config) -> Any:
    """A pyarrow S3FileSystem for these settings (one per process and config: it holds a connection pool)."""
    fs = _filesystems.get(config)
    if fs is None:
        from pyarrow import fs as pafs

        options: dict[str, Any] = {"region": config.region or "us-east-1"}
        if config.endpoint:
            parts = urlsplit(config.endpoint if "://" in config.endpoint else f"https://{config.endpoint}")
            options.update(endpoint_override=parts.netloc, scheme=parts.scheme or "https")
        if config.access_key and config.secret_key:
            options.update(
                access_key=config.access_key, secret_key=config.secret_key, session_token=config.session_token
            )
        fs = _filesystems[config] = pafs.S3FileSystem(**options)
    return fs


class BucketImages:
    """Photos under `s3://bucket/prefix`: listed with size and LastModified, read as streams, and copied
    to a local folder for extraction (the detector reads files)."""

    def __init__(self, url: str, fs: Any) -> None:
        self.url = url
        self.fs = fs
        self.prefix = bucket_path(url)

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"BucketImages({self.url!r})"

    def scan(self, suffixes: frozenset[str]) -> Iterator[tuple[str, int, int]]:
        """(key, size, mtime_ns) of every photo object (hidden names, like a folder walk, are skipped)."""
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self.prefix, recursive=True, allow_not_found=True)
        start = len(self.prefix) + 1
        for info in self.fs.get_file_info(selector):
            rel = info.path[start:]
            if info.type != pafs.FileType.File or PurePosixPath(rel).suffix.lower() not in suffixes:
                continue
            if any(part.startswith(".") for part in PurePosixPath(rel).parts):
                continue
            yield key_for_relpath(rel), info.size, info.mtime_ns or 0

    def object_path(self, key: str) -> str:
        return f"{self.prefix}/{relpath_for_key(key)}"

    def read(self, key: str) -> bytes:
        """A photo's bytes (FileNotFoundError when there is no such object)."""
        with self.fs.open_input_stream(self.object_path(key)) as stream:
            return stream.read()

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(self.object_path(key)) as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def stage(self, keys: Sequence[str], folder: Path) -> list[tuple[str, Path | Exception]]:
        """Copy these photos into `folder` for the extractor; a missing or refused object becomes that
        photo's error (an `error` row naming it), never a failed batch."""
        jobs: list[tuple[str, Path | Exception]] = []
        for n, key in enumerate(keys):
            try:
                source = self.object_path(key)
                target = folder / f"{n}{PurePosixPath(source).suffix}"
                with self.fs.open_input_stream(source) as stream, target.open("wb") as out:
                    shutil.copyfileobj(stream, out, 1 << 20)
                jobs.append((key, target))
            except (OSError, UnsafeKeyError) as exc:
                jobs.append((key, OSError(f"{self.url}/{key}: {exc}")))
        return jobs

    def problem(self) -> str | None:
        """Why the bucket cannot be read as the truth about the photos now, or None."""
        from pyarrow import fs as pafs

        bucket = self.prefix.split("/", 1)[0]
        try:
            info = self.fs.get_file_info(bucket)
        except OSError as exc:
            return f"the images bucket of {self.url} cannot be read ({exc}); nothing was deleted"
        if info.type == pafs.FileType.NotFound:
            return f"the bucket of {self.url} does not exist; nothing was deleted"
        return None
