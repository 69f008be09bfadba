"""`facepipe index`'s work without Dagster: the baseline that says what Dagster costs, by difference.

    FACEPIPE_IMAGES=... FACEPIPE_DATA=... python benchmarks/no_dagster_index.py

Does what `facepipe index` does on a new or changed folder, in the same order and with the same
facepipe functions: the same start (the workers warmed and begun on the first run's photos, the
embedded Postgres started beside them), the folder sync, healing, then per batch the work of the
index job's assets (extraction and Parquet, each store's export, people), then compaction and the
Parquet check. Only Dagster is missing: no import, no instance, no runs, no events. index_ab.py runs
it beside `facepipe index` on the same photos; the difference in wall time is what Dagster costs,
including what the breakdown table cannot see (its threads' CPU taken from the workers).
"""

from __future__ import annotations

import json
import time


def main() -> int:
    from facepipe import heal, indexing, sync, warmup
    from facepipe.exports import export_images
    from facepipe.library import Library
    from facepipe.settings import current

    started = time.perf_counter()
    library = Library.open(current())
    library.check_root()
    diff = library.manifest.diff()
    processed = faces = 0
    with warmup.started(library, warmup.first_photos(library, diff), lambda: None):
        library.parquet.sweep_temp_files()
        outcome = sync.plan(library, [], diff=diff)  # no Dagster partitions to compare with
        heal.heal(library)
        for batch in sync.commit(library, outcome, pending=True):
            summary = indexing.index_batch(library, batch)  # the index_photos asset, then its exports
            processed, faces = processed + summary.images, faces + summary.faces
            for name in library.store_names:
                export_images(library, name, batch)
            library.close()
            library.people.update(stores=list(library.stores().values()))  # the people asset
            library.close()
    if library.compactor.is_stale():
        library.compactor.run()
    heal.check_parquet(library)
    print(json.dumps({"processed": processed, "faces": faces, "seconds": time.perf_counter() - started}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
