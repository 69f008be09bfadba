"""The photo viewer in headless Chromium against a real `facepipe serve` process: a group photo's
page shows each face outlined and labelled by its person; clicking a face lands on that person's
page, where every one of their faces is highlighted in each photo.

knn `train/` plus the Obama-and-Biden group photo are indexed (HOG) in a subprocess; what the page
shows is checked against the Parquet and `facepipe people --json`. Screenshots go to the test's
temporary folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from facepipe.stores.parquet import ParquetStore
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
GROUP = "together/obama_and_biden.jpg"


@dataclass
class Served:
    env: Any
    base: str
    server: Any
    people: dict[str, dict]
    parquet: ParquetStore
    obama: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """knn `train/` and the group photo indexed, Obama's person named, `facepipe serve` running."""
    require_chromium()
    env = make_env(tmp_path_factory.mktemp("viewer"))
    for person in (KNN / "train").iterdir():
        shutil.copytree(person, env.images / person.name)
    (env.images / "together").mkdir()
    shutil.copyfile(KNN / "test/obama_and_biden.jpg", env.images / GROUP)
    prepare(env, materialize=True)
    people = {p["person_id"]: p for p in json.loads(facepipe_cli(env, "people", "--json"))}
    obama = next(pid for pid, p in people.items() if any(k.startswith("obama/") for k in p["image_keys"]))
    facepipe_cli(env, "people", "name", obama, "Barack Obama")
    people = {p["person_id"]: p for p in json.loads(facepipe_cli(env, "people", "--json"))}
    with processes(env) as procs:
        server, base = serve(procs)
        yield Served(env, base, server, people, ParquetStore(env.data / "parquet"), obama)


def test_photo_viewer_labels_every_face_and_leads_to_the_person(served: Served, tmp_path: Path) -> None:
    people, parquet, obama, base, server = served.people, served.parquet, served.obama, served.base, served.server
    group = parquet.read_faces(GROUP, ["face_id", "person_id"]).to_pylist()
    clustered = [f for f in group if f["person_id"]]
    assert len(clustered) >= 2 and all(f["person_id"] in people for f in clustered), (group, people)
    with chromium(tmp_path) as driver:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        driver.get(f"{base}/photos/{GROUP}")
        photo_loaded = "const i = document.getElementById('photo'); return i.complete && i.naturalWidth > 0"
        wait_for(
            "the photo with its faces",
            lambda: driver.execute_script(photo_loaded) and len(driver.find_elements(By.CSS_SELECTOR, "#boxes .box")),
            60,
            alive=server.check_alive,
            context=page_and_log(driver, server),
        )
        driver.save_screenshot(str(tmp_path / "photo_viewer.png"))
        boxes = driver.find_elements(By.CSS_SELECTOR, "#boxes .box")
        shown = {b.get_attribute("data-face-id"): b for b in boxes}
        assert set(shown) == {f["face_id"] for f in group}, "every face outlined, no other"
        for face in group:
            box = shown[face["face_id"]]
            pid = face["person_id"]
            assert box.get_attribute("data-person-id") == (pid or "")
            assert box.text == ((people[pid]["name"] or pid) if pid else "no person"), box.text
            assert (box.tag_name == "a") == bool(pid)  # only a face with a person leads somewhere
            assert box.size["width"] > 10 and box.size["height"] > 10  # drawn over the photo, not collapsed
        assert shown[next(f["face_id"] for f in group if f["person_id"] == obama)].text == "Barack Obama"
        assert f"{len(group)} faces in this photo" in driver.find_element(By.ID, "status").text
        pointed = group[0]["face_id"]
        ActionChains(driver).move_to_element(shown[pointed]).perform()
        lit = f"return [...document.querySelectorAll('[data-face-id=\"{pointed}\"]')].map(n => n.matches('.hot'))"
        wait_for("the pointed-at face lit with its list entry", lambda: driver.execute_script(lit) == [True, True], 30)

        shown[next(f["face_id"] for f in group if f["person_id"] == obama)].click()
        tiles = "return [...document.querySelectorAll('#photos .photo img')].filter(i => i.naturalWidth).length"
        wait_for(
            "the person's page with every photo drawn",
            lambda: driver.execute_script(tiles) == len(people[obama]["image_keys"]),
            60,
            alive=server.check_alive,
            context=page_and_log(driver, server),
        )
        driver.save_screenshot(str(tmp_path / "person_page.png"))
        assert urlsplit(driver.current_url).path == "/people"
        assert driver.find_element(By.ID, "person").get_attribute("data-person-id") == obama
        assert "Barack Obama" in driver.find_element(By.ID, "person-title").text
        for tile in driver.find_elements(By.CSS_SELECTOR, "#photos .photo"):
            key = tile.get_attribute("data-image-key")
            theirs = {
                f["face_id"]
                for f in parquet.read_faces(key, ["face_id", "person_id"]).to_pylist()
                if f["person_id"] == obama
            }
            src = tile.find_element(By.TAG_NAME, "img").get_attribute("src")
            assert set(parse_qs(urlsplit(src).query)["face_id"]) == theirs, (key, src)
        assert sorted(
            t.get_attribute("data-image-key") for t in driver.find_elements(By.CSS_SELECTOR, "#photos .photo")
        ) == sorted(people[obama]["image_keys"])


