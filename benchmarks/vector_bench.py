"""Vector stores at a million faces: bulk load, index build, query latency and recall@10 against exact search.

Synthetic 128-d embeddings clustered like dlib's: identities whose faces lie about 0.37 apart (Euclidean)
around a centre, centres about 0.95 apart, all around a common offset of norm 1.3, as measured on the
sample photos (same person 0.35-0.41, different people 0.78-0.99, norm 1.43). Faces per identity are
1 + Poisson(19). Queries are new faces of random identities (not in the store); the truth is numpy
brute force over all faces. Isotropic noise has a higher intrinsic dimension than real embeddings,
so recall here is, if anything, pessimistic.

Stores, each measured in its own process (so its peak memory is its own):

* `qdrant_edge`: facepipe's embedded default, `QdrantStore(path=...)` on qdrant-edge: its `replace_images`
  in calls of 1,000 photos (3 faces each) inside `bulk()` (one open, one index build at the end;
  `load_s` is both),
  a fresh open (`open_s`: lock, load the shard, count), its `search` at several `hnsw_ef`.
* `pgvector`: the embedded Postgres 18 + pgvector the project uses (facepipe.stores.embedded_pg, with its
  default shared buffers: an eighth of the machine's memory, 128 MB to 4 GB); COPY
  into a table, then one HNSW index per `--pg-variants` entry (m, ef_construction, float32 `vector` or a
  `halfvec` expression index with exact re-ranking), each queried at several `hnsw.ef_search`, the last
  also with `hnsw.iterative_scan = relaxed_order`. `load_s` = COPY + that index's build; `open_s` = start
  the stopped server and connect.
* `qdrant_server` (when QDRANT_URL is set): the same data in collection `facepipe_bench` on that server
  (dropped afterwards), the store's HNSW settings; `load_s` until the collection is green.
* `qdrant_local`: qdrant-client's local mode (the old embedded store), only when asked for.

    .venv/bin/python benchmarks/vector_bench.py --faces 1000000 --json     # the summary (contract) on stdout
    .venv/bin/python benchmarks/vector_bench.py --faces 100000 --stores pgvector --details out.json

`--json` prints `{"<store>": {"p50_ms", "recall_at_10", "open_s", "load_s", ...}}` for the stores it ran,
at the fastest measured setting with recall@10 >= 0.95; the full table goes to stderr.
Everything goes to a temporary folder (`--workdir`), removed at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from facepipe.processes import peak_rss_bytes

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
    return peak_rss_bytes() // 2**20


# -- stores ------------------------------------------------------------------------------------------


def faces_of(data: np.ndarray, start: int, stop: int) -> dict[str, list]:
    """Rows start..stop as facepipe Face records, three faces per photo (face_id = uuid of the row)."""
    import uuid

    from facepipe.faces.records import Face

    out: dict[str, list] = {}
    for i in range(start, stop):
        key = f"photos/{i // 3:07d}.jpg"
        out.setdefault(key, []).append(
            Face(
                face_id=str(uuid.UUID(int=i + 1)),
                image_key=key,
                sha256="0" * 64,
                top=10 * (i % 3),
                right=10 * (i % 3) + 40,
                bottom=10 * (i % 3) + 40,
                left=10 * (i % 3),
                score=0.99,
                detector="cnn",
                embedding=data[i],
                crop=b"",
                model_version="bench",
            )
        )
    return out


def row_of(face_id: str) -> int:
    import uuid

    return uuid.UUID(face_id).int - 1


def bench_qdrant_edge(data, query, truth, workdir: Path, ef_values: list[int]) -> dict:
    """facepipe's own embedded store (EdgeQdrantStore): its replace_images, its open, its search."""
    from facepipe.stores import qdrant_edge
    from facepipe.stores.qdrant import QdrantStore

    path = workdir / "qdrant"
    out: dict = {
        "store": f"facepipe QdrantStore, embedded qdrant-edge (HNSW m={qdrant_edge.HNSW_M} "
        f"ef_construct={qdrant_edge.HNSW_EF_CONSTRUCT}, hnsw_ef={qdrant_edge.EF_SEARCH})"
    }
    store = QdrantStore(path=path)
    started = time.perf_counter()
    with store.engine.bulk():  # one open, no index builds until the end
        for start in range(0, len(data), 3_000):  # 1,000 photos per call
            store.replace_images(faces_of(data, start, min(len(data), start + 3_000)))
        out["upsert_s"] = round(time.perf_counter() - started, 1)
    out["load_s"] = round(time.perf_counter() - started, 1)
    out["index_s"] = round(out["load_s"] - out["upsert_s"], 1)
    store.close()
    out["disk_mb"] = round(folder_bytes(path) / 2**20)
    store = QdrantStore(path=path, keep_open=True)  # a fresh process's first call: lock, open, answer
    started = time.perf_counter()
    out["count"] = store.count()
    out["open_s"] = round(time.perf_counter() - started, 3)
    with store.session() as engine:
        info = engine.shard.info()
        out["segments"], out["indexed"] = info.segments_count, info.indexed_vectors_count
    out["queries"] = []
    for ef in ef_values:
        qdrant_edge.EF_SEARCH = ef
        found, seconds = [], []
        for q in query:
            t = time.perf_counter()
            hits = store.search(q, top_k=K)
            seconds.append(time.perf_counter() - t)
            found.append([row_of(m.face_id) for m in hits])
        out["queries"].append({"ef": ef, "recall@10": round(recall(found, truth), 4), **latency(seconds)})
        print(f"  qdrant_edge hnsw_ef={ef}: {out['queries'][-1]}", file=sys.stderr, flush=True)
    store.close()
    return out


