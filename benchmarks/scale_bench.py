"""Library scale: what a 10k- and a 100k-photo library costs facepipe's Dagster shell, measured for real.

For each size the benchmark builds a synthetic library in a temporary folder: every 10th photo a
200-pixel copy of a sample photo with a face (HOG finds and embeds it), the others 64-pixel noise
JPEGs; the files are hard links to a few distinct images (500 per folder), so building 100k costs
seconds and little disk. With `FACEPIPE_DETECTOR=hog` it then measures, against a real Dagster
instance in its own DAGSTER_HOME (the `dagster.yaml` `facepipe index` writes):

* the images sensor's first tick (every file new: stat + hash), applying its partition requests
  (partitions added per second), a tick with nothing changed, and a tick with 1k new files
  (the sensor built with `dagster.build_sensor_context` against the instance, as the tests do);
* indexing throughput: the `index_images` job in-process in batches of FACEPIPE_BATCH, as
  `facepipe index` runs it; all photos at 10k, a `--index-sample` at 100k (then extrapolated);
* the Dagster UI at that partition count: the GraphQL queries of the asset overview and partitions
  pages against a real `dagster-webserver`, and the partitions page in headless Chromium;
* disk used by the Dagster home, the manifest, the Parquet and the stores.

A separate `analytics` stage writes synthetic per-photo Parquet for `--analytics-photos` photos
(two faces each, 500 persons), compacts it (facepipe.compaction) and times the README's DuckDB
queries (faces per photo, photos per person) over the compacted files and over the per-photo glob.

    .venv/bin/python benchmarks/scale_bench.py --sizes 10000,100000 --json /tmp/scale.json
    .venv/bin/python benchmarks/scale_bench.py --sizes 2000 --index-sample 500 --analytics-photos 5000 # quick

Each size runs in its own process (fresh imports and instance). Nothing is written into the repo.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "data" / "face_recognition" / "examples"
FACE_SAMPLES = ["obama.jpg", "biden.jpg", "obama2.jpg", "knn_examples/train/rose_leslie/img1.jpg"]
PER_FOLDER = 500

OVERVIEW_QUERY = """
query { assetNodeOrError(assetKey: {path: ["faces"]}) { ... on AssetNode {
  id groupName partitionStats { numPartitions numMaterialized numFailed numMaterializing } } } }
"""
PARTITIONS_QUERY = """
query { assetNodeOrError(assetKey: {path: ["faces"]}) { ... on AssetNode {
  id partitionKeysByDimension { name partitionKeys }
  assetPartitionStatuses { __typename ... on DefaultPartitionStatuses {
    materializedPartitions materializingPartitions failedPartitions } } } } }
"""


# -- library -----------------------------------------------------------------------------------------


def distinct_images(folder: Path) -> list[Path]:
    """A few small images: face thumbnails from the samples, then noise; files to hard-link from."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(FACE_SAMPLES):
        image = Image.open(SAMPLES / name).convert("RGB")
        image.thumbnail((200, 200))
        out.append(folder / f"face{i}.jpg")
        image.save(out[-1], quality=85)
    rng = np.random.default_rng(0)
    for i in range(16):
        out.append(folder / f"noise{i}.jpg")
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(out[-1], quality=70)
    return out


