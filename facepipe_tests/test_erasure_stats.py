"""No embedding outlives `forget` in Postgres: not in the table, not in the planner's statistics.

Postgres copies column values into `pg_statistic` (`pg_stats.histogram_bounds`, `most_common_vals`)
whenever it analyzes a table, and neither DELETE, VACUUM nor CHECKPOINT touches them: a forgotten
face's id and whole embedding stayed readable there.
"""

from __future__ import annotations

import numpy as np

from facepipe.cli import main
from facepipe.stores.pgvector import PRIVATE_COLUMNS
from facepipe_tests.conftest import KNN


def readable_text(conn) -> dict[str, str]:
    """Every place SQL can read that may hold a face's values, as text."""
    return {
        "pg_stats": " ".join(str(row) for row in conn.execute("SELECT * FROM pg_stats WHERE tablename = 'faces'")),
        "pg_statistic": " ".join(
            str(row)
            for row in conn.execute(
                "SELECT stavalues1::text, stavalues2::text, stavalues3::text, stavalues4::text, stavalues5::text "
                "FROM pg_statistic WHERE starelid = 'faces'::regclass"
            )
        ),
        "table": " ".join(str(row) for row in conn.execute("SELECT f::text FROM faces f")),
    }


def test_a_forgotten_face_leaves_nothing_in_postgres_statistics_or_rows(env, capsys):
    for photo in sorted((KNN / "train").glob("*/*"))[:6]:
        env.add(photo, f"{photo.parent.name}/{photo.name}")
    assert main(["index", "--quiet"]) == 0
    library = env.library()
    pg = library.stores()["pgvector"]
    key = sorted(library.parquet.face_ids_by_image())[0]
    (face,) = library.parquet.load_faces([key])[key][:1]
    with pg.connection() as conn:
        conn.execute("ANALYZE faces")  # as autovacuum would have, while the face was there
        vector_text = conn.execute("SELECT %s::vector::text", (face.embedding,)).fetchone()[0]
        before = conn.execute("SELECT now()").fetchone()[0]
    library.close()
    capsys.readouterr()

    assert main(["forget", key]) == 0
    pg = env.library().stores()["pgvector"]
    with pg.connection() as conn:
        analyzed = conn.execute("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'faces'").fetchone()[0]
        assert analyzed is not None and analyzed > before, "statistics gathered again after the erasure"
        conn.execute("VACUUM faces")
        conn.execute("CHECKPOINT")
        for phase in ("after forget, VACUUM, CHECKPOINT", "after ANALYZE"):
            for place, text in readable_text(conn).items():
                assert face.face_id not in text, f"face id in {place} {phase}"
                assert vector_text not in text, f"embedding in {place} {phase}"
                assert key not in text, f"image key in {place} {phase}"
            conn.execute("ANALYZE faces")
        rows = conn.execute(
            "SELECT count(*) FROM pg_stats WHERE tablename = 'faces' AND attname = ANY(%s)", (list(PRIVATE_COLUMNS),)
        ).fetchone()[0]
        assert rows == 0, "no statistics copy ids, photo names or embeddings"
        assert conn.execute("SELECT count(*) FROM faces").fetchone()[0] > 0  # the other faces are still there
        conn.execute("SET enable_indexscan = off")  # exact: every row compared, not the HNSW graph
        nearest = conn.execute("SELECT min(embedding <-> %s) FROM faces", (face.embedding,)).fetchone()[0]
        assert nearest > 0 and not np.isclose(nearest, 0.0), "the forgotten vector is no row of the table"
    pg.close()