def test_search_page_paste_keyboard_and_no_broken_image(served: Served, tmp_path: Path) -> None:
    """An empty page shows no image; a pasted photo is searched; arrows and Enter open a result's
    photo, Esc goes back; a person's name in the results links to their page."""
    base, server = served.base, served.server
    with chromium(tmp_path) as driver:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        driver.get(base + "/")
        wait_for("the search page", lambda: driver.find_elements(By.ID, "drop"), 30)
        shown = "return [...document.images].filter(i => i.offsetWidth > 0).length"
        assert driver.execute_script(shown) == 0, "an empty search page shows no (broken) image"
        # What a paste of a copied photo delivers to the page: a ClipboardEvent carrying the file.
        driver.execute_script(
            """
            const [url, done] = arguments;
            fetch(url).then(r => r.blob()).then(blob => {
              const data = new DataTransfer();
              data.items.add(new File([blob], "image.jpg", { type: "image/jpeg" }));
              document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data }));
            });
            """,
            f"/api/images/{GROUP}?boxes=false&max_side=1600",
        )
        matches = wait_for(
            "results of the pasted photo",
            lambda: driver.find_elements(By.CSS_SELECTOR, ".face .match"),
            60,
            alive=server.check_alive,
            context=page_and_log(driver, server),
        )
        driver.save_screenshot(str(tmp_path / "pasted_search.png"))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#boxes .box")) >= 2
        named = driver.find_elements(By.CSS_SELECTOR, ".match a.who")
        assert named and all(a.get_attribute("href").startswith(f"{base}/people#") for a in named)
        assert any(a.text.startswith("Barack Obama") for a in named)

        def press(key: str) -> None:  # to whatever has the focus, as a person's keyboard does
            ActionChains(driver).send_keys(key).perform()

        press(Keys.ARROW_RIGHT)
        press(Keys.ARROW_RIGHT)
        focused = driver.switch_to.active_element
        second = matches[1].find_element(By.CSS_SELECTOR, "a.open")
        assert focused == second, "two arrow presses: the second result"
        key = matches[1].get_attribute("data-image-key")
        press(Keys.ENTER)
        wait_for(
            "the result's photo in the viewer",
            lambda: driver.find_elements(By.CSS_SELECTOR, "#boxes .box.labelled"),
            30,
            context=lambda: page_text(driver)[:2000],
        )
        assert driver.find_element(By.ID, "title").text == key
        press(Keys.ESCAPE)
        wait_for("back on the search page", lambda: urlsplit(driver.current_url).path == "/", 30)
