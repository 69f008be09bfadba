"""Asset checks: the stores agree with the Parquet, face id for face id."""

import dagster as dg

from facepipe.consistency import compare
from facepipe.defs.exports import pgvector_faces, qdrant_faces
from facepipe.stores.parquet import ParquetStore
from facepipe.stores.pgvector import PgVectorStore
from facepipe.stores.qdrant import QdrantStore


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec("matches_parquet", asset=qdrant_faces.key, description="Same face ids as the Parquet"),
        dg.AssetCheckSpec("matches_parquet", asset=pgvector_faces.key, description="Same face ids as the Parquet"),
    ],
)
def stores_match_parquet(parquet: ParquetStore, qdrant: QdrantStore, pgvector: PgVectorStore):
    """Fails naming the images whose faces differ; re-materializing those partitions heals them."""
    total, diffs = compare(parquet, {"qdrant": qdrant, "pgvector": pgvector})
    for name, asset in (("qdrant", qdrant_faces), ("pgvector", pgvector_faces)):
        diff = diffs[name]
        yield dg.AssetCheckResult(
            asset_key=asset.key,
            check_name="matches_parquet",
            passed=not diff.images,
            metadata={
                "parquet_faces": total,
                "store_faces": diff.faces,
                "images_differing": len(diff.images),
                "images": ", ".join(diff.images[:100]) or "none",
            },
            description=f"{len(diff.images)} images differ: {', '.join(diff.images[:20])}" if diff.images else None,
        )