def bench_pgvector(data, query, truth, workdir: Path, ef_values: list[int], variants: list[str]) -> dict:
    """Embedded Postgres 18 + pgvector: COPY, then one HNSW index per variant, queried at several ef_search.

    A variant is `m:ef_construction:type`, type `vector` (float32) or `halfvec` (an expression index on
    embedding::halfvec(128), the top candidates re-ranked by the exact float32 distance).
    """
    import psycopg
    from pgvector.psycopg import register_vector

    from facepipe.stores.embedded_pg import embedded_postgres

    server = embedded_postgres(workdir / "postgres")
    out: dict = {"store": "embedded Postgres 18 + pgvector 0.8 HNSW"}
    try:
        started = time.perf_counter()
        with psycopg.connect(server.uri(), autocommit=True) as conn:
            out["server_start_s"] = round(time.perf_counter() - started, 2)
            out["shared_buffers"] = conn.execute("SHOW shared_buffers").fetchone()[0]  # facepipe's default
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(conn)
            conn.execute("DROP TABLE IF EXISTS bench")
            conn.execute("CREATE TABLE bench (id bigint PRIMARY KEY, image_key text NOT NULL, embedding vector(128))")
            started = time.perf_counter()
            copy_rows(conn, data, 0)
            out["copy_s"] = round(time.perf_counter() - started, 1)
            conn.execute("SET maintenance_work_mem = '3GB'")
            conn.execute("SET max_parallel_maintenance_workers = 1")  # leader + 1 worker on 2 cores
            out["variants"] = []
            for variant in variants:
                m, efc, kind = variant.split(":")
                conn.execute("DROP INDEX IF EXISTS bench_hnsw")
                column = "embedding" if kind == "vector" else "(embedding::halfvec(128))"
                ops = "vector_l2_ops" if kind == "vector" else "halfvec_l2_ops"
                started = time.perf_counter()
                conn.execute(
                    f"CREATE INDEX bench_hnsw ON bench USING hnsw ({column} {ops}) "
                    f"WITH (m = {int(m)}, ef_construction = {int(efc)})"
                )
                row = {"variant": variant, "index_s": round(time.perf_counter() - started, 1)}
                row["index_mb"] = round(conn.execute("SELECT pg_relation_size('bench_hnsw')").fetchone()[0] / 2**20)
                if kind == "vector":
                    sql = "SELECT id FROM bench ORDER BY embedding <-> %(q)s LIMIT 10"
                else:
                    sql = (
                        "SELECT id FROM (SELECT id, embedding FROM bench "
                        "ORDER BY embedding::halfvec(128) <-> %(q)s::halfvec(128) LIMIT 40) c "
                        "ORDER BY embedding <-> %(q)s LIMIT 10"
                    )
                row["queries"] = []
                for ef in ef_values:
                    for iterative in ("off", "relaxed_order") if ef == ef_values[-1] else ("off",):
                        conn.execute(f"SET hnsw.ef_search = {int(ef)}")
                        conn.execute(f"SET hnsw.iterative_scan = {iterative}")
                        conn.execute(sql, {"q": query[0]}).fetchall()  # warm
                        found, seconds = [], []
                        for q in query:
                            t = time.perf_counter()
                            found.append([r[0] for r in conn.execute(sql, {"q": q}).fetchall()])
                            seconds.append(time.perf_counter() - t)
                        result = {"ef": ef, "iterative_scan": iterative, "recall@10": round(recall(found, truth), 4)}
                        row["queries"].append({**result, **latency(seconds)})
                        print(f"  pgvector {variant} {row['queries'][-1]}", file=sys.stderr, flush=True)
                out["variants"].append(row)
            out["disk_mb"] = round(conn.execute("SELECT pg_total_relation_size('bench')").fetchone()[0] / 2**20)
        server.release()
        started = time.perf_counter()  # open: start the stopped server and connect, as a fresh process does
        with psycopg.connect(server.uri(), autocommit=True) as conn:
            conn.execute("SELECT 1")
        out["open_s"] = round(time.perf_counter() - started, 2)
    finally:
        server.release()
    return out


