"""Resources: where the photos are, where results go, and the settings faces are made with."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from facepipe.config import paths
from facepipe.faces.extract import ExtractSettings
from facepipe.manifest import Manifest
from facepipe.stores.parquet import ParquetStore


class PhotoLibrary(dg.ConfigurableResource):
    """The watched images folder and the data folder that records what was made of it."""

    images_root: str | None = None  # None: FACEPIPE_IMAGES as set when a run starts
    data_dir: str | None = None  # None: FACEPIPE_DATA as set when a run starts
    workers: int = 0  # 0: FACEPIPE_WORKERS, else one process per core

    @property
    def root(self) -> Path:
        return Path(self.images_root).resolve() if self.images_root else paths().images

    @property
    def data(self) -> Path:
        return Path(self.data_dir).resolve() if self.data_dir else paths().data

    def manifest(self) -> Manifest:
        return Manifest(self.data / "manifest.sqlite", self.root)

    def settings(self) -> ExtractSettings:
        return ExtractSettings.from_env()


def library_from_env() -> PhotoLibrary:
    return PhotoLibrary()


def parquet_from_env() -> ParquetStore:
    return ParquetStore()
