"""The search page in headless Chromium against a real `facepipe serve` process: upload a photo,
see its face outlined and its matches with distances and person names; then the people page.

knn `train/` is indexed (HOG) in a subprocess, the Obama person is named through the CLI, and
`facepipe serve` runs on a free loopback port. Chromium and chromedriver are the Debian packages
(scripts/install-chromium.sh); the helpers are the UI tests' (facepipe_tests/ui_helpers.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from facepipe_tests.conftest import KNN
from facepipe_tests.ui_helpers import (
    chromium,
    facepipe_cli,
    make_env,
    page_and_log,
    page_text,
    prepare,
    processes,
    require_chromium,
    serve,
    wait_for,
)

pytestmark = [pytest.mark.ui, pytest.mark.timeout(600)]


def test_search_page_shows_faces_matches_and_people(tmp_path: Path) -> None:
    require_chromium()
    env = make_env(tmp_path)
    for person in (KNN / "train").iterdir():
        shutil.copytree(person, env.images / person.name)
    prepare(env, materialize=True)  # `facepipe index` in a subprocess: faces, stores, people
    people = json.loads(facepipe_cli(env, "people", "--json"))
    (obama,) = [p for p in people if p["image_keys"][0].startswith("obama/")]
    facepipe_cli(env, "people", "name", obama["person_id"], "Barack Obama")

    with processes(env) as procs:
        server, base = serve(procs)
        with chromium(tmp_path) as driver:
            from selenium.webdriver.common.action_chains import ActionChains
            from selenium.webdriver.common.by import By

            driver.get(base + "/")
            driver.find_element(By.ID, "file").send_keys(str(KNN / "test/obama1.jpg"))
            wait_for(
                "the search results",
                lambda: driver.find_elements(By.CSS_SELECTOR, ".face .match"),
                60,
                alive=server.check_alive,
                context=page_and_log(driver, server),
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
            ActionChains(driver).move_to_element(driver.find_element(By.CSS_SELECTOR, "#boxes .box")).perform()
            lit = "return [...document.querySelectorAll('[data-face=\"0\"]')].map(n => n.matches('.hot'))"
            wait_for("the pointed-at box lit with its results", lambda: driver.execute_script(lit) == [True, True], 30)

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
