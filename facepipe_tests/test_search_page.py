"""The search page in headless Chromium against a real `facepipe serve` process: upload a photo,
see its face outlined and its matches with distances and person names; then the people page.

knn `train/` is indexed (HOG) in a subprocess, the Obama person is named through the CLI, and
`facepipe serve` runs on a free loopback port. Chromium and chromedriver are the Debian packages
(scripts/install-chromium.sh); the helpers are the UI tests' (facepipe_tests/ui_helpers.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from facepipe_tests.conftest import KNN
from facepipe_tests.ui_helpers import (
    BIN,
    chromium,
    free_port,
    make_env,
    page_text,
    prepare,
    processes,
    require_chromium,
    wait_for,
)

pytestmark = [pytest.mark.ui, pytest.mark.timeout(600)]


def facepipe(env, *args: str) -> str:
    proc = subprocess.run(
        [str(BIN / "facepipe"), *args], env=env.vars, cwd=env.root, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"facepipe {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_search_page_shows_faces_matches_and_people(tmp_path: Path) -> None:
    require_chromium()
    env = make_env(tmp_path)
    for person in (KNN / "train").iterdir():
        shutil.copytree(person, env.images / person.name)
    prepare(env, materialize=True)  # `facepipe index` in a subprocess: faces, stores, people
    people = json.loads(facepipe(env, "people", "--json"))
    (obama,) = [p for p in people if p["image_keys"][0].startswith("obama/")]
    facepipe(env, "people", "name", obama["person_id"], "Barack Obama")

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with processes(env) as procs:
        server = procs.start("serve", [str(BIN / "facepipe"), "serve", "--port", str(port)])
        wait_for(
            "facepipe serve to answer /api/people",
            lambda: httpx.get(f"{base}/api/people", timeout=5).status_code == 200,
            30,
            alive=server.check_alive,
            context=server.tail,
        )
        with chromium(tmp_path) as driver:
            from selenium.webdriver.common.by import By

            driver.get(base + "/")
            driver.find_element(By.ID, "file").send_keys(str(KNN / "test/obama1.jpg"))
            wait_for(
                "the search results",
                lambda: driver.find_elements(By.CSS_SELECTOR, ".face .match"),
                60,
                alive=server.check_alive,
                context=lambda: f"{page_text(driver)[:2000]}\n{server.tail()}",
            )
            driver.save_screenshot(str(tmp_path / "search_page.png"))

            assert len(driver.find_elements(By.CSS_SELECTOR, "#boxes .box")) == 1, "one face outlined"
            first = driver.find_element(By.CSS_SELECTOR, ".face .match")
            assert first.get_attribute("data-image-key").startswith("obama/")
            label = first.find_element(By.CSS_SELECTOR, ".label").text
            assert "Barack Obama" in label and "obama/" in label, label
            assert float(first.get_attribute("data-distance")) < 0.6
            thumb = first.find_element(By.CSS_SELECTOR, "img.thumb")
            assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", thumb)
            assert "1 face found" in driver.find_element(By.ID, "status").text

            driver.get(base + "/people")
            cards = wait_for(
                "the people cards",
                lambda: driver.find_elements(By.CSS_SELECTOR, ".person"),
                30,
                context=lambda: page_text(driver)[:2000],
            )
            assert len(cards) == 4  # alex_lacamoire has one photo: no person yet
            text = page_text(driver)
            assert "Barack Obama" in text and "2 photos" in text
            driver.find_element(By.CSS_SELECTOR, f'.person[data-person-id="{obama["person_id"]}"]').click()
            loaded = "return [...document.querySelectorAll('#photos .photo img')].filter(i => i.naturalWidth).length"
            wait_for(
                "the person's two photos, drawn with their boxes",
                lambda: driver.execute_script(loaded) == 2,
                30,
                context=lambda: page_text(driver)[:2000],
            )
            driver.save_screenshot(str(tmp_path / "people_page.png"))