def copy_rows(conn, data: np.ndarray, first_id: int) -> None:
    with conn.cursor().copy("COPY bench (id, image_key, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "text", "vector"])
        for i, vector in enumerate(data):
            copy.write_row((first_id + i, f"photos/{(first_id + i) // 3:07d}.jpg", vector))


def bench_qdrant_server(data, query, truth, workdir: Path, ef_values: list[int]) -> dict:
    """The Qdrant server at QDRANT_URL, collection `facepipe_bench` (dropped after), the store's HNSW settings."""
    from qdrant_client import QdrantClient, models

    from facepipe.stores import qdrant_edge

    name = "facepipe_bench"
    client = QdrantClient(url=os.environ["QDRANT_URL"], api_key=os.environ.get("QDRANT_API_KEY") or None, timeout=600)
    out: dict = {"store": "Qdrant server (qdrant-client)"}
    if client.collection_exists(name):
        client.delete_collection(name)
    client.create_collection(
        name,
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.EUCLID),
        hnsw_config=models.HnswConfigDiff(m=qdrant_edge.HNSW_M, ef_construct=qdrant_edge.HNSW_EF_CONSTRUCT),
    )
    try:
        started = time.perf_counter()
        for start in range(0, len(data), 1024):
            chunk = data[start : start + 1024]
            client.upsert(
                name,
                models.Batch(ids=list(range(start, start + len(chunk))), vectors=chunk.tolist()),
                wait=False,
            )
        while client.get_collection(name).status != models.CollectionStatus.GREEN:
            time.sleep(1)
        out["load_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        QdrantClient(url=os.environ["QDRANT_URL"], api_key=os.environ.get("QDRANT_API_KEY") or None).count(name)
        out["open_s"] = round(time.perf_counter() - started, 3)
        out["queries"] = []
        for ef in ef_values:
            found, seconds = [], []
            for q in query:
                t = time.perf_counter()
                hits = client.query_points(
                    name, query=q.tolist(), limit=K, search_params=models.SearchParams(hnsw_ef=ef)
                ).points
                seconds.append(time.perf_counter() - t)
                found.append([int(h.id) for h in hits])
            out["queries"].append({"ef": ef, "recall@10": round(recall(found, truth), 4), **latency(seconds)})
    finally:
        client.delete_collection(name)
    return out


def bench_qdrant_local(data, query, truth, workdir: Path) -> dict:
    import warnings

    from qdrant_client import QdrantClient, models

    warnings.simplefilter("ignore")  # local mode warns above 20k points: that is the point being measured
    path = workdir / "qdrant-local"
    out: dict = {"store": "qdrant-client local mode (exact search, SQLite persistence)"}
    out["open_s"] = None
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
    out["reopen_s"] = out["open_s"] = round(time.perf_counter() - started, 2)
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
    faces = args.qdrant_local_faces if args.stage == "qdrant_local" else args.faces
    started = time.perf_counter()
    data, _ids, query = make_data(faces, args.per_identity, args.queries)
    truth = exact_top_k(data, query)
    prep = time.perf_counter() - started
    print(f"{args.stage}: {faces} faces, {args.queries} queries, data + truth in {prep:.1f}s", file=sys.stderr)
    workdir = Path(args.workdir)
    ef_values = [int(x) for x in args.ef.split(",")]
    if args.stage == "pgvector":
        out = bench_pgvector(data, query, truth, workdir, ef_values, args.pg_variants.split(","))
    elif args.stage == "qdrant_edge":
        out = bench_qdrant_edge(data, query, truth, workdir, ef_values)
    elif args.stage == "qdrant_server":
        out = bench_qdrant_server(data, query, truth, workdir, ef_values)
    else:
        out = bench_qdrant_local(data, query, truth, workdir)
    out.update(faces=faces, peak_rss_mb=peak_rss_mb(), data_mb=round(data.nbytes / 2**20))
    return out


def best(queries: list[dict], bar: float = 0.95) -> dict:
    """The fastest setting reaching recall@10 >= bar (else the most accurate one)."""
    good = [q for q in queries if q["recall@10"] >= bar]
    return min(good, key=lambda q: q["p50_ms"]) if good else max(queries, key=lambda q: q["recall@10"])


def summary(results: dict[str, dict]) -> dict[str, dict]:
    """The contract: {"<store>": {"p50_ms", "recall_at_10", "open_s", "load_s"}} plus what was chosen."""
    out: dict[str, dict] = {}
    for name, r in results.items():
        if "error" in r:
            out[name] = {"error": r["error"]}
            continue
        if name == "pgvector":
            rows = [(v, q) for v in r["variants"] for q in v["queries"]]
            pick = best([q for _, q in rows])
            variant = next(v for v, q in rows if q is pick)
            load = r["copy_s"] + variant["index_s"]
            setting = {"variant": variant["variant"], "ef_search": pick["ef"], "iterative_scan": pick["iterative_scan"]}
        else:
            pick = best(r["queries"])
            load = r.get("load_s")
            setting = {"ef": pick["ef"]}
        out[name] = {
            "p50_ms": pick["p50_ms"],
            "recall_at_10": pick["recall@10"],
            "open_s": r.get("open_s"),
            "load_s": round(load, 1) if load is not None else None,
            "p95_ms": pick["p95_ms"],
            "faces": r["faces"],
            **setting,
        }
    return out


def table(results: dict[str, dict]) -> str:
    lines = [
        "| store | setting | recall@10 | p50 ms | p95 ms |",
        "|---|---|--:|--:|--:|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error'][:100]} | | | |")
            continue
        if name == "pgvector":
            for v in r["variants"]:
                for q in v["queries"]:
                    setting = f"{v['variant']} (build {v['index_s']} s), ef_search {q['ef']}"
                    if q["iterative_scan"] != "off":
                        setting += f", iterative_scan {q['iterative_scan']}"
                    lines.append(f"| {name} | {setting} | {q['recall@10']:.3f} | {q['p50_ms']} | {q['p95_ms']} |")
        else:
            for q in r["queries"]:
                lines.append(f"| {name} | ef {q['ef']} | {q['recall@10']:.3f} | {q['p50_ms']} | {q['p95_ms']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--per-identity", type=float, default=20.0)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument(
        "--stores", default=None, help="qdrant_edge,pgvector (+ qdrant_server when QDRANT_URL is set); qdrant_local"
    )
    parser.add_argument("--qdrant-local-faces", type=int, default=100_000)
    parser.add_argument("--ef", default="40,100,200", help="hnsw ef / ef_search values to try")
    parser.add_argument(
        "--pg-variants", default="16:64:vector,16:64:halfvec,24:128:halfvec", help="m:ef_construction:vector|halfvec"
    )
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout (the contract)")
    parser.add_argument("--details", default=None, help="write every measurement to this JSON file")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per store")
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage:  # child: one store
        print("RESULT " + json.dumps(run_stage(args)), flush=True)
        return 0

    stores = args.stores or "qdrant_edge,pgvector" + (",qdrant_server" if os.environ.get("QDRANT_URL") else "")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="facepipe-vector-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    try:
        for stage in stores.split(","):
            argv = [sys.executable, __file__, "--stage", stage, "--workdir", str(workdir / stage)]
            for name in ("faces", "per_identity", "queries", "qdrant_local_faces", "ef", "pg_variants"):
                argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            started = time.perf_counter()
            try:
                proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout, env=os.environ)
                lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
                print(proc.stderr[-3000:], file=sys.stderr, flush=True)
                result = json.loads(lines[-1][7:]) if lines else {"error": (proc.stderr or "no result").strip()[-500:]}
            except subprocess.TimeoutExpired:
                result = {"error": f"over {args.timeout:.0f} s"}
            result.update(wall_s=round(time.perf_counter() - started, 1))
            results[stage] = result
            if args.details:
                Path(args.details).write_text(json.dumps(results, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(results), file=sys.stderr)
    if args.json:
        print(json.dumps(summary(results)))
    else:
        print(json.dumps(summary(results), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
