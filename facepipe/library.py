"""The library: one data folder and the images folder it indexes, with everything kept about them.

This is the composition root. Every entry point (the CLI, the HTTP API, the Dagster resources and
sensors) builds a `Library` from `Settings` and takes what it needs from it: the paths, the
manifest, the Parquet store, the people state and the vector stores of the registry.

The library records its images folder in `<data>/library.json` the first time it indexes, so a
later `facepipe index` with no argument, `serve`, `ui` and the sensor all use that folder, and a
different folder given by mistake (or an unmounted disk) is refused instead of read as "every
photo was deleted".
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from facepipe.manifest import ADDED_COLUMNS as MANIFEST_ADDED
from facepipe.manifest import SCHEMA as MANIFEST_SCHEMA
from facepipe.manifest import Manifest
from facepipe.objects import BucketImages, s3_filesystem
from facepipe.settings import Settings, current, location
from facepipe.statedb import PostgresDB
from facepipe.stores import registry
from facepipe.stores.base import FaceStore
from facepipe.stores.parquet import ParquetStore

if TYPE_CHECKING:
    from facepipe.compaction import Compactor
    from facepipe.people import People

RECORD_FILE = "library.json"


class LibraryError(Exception):
    """The folders do not fit together (moved, missing, another library): the user has to say what to do."""


class Library:
    """Paths, manifest, Parquet, people and vector stores of one data folder."""

    def __init__(self, settings: Settings, images: Path | str | None = None) -> None:
        self.settings = settings
        self.data = settings.data
        record = self._read_record()
        self.recorded_root: Path | str | None = location(record["images_root"]) if record.get("images_root") else None
        requested = settings.with_images(images).images
        self.requested_root: Path | str | None = requested
        self.root: Path | str = self.recorded_root or requested or settings.default_images
        """The images folder, or the s3:// URL of the photos."""
        if settings.data_url:  # the Parquet in the bucket, shared by every node; the rest stays local
            self.parquet = ParquetStore(f"{settings.data_url}/parquet", fs=s3_filesystem(settings.s3))
        else:
            self.parquet = ParquetStore(self.data / "parquet")
        self._stores: dict[str, FaceStore] | None = None

    @classmethod
    def open(cls, settings: Settings | None = None, images: Path | str | None = None) -> Library:
        return cls(settings or current(), images)

    def __repr__(self) -> str:
        return f"Library(data={str(self.data)!r}, images={str(self.root)!r})"

    # -- the recorded images folder -------------------------------------------------------------------

    @property
    def record_path(self) -> Path:
        return self.data / RECORD_FILE

    def _read_record(self) -> dict:
        try:
            return json.loads((self.data / RECORD_FILE).read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise LibraryError(f"{self.data / RECORD_FILE} is unreadable ({exc}); fix or remove it") from None

    @property
    def conflict(self) -> str | None:
        """Why the folder asked for is not the one this library indexes, or None."""
        if self.recorded_root is None or self.requested_root is None or self.requested_root == self.recorded_root:
            return None
        return (
            f"the library in {self.data} indexes {self.recorded_root}, not {self.requested_root}. "
            f"If the photos moved there, run `facepipe index --images-moved {self.requested_root}`; "
            "for a separate library, set FACEPIPE_DATA to another folder."
        )

    def root_problem(self) -> str | None:
        """Why the images folder cannot be read as the truth about the photos now, or None."""
        if self.conflict:
            return self.conflict
        if isinstance(self.images, BucketImages):
            return self.images.problem()
        if not self.root.exists():
            return (
                f"the images folder {self.root} does not exist (an unmounted disk, or moved?); nothing was deleted"
                + (". If it moved: `facepipe index --images-moved NEW_FOLDER`" if self.recorded_root else "")
            )
        if not self.root.is_dir():
            return f"the images folder {self.root} is not a folder; nothing was deleted"
        return None

    def check_root(self) -> None:
        problem = self.root_problem()
        if problem:
            raise LibraryError(problem)

    def move_root(self, new_root: Path | str) -> None:
        """Re-root the library (`--images-moved`): keys are relative paths, so files that match keep their faces."""
        new_root = Path(new_root).expanduser().resolve()
        if not new_root.is_dir():
            raise LibraryError(f"{new_root} is not a folder")
        self.recorded_root = self.requested_root = self.root = new_root
        self.__dict__.pop("manifest", None)
        self.record()

    def record(self) -> None:
        """Write down the images folder and where the stores are (never a secret)."""
        doc = {
            "images_root": str(self.root),
            "stores": self._store_locations(),
        }
        if self._read_record() == doc:
            return
        self.data.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".library.", suffix=".tmp", dir=self.data)
        with os.fdopen(fd, "w") as handle:
            json.dump(doc, handle, indent=2)
        os.replace(tmp, self.record_path)
        self.recorded_root = self.root

    def banner(self) -> str:
        return f"library {self.settings.data_url or self.data}, images {self.root}"

    # -- what the library holds -----------------------------------------------------------------------

    @property
    def images(self) -> Path | BucketImages:
        """Where the photos are read from: the folder, or the bucket."""
        if isinstance(self.root, str):
            return BucketImages(self.root, s3_filesystem(self.settings.s3))
        return self.root

    @cached_property
    def manifest(self) -> Manifest:
        dsn = self.settings.pg_dsn
        local = self.data / "manifest.sqlite"
        db = (
            PostgresDB(dsn, MANIFEST_SCHEMA, name="manifest", import_from=local, added_columns=MANIFEST_ADDED)
            if dsn
            else local
        )
        manifest = Manifest(db, self.images)
        moved = self.moved_stores()
        if moved:  # what the old location held says nothing about the new one: export there again
            keys = manifest.keys()
            for name in moved:
                manifest.reset_exports(keys, name)
        return manifest

    def _store_locations(self) -> dict[str, str]:
        return {spec.name: spec.describe(self.settings) for spec in registry.specs(self.settings)}

    def moved_stores(self) -> list[str]:
        """Stores now somewhere else than the library recorded (embedded -> a server, another server)."""
        recorded = self._read_record().get("stores") or {}
        return [name for name, where in self._store_locations().items() if recorded.get(name, where) != where]

    @cached_property
    def people(self) -> People:
        from facepipe.people import People
        from facepipe.people.state import STATE_FILE, postgres_db

        dsn = self.settings.pg_dsn
        db = postgres_db(dsn, import_from=self.data / STATE_FILE) if dsn else None
        return People(self.data, self.parquet, db)

    @cached_property
    def compactor(self) -> Compactor:
        from facepipe.compaction import Compactor

        return Compactor(self.parquet)

    def stores(self) -> dict[str, FaceStore]:
        """Every registered vector store, built on first use (no client connects before it is used)."""
        if self._stores is None:
            self._stores = {spec.name: spec.build(self.settings) for spec in registry.specs(self.settings)}
        return self._stores

    @property
    def store_names(self) -> list[str]:
        return registry.names(self.settings)

    def store(self, name: str) -> FaceStore:
        registry.spec(name, self.settings)  # a clear error for an unknown name
        return self.stores()[name]

    def close(self) -> None:
        """Close the store clients (embedded Qdrant is one process at a time: let others in)."""
        for store in (self._stores or {}).values():
            store.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
