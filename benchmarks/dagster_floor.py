"""The least Dagster costs any `facepipe index` with work to do: import it and load the library's
instance, Definitions and index job (`defs.indexer.load`), with no run at all.

    FACEPIPE_IMAGES=... FACEPIPE_DATA=... python benchmarks/dagster_floor.py

Prints the CPU and wall time of that load, on an idle process, as one JSON line. index_ab.py runs it
beside `facepipe index`: on a machine whose cores the workers keep busy, this CPU is taken from them
whatever overlaps it, so it divided by the cores is a lower bound on Dagster's wall cost.
"""

from __future__ import annotations

import json
import os
import time


def main() -> int:
    from facepipe.library import Library
    from facepipe.settings import current

    library = Library.open(current())  # facepipe's own imports and settings: not Dagster's
    wall, cpu = time.perf_counter(), time.process_time()
    from facepipe.defs import indexer  # imports Dagster

    indexer.load(library)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(json.dumps({"cpu": cpu, "wall": wall, "cores": os.cpu_count()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
