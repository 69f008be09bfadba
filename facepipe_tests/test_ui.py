"""End-to-end through Dagster's own processes: the webserver's UI in headless Chromium, and a
backfill launched over GraphQL and executed by the daemon.

Real processes on 127.0.0.1 (free ports), temporary folders, the HOG detector; nothing mocked.
Chromium and chromedriver are the Debian packages (scripts/install-chromium.sh); when they are
missing these tests fail rather than skip, because CI installs them.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from facepipe_tests.ui_helpers import (
    SMALL_PHOTOS,
    chromium,
    free_port,
    graphql,
    make_env,
    page_text,
    prepare,
    processes,
    require_chromium,
    sensors,
    wait_for,
    wait_for_webserver,
)

pytestmark = [pytest.mark.ui, pytest.mark.timeout(240)]


def dismiss_popups(driver) -> None:
    """Close the webserver's one-time 'Join the Dagster community' dialog if it covers the page."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
        with contextlib.suppress(Exception):  # gone or not clickable yet: it only matters for the screenshot
            button.click()


def load_page(driver, url: str, expected: list[str], timeout: float = 45) -> str:
    """Open `url` and wait until the rendered text contains every expected string."""
    driver.get(url)
    text = wait_for(
        f"{url} to show {expected}",
        lambda: (t := page_text(driver)) and all(e in t for e in expected) and t,
        timeout,
        context=lambda: f"page text:\n{page_text(driver)[:3000]}",
    )
    dismiss_popups(driver)
    return text


def test_ui_shows_faces_asset_partitions_and_sensor(tmp_path: Path) -> None:
    require_chromium()  # fail fast, before spending time on Dagster
    env = make_env(tmp_path)
    photos = env.add_photos(SMALL_PHOTOS[:3])
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    with processes(env) as procs:
        # The webserver starts (~10 s) while the partitions are prepared (make_env created the storage).
        web = procs.webserver(port)
        # `facepipe index` (in a subprocess): adds one partition per photo and materializes them.
        keys = prepare(env, materialize=True)
        assert keys == photos
        wait_for_webserver(base, web)

        # The sensor through the API: loaded, and RUNNING by default (no daemon here, so it never ticks).
        found = sensors(base)
        assert "images_sensor" in found, f"sensors loaded: {sorted(found)}"
        assert found["images_sensor"]["sensorState"]["status"] == "RUNNING"

        with chromium(tmp_path) as driver:
            overview = load_page(driver, f"{base}/assets/faces", ["faces", "Group", "index_images", "images_sensor"])
            assert "Materialize" in overview
            driver.save_screenshot(str(tmp_path / "asset-overview.png"))

            n = len(photos)
            partitions = load_page(
                driver,
                f"{base}/assets/faces?view=partitions",
                [f"{n} Partitions", f"Materialized ({n})", *photos],
            )
            assert "Failed (0)" in partitions and "Missing (0)" in partitions, partitions
            driver.save_screenshot(str(tmp_path / "asset-partitions.png"))

            automation = load_page(driver, f"{base}/automation", ["images_sensor"])
            assert "sensor" in automation.lower()
            driver.save_screenshot(str(tmp_path / "automation.png"))

        web.check_alive()

    for shot in ("asset-overview.png", "asset-partitions.png", "automation.png"):
        assert (tmp_path / shot).stat().st_size > 10_000, f"{shot} looks empty"


ASSET_QUERY = """
query {
  assetNodeOrError(assetKey: {path: ["faces"]}) {
    __typename
    ... on AssetNode {
      groupName
      partitionKeys
      backfillPolicy { maxPartitionsPerRun policyType }
      partitionStats { numPartitions numMaterialized numFailed numMaterializing }
    }
  }
}
"""

STOP_SENSOR = """
mutation($id: String) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on PythonError { message stack }
  }
}
"""

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
    ... on PythonError { stack }
  }
}
"""

BACKFILL_QUERY = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      numPartitions
      error { message stack }
      runs { id status tags { key value } }
    }
    ... on Error { message }
  }
}
"""

RUNS_QUERY = """
query {
  runsOrError { __typename ... on Runs { results { id status tags { key value } } } }
}
"""

DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


