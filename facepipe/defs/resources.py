"""Resources: where the photos are, where results go, and the settings faces are made with."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from facepipe.config import paths
from facepipe.faces.extract import ExtractSettings
from facepipe.manifest import Manifest
from facepipe.stores.parquet import ParquetStore


class PhotoLibrary(dg.ConfigurableResource):
    """The watched images folder and the data folder that records what was made of it."""

    images_root: str
    data_dir: str
    workers: int = 0  # 0: one process per core

    @property
    def root(self) -> Path:
        return Path(self.images_root).resolve()

    def manifest(self) -> Manifest:
        return Manifest(Path(self.data_dir) / "manifest.sqlite", self.root)

    def settings(self) -> ExtractSettings:
        return ExtractSettings.from_env()


def library_from_env() -> PhotoLibrary:
    p = paths()
    return PhotoLibrary(
        images_root=str(p.images), data_dir=str(p.data), workers=int(os.environ.get("FACEPIPE_WORKERS") or 0)
    )


def parquet_from_env() -> ParquetStore:
    return ParquetStore(root=str(paths().parquet))
