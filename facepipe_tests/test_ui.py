"""End-to-end through Dagster's own processes: the webserver's UI in headless Chromium, and a
backfill launched over GraphQL and executed by the daemon.

Real processes on 127.0.0.1 (free ports), temporary folders, the HOG detector; nothing mocked.
Chromium and chromedriver are the Debian packages (scripts/install-chromium.sh); when they are
missing these tests fail rather than skip, because CI installs them.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from facepipe_tests.ui_helpers import (
    EXAMPLES,
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

pytestmark = [pytest.mark.ui, pytest.mark.timeout(900)]


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

        backfill = wait_for(f"backfill {backfill_id} to finish", finished, timeout=600, interval=2, context=procs.logs)
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


LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

RUN_QUERY = """
query($id: ID!) {
  runOrError(runId: $id) { __typename ... on Run { status jobName tags { key value } } }
}
"""

PARTITIONS_QUERY = """
query($keys: [String!]) {
  assetNodeOrError(assetKey: {path: ["faces"]}) {
    ... on AssetNode {
      owners { __typename ... on TeamAssetOwner { team } }
      tags { key value }
      metadataEntries { label __typename }
      latestMaterializationByPartition(partitions: $keys) {
        partition
        runId
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on TextMetadataEntry { text }
          ... on BoolMetadataEntry { boolValue }
          ... on PathMetadataEntry { path }
        }
      }
    }
  }
}
"""

LATEST_QUERY = """
query($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode { assetMaterializations(limit: 1) { runId timestamp } }
  }
}
"""

LOCATIONS_QUERY = """
query { workspaceOrError { ... on Workspace { locationEntries { name } } } }
"""

RUNS_BY_JOB = """
query { runsOrError { ... on Runs { results { id jobName status tags { key value } } } } }
"""


def partition_metadata(base: str, keys: list[str]) -> dict[str, dict]:
    node = graphql(base, PARTITIONS_QUERY, {"keys": keys})["assetNodeOrError"]
    by_key = {}
    for entry in node["latestMaterializationByPartition"]:
        if entry:
            values = {
                m["label"]: next((v for k, v in m.items() if k != "label"), None) for m in entry["metadataEntries"]
            }
            by_key[entry["partition"]] = {**values, "runId": entry["runId"]}
    return by_key


def test_ui_materialize_does_what_facepipe_index_does(tmp_path: Path) -> None:
    """A materialization launched as the UI launches it (the three per-photo assets of the `index_photos`
    step, which the UI's "materialize together" dialog adds to a click on `faces`) writes the Parquet, both
    stores and, through the automation sensor that ships on, people; `force` re-processes an unchanged photo;
    each partition carries its own metadata; the images sensor launches `index_images`; the photos_readable
    check lists an unreadable file; owners, tags, the column schema, descriptions and the location name show."""
    require_chromium()
    env = make_env(tmp_path)
    photos = env.add_photos(SMALL_PHOTOS[:2])
    (env.images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    keys = sorted([*photos, "broken.jpg"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    with processes(env) as procs:
        web = procs.webserver(port)
        assert prepare(env, materialize=False) == keys
        wait_for_webserver(base, web)
        daemon = procs.daemon()  # runs the sensors that ship on: images_sensor, people_automation, ...

        locations = graphql(base, LOCATIONS_QUERY)["workspaceOrError"]["locationEntries"]
        assert [entry["name"] for entry in locations] == ["facepipe"]
        selector = {
            "repositoryLocationName": "facepipe",
            "repositoryName": "__repository__",
            "pipelineName": "__ASSET_JOB",
            "assetSelection": [{"path": [name]} for name in ("faces", "qdrant_faces", "pgvector_faces")],
        }

        def launch(first: str, last: str | None = None, force: bool = False) -> str:
            """One partition, or the range first..last, as the UI's launch dialog sends it."""
            tags = [{"key": "dagster/partition", "value": first}]
            if last:
                tags = [
                    {"key": "dagster/asset_partition_range_start", "value": first},
                    {"key": "dagster/asset_partition_range_end", "value": last},
                ]
            params = {
                "selector": selector,
                "runConfigData": {"ops": {"index_photos": {"config": {"force": force}}}},
                "executionMetadata": {"tags": tags},
                "mode": "default",
            }
            launched = graphql(base, LAUNCH_RUN, {"params": params})["launchPipelineExecution"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            run_id = launched["run"]["runId"]

            def done() -> dict | None:
                web.check_alive()
                run = graphql(base, RUN_QUERY, {"id": run_id})["runOrError"]
                return run if run["status"] in {"SUCCESS", "FAILURE", "CANCELED"} else None

            run = wait_for(f"run {run_id} for {first}..{last}", done, timeout=300, interval=2, context=procs.logs)
            assert run["status"] == "SUCCESS", procs.logs()
            return run_id

        first_run = launch(keys[0], keys[-1])

        # Each partition has its own metadata: its faces, status and reason, not the batch's.
        meta = partition_metadata(base, keys)
        assert meta["broken.jpg"]["status"] == "error" and "not an image" in meta["broken.jpg"]["reason"]
        assert all(meta[k]["status"] == "ok" and meta[k]["faces"] >= 1 for k in photos), meta
        assert meta[photos[0]]["parquet"].endswith(f"{photos[0]}.parquet")

        # Qdrant and pgvector follow in the same run: the same faces as the Parquet.
        out = subprocess.run(
            [sys.executable, "-m", "facepipe.cli", "status", "--json"],
            env=env.vars,
            cwd=env.root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        doc = json.loads(out)
        assert doc["parquet"]["faces"] == doc["qdrant"]["faces"] == doc["pgvector"]["faces"] >= 2, doc

        # People follow with no sensor switched on by hand (people_automation ships RUNNING).
        def people_done() -> dict | None:
            daemon.check_alive()
            found = graphql(base, LATEST_QUERY, {"path": ["people"]})["assetNodeOrError"]["assetMaterializations"]
            return found[0] if found else None

        wait_for("people to be clustered by automation", people_done, timeout=300, interval=3, context=procs.logs)

        # `force` re-extracts a photo whose bytes did not change; without it the photo is skipped.
        assert partition_metadata(base, [photos[0]])[photos[0]]["skipped_unchanged"] is False
        launch(photos[0])
        assert partition_metadata(base, [photos[0]])[photos[0]]["skipped_unchanged"] is True
        forced = launch(photos[0], force=True)
        after = partition_metadata(base, [photos[0]])[photos[0]]
        assert after["runId"] == forced != first_run and after["skipped_unchanged"] is False

        # The images sensor (on by default) launches index_images for a new photo.
        shutil.copyfile(EXAMPLES / SMALL_PHOTOS[2], env.images / "new.jpg")

        def sensor_run() -> dict | None:
            daemon.check_alive()
            found = graphql(base, RUNS_BY_JOB)["runsOrError"]["results"]
            mine = [r for r in found if {"key": "dagster/sensor_name", "value": "images_sensor"} in r["tags"]]
            return mine[0] if mine and mine[0]["status"] == "SUCCESS" else None

        run = wait_for("the images sensor's run", sensor_run, timeout=300, interval=3, context=procs.logs)
        assert run["jobName"] == "index_images"
        assert partition_metadata(base, ["new.jpg"])["new.jpg"]["status"] == "ok"

        # What the UI shows: owners, tags and column schema on the asset; the readable-photos check warns.
        node = graphql(base, PARTITIONS_QUERY, {"keys": []})["assetNodeOrError"]
        assert {"__typename": "TeamAssetOwner", "team": "facepipe"} in node["owners"]
        assert {"key": "domain", "value": "faces"} in node["tags"]
        assert any(m["__typename"] == "TableSchemaMetadataEntry" for m in node["metadataEntries"])
        check = {
            "selector": {
                "repositoryLocationName": "facepipe",
                "repositoryName": "__repository__",
                "pipelineName": "check_stores",
            },
            "mode": "default",
        }
        launched = graphql(base, LAUNCH_RUN, {"params": check})["launchPipelineExecution"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        check_id = launched["run"]["runId"]
        wait_for(
            "the check run",
            lambda: graphql(base, RUN_QUERY, {"id": check_id})["runOrError"]["status"] in {"SUCCESS", "FAILURE"},
            timeout=300,
            interval=2,
            context=procs.logs,
        )

        with chromium(tmp_path) as driver:
            checks = load_page(
                driver, f"{base}/assets/faces?view=checks", ["photos_readable", "non-blocking", "broken.jpg"]
            )
            assert "not an image Pillow can identify" in checks and "unreadable" in checks, checks[:2000]
            driver.save_screenshot(str(tmp_path / "faces-checks.png"))
            overview = load_page(driver, f"{base}/assets/faces", ["Code location", "Owners", "personal_data: yes"])
            assert "embedding" in overview and "image_key" in overview, "column schema shown"
            driver.save_screenshot(str(tmp_path / "faces-overview.png"))
            resource = load_page(driver, f"{base}/locations/facepipe/resources/library", ["data_dir"])
            assert "Data folder" in resource and "Images folder" in resource
            driver.save_screenshot(str(tmp_path / "library-resource.png"))
            sensor_page = load_page(driver, f"{base}/locations/facepipe/sensors/images_sensor", ["images_sensor"])
            assert "Follows the images folder" in sensor_page
        web.check_alive()
        daemon.check_alive()
