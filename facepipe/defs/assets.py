"""The per-photo assets: `faces` (Parquet) and one export asset per registered vector store.

They are one step (`index_photos`, a multi-asset that cannot be subset): materializing `faces` from
the UI, a backfill, a sensor run and `facepipe index` all write the Parquet *and* bring every store
up to date in the same run, with no automation sensor to switch on. The cost of not splitting them:
a store that is down fails the step after the Parquet is written; the retry skips extraction (the
manifest knows the photos are done) and only redoes the exports.
"""

from collections.abc import Iterator

import dagster as dg

from facepipe.defs.metadata import add_partition_metadata
from facepipe.defs.partitions import images_partitions
from facepipe.defs.resources import LibraryResource
from facepipe.exports import export_images
from facepipe.indexing import PhotoResult, index_batch
from facepipe.settings import Settings
from facepipe.stores import registry
from facepipe.stores.base import StoreError
from facepipe.stores.parquet import FACE_SCHEMA

FACES = dg.AssetKey("faces")
OWNERS = ["team:facepipe"]
TAGS = {"domain": "faces", "personal_data": "yes"}

_COLUMN_NOTES = {
    "face_id": "uuid5 of (image_key, sha256, box): stable across re-runs of the same content",
    "image_key": "the partition key: the photo's path under the images folder, %-escaped where Dagster needs it",
    "sha256": "of the file's bytes",
    "top": "box in pixels of the upright, full-size photo",
    "right": "box in pixels of the upright, full-size photo",
    "bottom": "box in pixels of the upright, full-size photo",
    "left": "box in pixels of the upright, full-size photo",
    "score": "detector confidence, 0-1 (null for HOG)",
    "detector": "which detector found the face",
    "embedding": "128 float32: dlib's ResNet encoding; the same person is usually within 0.6 (Euclidean)",
    "crop": "the face as a small JPEG",
    "person_id": "set by the people clustering",
    "model_version": "the detection and embedding settings",
}

FACE_COLUMNS = dg.TableSchema(
    columns=[
        dg.TableColumn(field.name, str(field.type), description=_COLUMN_NOTES.get(field.name)) for field in FACE_SCHEMA
    ]
)


class FacesConfig(dg.Config):
    force: bool = False
    """Extract again even photos already indexed from the same bytes with the same settings."""


def photo_metadata(library_parquet_path: str, photo: PhotoResult) -> dict[str, object]:
    """What the UI shows on one partition of `faces`."""
    return {
        "status": photo.status,
        "faces": photo.faces,
        "seconds": round(photo.seconds, 3),
        "reason": photo.reason or "",
        "skipped_unchanged": photo.skipped,
        "parquet": dg.MetadataValue.path(library_parquet_path),
    }


def build_index_photos(settings: Settings) -> dg.AssetsDefinition:
    """The `index_photos` step for the registered stores, versioned by the extraction settings."""
    version = settings.extract.model_version
    specs = [
        dg.AssetSpec(
            FACES,
            description="Every face of each photo: box, detector score, 128-d embedding and a JPEG crop, in "
            "`<data>/parquet/faces/<image path>.parquet`; each photo's status (ok / error with the reason) in "
            "`<data>/parquet/images/`.",
            code_version=version,  # detection settings changed: every partition is marked stale
            kinds={"python", "parquet"},
            group_name="faces",
            owners=OWNERS,
            tags=TAGS,
            metadata={"dagster/column_schema": FACE_COLUMNS},
        ),
        *(
            dg.AssetSpec(
                spec.asset_name,
                deps=[FACES],
                description=spec.description,
                code_version=version,
                kinds={spec.kind or spec.name},
                group_name="faces",
                owners=OWNERS,
                tags=TAGS,
            )
            for spec in registry.specs()
        ),
    ]

    @dg.multi_asset(
        name="index_photos",
        specs=specs,
        partitions_def=images_partitions,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=settings.batch),
        # A store that is briefly down (restart, network blip) is retried after 2, 4 and 8 seconds.
        retry_policy=dg.RetryPolicy(max_retries=3, delay=settings.retry_delay, backoff=dg.Backoff.EXPONENTIAL),
        can_subset=False,
    )
    def index_photos(
        context: dg.AssetExecutionContext, config: FacesConfig, library: LibraryResource
    ) -> Iterator[dg.MaterializeResult]:
        """Faces of each photo in the run into the Parquet, then into every vector store.

        Unreadable photos get an `error` status row with the reason instead of failing the run."""
        lib = library.get()
        keys = context.partition_keys
        try:
            summary = index_batch(lib, keys, force=config.force)
            for key, reason in summary.errors:
                context.log.warning(f"{key}: {reason}")
            add_partition_metadata(
                context,
                FACES,
                {p.image_key: photo_metadata(str(lib.parquet.faces_path(p.image_key)), p) for p in summary.photos},
            )
            context.log.info(
                f"{summary.images} photos extracted ({summary.skipped} unchanged), {summary.faces} faces, "
                f"{len(summary.errors)} errors in {summary.seconds:.1f}s"
            )
            yield dg.MaterializeResult(asset_key=FACES)
            failures = []
            for spec in registry.specs():
                try:
                    counts = export_images(lib, spec.name, keys)
                except StoreError as exc:
                    failures.append(f"{spec.asset_name}: {exc}")
                    continue
                add_partition_metadata(context, spec.asset_name, {key: {"faces": n} for key, n in counts.items()})
                context.log.info(f"{spec.asset_name}: {sum(counts.values())} faces of {len(counts)} photos")
                yield dg.MaterializeResult(asset_key=spec.asset_name)
            if failures:
                raise dg.Failure(description="; ".join(failures))
        finally:
            lib.close()

    return index_photos