def build_library(root: Path, first: int, count: int, sources: list[Path], prefix: str = "") -> float:
    """`count` photos, photo i a hard link to a face thumbnail when i % 10 == 0, else to noise."""
    started = time.perf_counter()
    faces = [s for s in sources if s.name.startswith("face")]
    noise = [s for s in sources if s.name.startswith("noise")]
    for i in range(first, first + count):
        folder = root / f"{prefix}{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0 or i == first:
            folder.mkdir(parents=True, exist_ok=True)
        source = faces[i // 10 % len(faces)] if i % 10 == 0 else noise[i % len(noise)]
        os.link(source, folder / f"photo {i:07d}.jpg")
    return time.perf_counter() - started


def du_mb(path: Path) -> float:
    if not path.exists():
        return 0.0
    total = 0
    seen: set[int] = set()
    for p in [path, *path.rglob("*")]:
        with contextlib.suppress(OSError):
            info = p.lstat()
            if info.st_ino not in seen:
                seen.add(info.st_ino)
                total += info.st_blocks * 512
    return round(total / 2**20, 1)


# -- one size ------------------------------------------------------------------------------------------


def tick(instance, apply: bool = True) -> tuple[object, float, float]:
    """One images_sensor evaluation; then its partition requests applied to the instance."""
    import dagster as dg

    from facepipe.defs.build import build_definitions
    from facepipe.defs.sensors import images_sensor
    from facepipe.library import Library

    defs = build_definitions(Library.open())
    started = time.perf_counter()
    with dg.build_sensor_context(instance=instance, resources=defs.resources) as context:
        result = images_sensor(context)
    ticked = time.perf_counter() - started
    started = time.perf_counter()
    if apply:
        for request in result.dynamic_partitions_requests:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            else:
                for key in request.partition_keys:
                    instance.delete_dynamic_partition(request.partitions_def_name, key)
    return result, ticked, time.perf_counter() - started


def index(instance, limit: int | None) -> dict:
    """The index_images job over pending photos (all, or the first `limit`), batched like `facepipe index`."""
    from facepipe.defs.build import build_definitions
    from facepipe.defs.indexer import run_target
    from facepipe.defs.instance import QUIET_CONSOLE
    from facepipe.defs.partitions import images_partitions
    from facepipe.library import Library
    from facepipe.partition_ranges import contiguous_batches
    from facepipe.warmup import embedded_postgres_held

    library = Library.open()
    defs = build_definitions(library)
    pending = library.manifest.pending(library.settings.extract.model_version)
    pending = pending[:limit] if limit else pending
    order = instance.get_dynamic_partitions(images_partitions.name)
    batches = contiguous_batches(pending, order, library.settings.batch)
    job = defs.resolve_job_def("index_images")
    started = time.perf_counter()
    failed = 0
    with embedded_postgres_held(library, True):
        for batch in batches:
            result = job.execute_in_process(
                instance=instance, raise_on_error=False, run_config=QUIET_CONSOLE, **run_target(batch)
            )
            failed += not result.success
    seconds = time.perf_counter() - started
    return {
        "photos": len(pending),
        "runs": len(batches),
        "failed_runs": failed,
        "seconds": round(seconds, 1),
        "ms_per_photo": round(1000 * seconds / max(1, len(pending)), 1),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ui(work: Path, partitions: int) -> dict:
    """GraphQL of the asset pages against a real webserver, and the partitions page in headless Chromium."""
    import httpx

    out: dict = {}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (work / "webserver.log").open("wb")
    bin_dir = Path(sys.executable).parent
    web = subprocess.Popen(
        [str(bin_dir / "dagster-webserver"), "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=work,
        env=os.environ,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        started = time.perf_counter()
        while time.perf_counter() - started < 180:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/server_info", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        out["webserver_start_s"] = round(time.perf_counter() - started, 1)
        for name, query in (("overview", OVERVIEW_QUERY), ("partitions", PARTITIONS_QUERY)):
            times = []
            for _ in range(3):
                t = time.perf_counter()
                r = httpx.post(f"{base}/graphql", json={"query": query}, timeout=600)
                times.append(time.perf_counter() - t)
                body = r.json()
                if "errors" in body:
                    out[f"{name}_error"] = json.dumps(body["errors"])[:300]
            out[f"graphql_{name}_s"] = [round(x, 2) for x in times]
            out[f"graphql_{name}_bytes"] = len(r.content)
        out["chromium_partitions_page_s"] = chromium_page(base, work, partitions)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(web.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            web.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(web.pid, signal.SIGKILL)
        log.close()
    return out


def chromium_page(base: str, work: Path, partitions: int) -> float | str:
    """Seconds until the partitions page shows the partition count and the materialized tab."""
    if not (os.access("/usr/bin/chromium", os.X_OK) and os.access("/usr/bin/chromedriver", os.X_OK)):
        return "chromium not installed"
    sys.path.insert(0, str(REPO))
    from facepipe_tests.ui_helpers import chromium, page_text

    with chromium(work) as driver:
        driver.get(f"{base}/assets/faces")  # warm: the app bundle, the workspace
        time.sleep(3)
        started = time.perf_counter()
        driver.get(f"{base}/assets/faces?view=partitions")
        expected = [f"{partitions:,} Partitions", "Materialized ("]
        while time.perf_counter() - started < 300:
            text = page_text(driver)
            if all(e in text for e in expected):
                return round(time.perf_counter() - started, 1)
            time.sleep(0.2)
        return f"not shown in 300 s: {page_text(driver)[:200]!r}"


def run_size(size: int, args: argparse.Namespace) -> dict:
    work = Path(args.workdir) / f"size-{size}"
    shutil.rmtree(work, ignore_errors=True)
    images, data = work / "images", work / "data"
    os.environ.update(
        FACEPIPE_IMAGES=str(images),
        FACEPIPE_DATA=str(data),
        DAGSTER_HOME=str(data / "dagster"),
        FACEPIPE_DETECTOR="hog",
    )
    for name in ("QDRANT_URL", "QDRANT_API_KEY", "FACEPIPE_PG_DSN"):
        os.environ.pop(name, None)
    out: dict = {"size": size}
    sources = distinct_images(work / "sources")
    out["build_library_s"] = round(build_library(images, 0, size, sources), 1)

    import dagster as dg

    from facepipe import settings
    from facepipe.defs.instance import ensure_dagster_home
    from facepipe.defs.partitions import images_partitions

    ensure_dagster_home(settings.reload())
    instance = dg.DagsterInstance.get()
    result, out["tick_all_new_s"], out["add_partitions_s"] = tick(instance)
    out["partitions_per_s"] = round(size / max(out["add_partitions_s"], 1e-6))
    out["runs_requested_first_tick"] = len(result.run_requests)
    assert len(instance.get_dynamic_partitions(images_partitions.name)) == size
    _, out["tick_unchanged_s"], _ = tick(instance)
    _, out["tick_unchanged_again_s"], _ = tick(instance)
    build_library(images, size, 1000, sources, prefix="new-")
    result, out["tick_1k_new_s"], out["add_1k_partitions_s"] = tick(instance)
    out["runs_requested_1k_new"] = len(result.run_requests)
    partitions = size + 1000
    out["index"] = index(instance, args.index_sample if size > args.full_index_up_to else None)
    if out["index"]["photos"] < partitions:
        out["index"]["extrapolated_all_s"] = round(out["index"]["ms_per_photo"] * partitions / 1000)
    out["ui"] = ui(work, partitions) if not args.no_ui else {}
    out["disk_mb"] = {
        "dagster_home": du_mb(data / "dagster"),
        "manifest": du_mb(data / "manifest.sqlite") + du_mb(data / "manifest.sqlite-wal"),
        "parquet": du_mb(data / "parquet"),
        "qdrant": du_mb(data / "qdrant"),
        "postgres": du_mb(data / "postgres"),
        "indexed_photos": out["index"]["photos"],
    }
    return out


# -- analytics -----------------------------------------------------------------------------------------


def run_analytics(photos: int, args: argparse.Namespace) -> dict:
    """Per-photo Parquet for `photos` photos (2 faces each), compacted, queried with DuckDB both ways."""
    import duckdb
    import numpy as np

    from facepipe.compaction import Compactor
    from facepipe.faces.records import Face, ImageRecord, face_id
    from facepipe.stores.parquet import ParquetStore

    work = Path(args.workdir) / f"analytics-{photos}"
    shutil.rmtree(work, ignore_errors=True)
    parquet = ParquetStore(root=str(work / "parquet"))
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(1024, 128)).astype(np.float32)
    started = time.perf_counter()
    for i in range(photos):
        key = f"{i // PER_FOLDER:04d}/photo {i:07d}.jpg"
        sha = f"{i:064x}"
        faces = [
            Face(
                face_id(key, sha, (j, 50, 50, j)),
                key,
                sha,
                j,
                50,
                50,
                j,
                None,
                "hog",
                vectors[(i + j) % 1024],
                b"\xff\xd8" + bytes(2000),
                "v1",
                f"p{(i * 7 + j) % 500}",
            )
            for j in range(2)
        ]
        parquet.write(ImageRecord(key, sha, "ok", None, 200, 200, "hog", "v1", 0.01, faces))
    out: dict = {"photos": photos, "faces": 2 * photos, "write_per_photo_s": round(time.perf_counter() - started, 1)}
    compactor = Compactor(parquet)
    started = time.perf_counter()
    report = compactor.run()
    out["compact_first_s"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    out["stale_after_compacting"] = compactor.is_stale()
    out["stale_check_s"] = round(time.perf_counter() - started, 2)
    for i in range(0, 20):  # 20 photos re-written (a small incremental run)
        key = f"{i // PER_FOLDER:04d}/photo {i:07d}.jpg"
        parquet.write(ImageRecord(key, "f" * 64, "ok", None, 200, 200, "hog", "v1", 0.01, []))
    started = time.perf_counter()
    again = compactor.run()
    out["compact_20_changed_s"] = round(time.perf_counter() - started, 2)
    out["compact_20_changed_shards"] = again.shards_written
    out["compact_first_shards"] = report.shards_written
    out["disk_mb"] = {"per_photo": du_mb(parquet.base / "faces") + du_mb(parquet.base / "images")}
    out["disk_mb"]["compact"] = du_mb(parquet.base / "compact")
    queries = {
        "faces_per_photo": "SELECT image_key, count(*) AS faces FROM read_parquet('{}') GROUP BY ALL ORDER BY 1",
        "photos_per_person": "SELECT person_id, count(DISTINCT image_key) AS photos FROM read_parquet('{}') "
        "WHERE person_id IS NOT NULL GROUP BY ALL ORDER BY photos DESC",
    }
    globs = {
        "compact": str(parquet.base / "compact" / "faces-*.parquet"),
        "per_photo": str(parquet.base / "faces" / "**" / "*.parquet"),
    }
    for qname, sql in queries.items():
        for gname, glob in globs.items():
            con = duckdb.connect()
            started = time.perf_counter()
            rows = len(con.sql(sql.format(glob)).fetchall())
            out[f"{qname}_{gname}_s"] = round(time.perf_counter() - started, 2)
            out[f"{qname}_{gname}_rows"] = rows
            con.close()
    return out


# -- driver --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--full-index-up-to", type=int, default=20_000, help="index every photo up to this size")
    parser.add_argument("--index-sample", type=int, default=5_000, help="photos indexed above that size")
    parser.add_argument("--analytics-photos", type=int, default=100_000, help="0: skip the analytics stage")
    parser.add_argument("--no-ui", action="store_true")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.stage:  # child process: one size, or the analytics stage
        kind, n = args.stage.split(":")
        result = run_analytics(int(n), args) if kind == "analytics" else run_size(int(n), args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    args.workdir = args.workdir or tempfile.mkdtemp(prefix="facepipe-scale-bench-")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    stages = [f"size:{n}" for n in args.sizes.split(",") if n]
    if args.analytics_photos:
        stages.append(f"analytics:{args.analytics_photos}")
    results = []
    try:
        for stage in stages:
            argv = [sys.executable, __file__, "--stage", stage, "--workdir", args.workdir]
            argv += ["--full-index-up-to", str(args.full_index_up_to), "--index-sample", str(args.index_sample)]
            argv += ["--no-ui"] if args.no_ui else []
            started = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, text=True, cwd=args.workdir)
            lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            result = json.loads(lines[-1][7:]) if lines else {"error": proc.stderr[-2000:]}
            result.update(stage=stage, wall_s=round(time.perf_counter() - started, 1))
            print(json.dumps(result, indent=1), flush=True)
            results.append(result)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