def test_backfill_over_all_partitions_runs_in_batches(tmp_path: Path) -> None:
    # FACEPIPE_BATCH asks for 4 photos per run if the code reads it (6 photos -> 2 runs); with the
    # default max_partitions_per_run (64) the backfill is one run. Either way the expectation below
    # comes from the policy the webserver actually loaded.
    env = make_env(tmp_path, FACEPIPE_BATCH="4")
    photos = env.add_photos(SMALL_PHOTOS)
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    with processes(env) as procs:
        web = procs.webserver(port)
        # Partitions and manifest in sync with the folder, nothing materialized.
        keys = prepare(env, materialize=False)
        assert keys == photos
        wait_for_webserver(base, web)

        node = graphql(base, ASSET_QUERY)["assetNodeOrError"]
        assert node["__typename"] == "AssetNode", node
        assert sorted(node["partitionKeys"]) == photos
        per_run = node["backfillPolicy"]["maxPartitionsPerRun"] or len(photos)
        expected_runs = math.ceil(len(photos) / per_run)

        # images_sensor defaults to RUNNING and the daemon would tick it every 30 s. The manifest is
        # already in sync, so it would request nothing; we still stop it before the daemon starts
        # so that every run on this instance is the backfill's and the run count is exact
        # (and so the code server is not busy evaluating the sensor while the runs start).
        sensor = sensors(base)["images_sensor"]
        stopped = graphql(base, STOP_SENSOR, {"id": sensor["sensorState"]["id"]})["stopSensor"]
        assert stopped["__typename"] == "StopSensorMutationResult", stopped
        assert stopped["instigationState"]["status"] == "STOPPED"

        daemon = procs.daemon()
        started = time.monotonic()
        # The faces and their exports, as "Materialize all" in the UI selects them; exports are also
        # eager, so a faces-only backfill would be followed by automation runs outside the backfill.
        selection = [{"path": [name]} for name in ("faces", "qdrant_faces", "pgvector_faces")]
        launched = graphql(base, LAUNCH_BACKFILL, {"params": {"assetSelection": selection, "allPartitions": True}})[
            "launchPartitionBackfill"
        ]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        def finished() -> dict | None:
            daemon.check_alive()
            web.check_alive()
            b = graphql(base, BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
            assert b["__typename"] == "PartitionBackfill", b
            return b if b["status"] in DONE else None

        backfill = wait_for(f"backfill {backfill_id} to finish", finished, timeout=180, interval=2, context=procs.logs)
        seconds = time.monotonic() - started
        runs = backfill["runs"]
        assert backfill["status"] in {"COMPLETED", "COMPLETED_SUCCESS"}, f"{backfill}\n{procs.logs()}"
        assert [r["status"] for r in runs] == ["SUCCESS"] * len(runs), runs

        # Batched: one run per max_partitions_per_run photos, so fewer runs than partitions.
        assert len(runs) == expected_runs, f"{len(runs)} runs for {len(photos)} partitions at {per_run} per run"
        assert len(runs) < len(photos)
        for run in runs:
            tags = {t["key"]: t["value"] for t in run["tags"]}
            assert tags.get("dagster/backfill") == backfill_id, tags
        # Anything else on the instance is the `people` clustering following the new faces (launched by
        # its sensor or by automation); no run re-did image partitions the backfill covered.
        everything = graphql(base, RUNS_QUERY)["runsOrError"]["results"]
        others = [r for r in everything if r["id"] not in {run["id"] for run in runs}]
        for run in others:
            tags = {t["key"]: t["value"] for t in run["tags"]}
            launcher = tags.get("dagster/sensor_name") or tags.get("dagster/from_automation_condition")
            assert launcher and launcher != "images_sensor", f"run outside the backfill: {tags}"
            assert "dagster/asset_partition_range_start" not in tags and "dagster/partition" not in tags, tags

        # Materializations: every partition, as the webserver reports them ...
        stats = graphql(base, ASSET_QUERY)["assetNodeOrError"]["partitionStats"]
        assert stats["numMaterialized"] == stats["numPartitions"] == len(photos), stats
        assert stats["numFailed"] == 0, stats

    # ... and as the instance records them (read after the processes are gone).
    import dagster as dg

    with dg.DagsterInstance.from_config(str(env.dagster_home)) as instance:
        for asset in ("faces", "qdrant_faces", "pgvector_faces"):
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == set(photos), asset

    # The asset's output: one status row per photo, each read and with a face found.
    images_dir = env.data / "parquet" / "images"
    for key in photos:
        path = images_dir / f"{key}.parquet"
        assert path.is_file(), f"no Parquet for {key} in {sorted(p.name for p in images_dir.glob('*'))}"
        row = pq.read_table(path).to_pylist()[0]
        assert row["image_key"] == key and row["status"] == "ok", row
        assert row["faces"] >= 1 and row["detector"] == "hog", row
    print(f"backfill {backfill_id}: {len(runs)} runs for {len(photos)} partitions in {seconds:.0f}s")
