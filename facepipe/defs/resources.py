"""The one resource: the photo library (facepipe.library.Library), built by the composition root.

Its fields are what the Dagster UI shows about it; secrets (store passwords and keys) are read by
facepipe.settings from the environment and never become resource config.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dagster as dg
from pydantic import Field

from facepipe.library import Library
from facepipe.settings import current

_LIBRARIES: dict[str, Library] = {}
"""Libraries built in this process, by data folder: a resource hands back the composition root's object."""


class LibraryResource(dg.ConfigurableResource):
    """The photo library every asset, check and sensor works on: its images folder, Parquet, manifest,
    people and vector stores."""

    data_dir: str = Field(description="Data folder: Parquet, manifest, people, embedded stores (FACEPIPE_DATA).")
    images_root: str = Field(
        description="Images folder the library indexes: recorded in <data>/library.json by the first index "
        "(FACEPIPE_IMAGES or `facepipe index FOLDER`); the recorded folder wins over this field."
    )

    @classmethod
    def of(cls, library: Library) -> LibraryResource:
        _LIBRARIES[str(library.data)] = library
        return cls(data_dir=str(library.data), images_root=str(library.root))

    def get(self) -> Library:
        library = _LIBRARIES.get(self.data_dir)
        if library is None:  # another data folder typed in the launchpad
            library = Library(replace(current(), data=Path(self.data_dir)), self.images_root or None)
            _LIBRARIES[self.data_dir] = library
        return library
