"""The one Definitions object: what `dagster dev`, the daemon and the run workers load.

Built from the environment by the composition root (facepipe.library); nothing in facepipe imports
this module: `facepipe index` builds its own Definitions for the library it was given.
"""

from facepipe.defs.build import build_definitions
from facepipe.defs.instance import ensure_dagster_home
from facepipe.library import Library
from facepipe.settings import current

ensure_dagster_home(current())
defs = build_definitions(Library.open(current()))
