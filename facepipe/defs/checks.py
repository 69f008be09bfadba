"""Asset checks: every photo could be read, and every store holds exactly the Parquet's faces."""

import dagster as dg

from facepipe.consistency import compare
from facepipe.defs.assets import FACES
from facepipe.defs.resources import LibraryResource
from facepipe.stores import registry

MAX_LISTED = 100


def build_checks() -> list[dg.AssetChecksDefinition]:
    store_specs = [
        dg.AssetCheckSpec(
            "matches_parquet",
            asset=spec.asset_name,
            description=f"The {spec.name} store holds the same face ids as the Parquet, image for image.",
        )
        for spec in registry.specs()
    ]

    @dg.multi_asset_check(specs=store_specs, name="stores_match_parquet")
    def stores_match_parquet(library: LibraryResource):
        """Fails naming the images whose faces differ; re-materializing those partitions heals them."""
        lib = library.get()
        try:
            total, diffs = compare(lib.parquet, lib.stores())
        finally:
            lib.close()
        for spec in registry.specs():
            diff = diffs[spec.name]
            yield dg.AssetCheckResult(
                asset_key=dg.AssetKey(spec.asset_name),
                check_name="matches_parquet",
                passed=not diff.images,
                metadata={
                    "parquet_faces": total,
                    "store_faces": diff.faces,
                    "images_differing": len(diff.images),
                    "images": ", ".join(diff.images[:MAX_LISTED]) or "none",
                },
                description=f"{len(diff.images)} images differ: {', '.join(diff.images[:20])}" if diff.images else None,
            )

    @dg.asset_check(asset=FACES, name="photos_readable", description="Every photo could be read as an image.")
    def photos_readable(library: LibraryResource) -> dg.AssetCheckResult:
        """Warns listing the photos that got an `error` row (truncated, not an image, too large, ...)."""
        lib = library.get()
        errors = lib.manifest.error_keys()
        listed = [
            f"{key}: {(lib.parquet.read_image(key) or {}).get('reason') or 'unknown'}" for key in errors[:MAX_LISTED]
        ]
        return dg.AssetCheckResult(
            passed=not errors,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"unreadable": len(errors), "photos": "\n".join(listed) or "none"},
            description=f"{len(errors)} photos could not be read" if errors else None,
        )

    return [stores_match_parquet, photos_readable]
