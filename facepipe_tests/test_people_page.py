"""The people page in headless Chromium against a real `facepipe serve`: rename, split, merge, move a
face, accept a review suggestion and undo, each checked in what the page shows and in what
`facepipe people --json` (a separate process) says. Screenshots go to the test's tmp folder.

Photos: knn Obama (3), Biden (2), Kit Harington (2) and Alex Lacamoire (2, plus a PNG portrait that
clustering leaves out but the review queue offers to him), indexed with HOG in a subprocess.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from facepipe_tests.conftest import KNN, KNN_PEOPLE
from facepipe_tests.ui_helpers import (
    chromium,
    facepipe_cli,
    make_env,
    page_and_log,
    prepare,
    processes,
    serve,
    wait_for,
)

pytestmark = [pytest.mark.ui, pytest.mark.timeout(900)]

PHOTOS = {
    **KNN_PEOPLE,
    "alex/c.jpg": KNN / "test/alex_lacamoire1.jpg",
    "alex/b.png": KNN.parent / "alex-lacamoire.png",
}


def test_people_page_renames_splits_merges_moves_reviews_and_undoes(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    for key, source in PHOTOS.items():
        (env.images / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, env.images / key)
    prepare(env, materialize=True, timeout=300)

    def cli() -> dict[str, dict]:
        return {p["person_id"]: p for p in json.loads(facepipe_cli(env, "people", "--json"))}

    def owner(key: str) -> str:
        return next(pid for pid, p in cli().items() if key in p["image_keys"])

    obama, biden, alex = owner("obama/a.jpg"), owner("biden/a.jpg"), owner("alex/a.jpg")
    assert cli()[obama]["faces"] == 3 and "alex/b.png" not in cli()[alex]["image_keys"]

    with processes(env) as procs:
        server, base = serve(procs, timeout=60)
        with chromium(tmp_path) as driver:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import Select

            def until(what: str, probe, timeout: float = 60):
                return wait_for(
                    what,
                    probe,
                    timeout,
                    alive=server.check_alive,
                    context=page_and_log(driver, server, chars=3000),
                )

            def status_says(text: str) -> None:
                until(f"the status to say {text!r}", lambda: text in driver.find_element(By.ID, "status").text)

            def open_person(pid: str) -> None:
                driver.get(f"{base}/people#{pid}")
                until(
                    f"{pid}'s faces",
                    lambda: (
                        driver.find_element(By.ID, "person-title").get_attribute("data-person-id") == pid
                        and driver.find_elements(By.CSS_SELECTOR, "#faces .pick")
                    ),
                )

            def faces_shown() -> set[str]:
                return {e.get_attribute("title") for e in driver.find_elements(By.CSS_SELECTOR, "#faces .pick")}

            def pick(key: str) -> None:
                driver.find_element(By.CSS_SELECTOR, f'#faces .pick[title="{key}"] input').click()

            # Rename.
            open_person(obama)
            name = driver.find_element(By.ID, "name-input")
            name.clear()
            name.send_keys("Barack Obama")
            driver.find_element(By.CSS_SELECTOR, "#rename button").click()
            status_says(f"{obama} is now Barack Obama")
            until(
                "the new name in the title", lambda: "Barack Obama" in driver.find_element(By.ID, "person-title").text
            )
            card = driver.find_element(By.CSS_SELECTOR, f'.person[data-person-id="{obama}"]')
            assert "Barack Obama" in card.text
            assert cli()[obama]["name"] == "Barack Obama"
            driver.save_screenshot(str(tmp_path / "1_rename.png"))

            # Split obama/c off into a new person: the page opens it.
            pick("obama/c.jpg")
            driver.find_element(By.ID, "split").click()
            status_says("1 face split off into")
            until(
                "the new person's page",
                lambda: driver.find_element(By.ID, "person-title").get_attribute("data-person-id") != obama,
            )
            new = driver.find_element(By.ID, "person-title").get_attribute("data-person-id")
            assert faces_shown() == {"obama/c.jpg"}
            now = cli()
            assert now[new]["image_keys"] == ["obama/c.jpg"] and now[obama]["faces"] == 2
            driver.save_screenshot(str(tmp_path / "2_split.png"))

            # Merge it back from Obama's page.
            open_person(obama)
            Select(driver.find_element(By.ID, "merge-from")).select_by_value(new)
            driver.find_element(By.CSS_SELECTOR, "#merge button").click()
            status_says(f"{new} merged into Barack Obama: 3 faces")
            until("three faces shown", lambda: len(faces_shown()) == 3)
            assert new not in cli() and cli()[obama]["faces"] == 3
            driver.save_screenshot(str(tmp_path / "3_merge.png"))

            # Move obama/c to Biden (wrongly, on purpose), then undo it.
            pick("obama/c.jpg")
            Select(driver.find_element(By.ID, "move-to")).select_by_value(biden)
            driver.find_element(By.ID, "move").click()
            status_says(f"1 face moved to {biden}")
            until("two faces left", lambda: faces_shown() == {"obama/a.jpg", "obama/b.jpg"})
            assert "obama/c.jpg" in cli()[biden]["image_keys"]
            driver.save_screenshot(str(tmp_path / "4_move.png"))
            driver.find_element(By.ID, "undo").click()
            status_says("Undone: moved a face")
            until("the face back", lambda: len(faces_shown()) == 3)
            now = cli()
            assert now[obama]["faces"] == 3 and "obama/c.jpg" not in now[biden]["image_keys"]
            log = driver.find_element(By.ID, "log").text
            assert "(undone)" in log and "split" in log
            driver.save_screenshot(str(tmp_path / "5_undo.png"))

            # Review: Alex's PNG portrait is offered to him, faces side by side; accept it.
            driver.get(f"{base}/people#review")
            item = until(
                "the suggestion for alex/b.png",
                lambda: [
                    s
                    for s in driver.find_elements(By.CSS_SELECTOR, ".suggestion[data-kind=face]")
                    if s.get_attribute("data-person-id") == alex
                ],
            )[0]
            crops = item.find_elements(By.CSS_SELECTOR, "img.thumb")
            assert len(crops) == 2
            until(
                "both crops drawn",
                lambda: all(driver.execute_script("return arguments[0].naturalWidth > 0", c) for c in crops),
            )
            driver.save_screenshot(str(tmp_path / "6_review.png"))
            face = item.get_attribute("data-face-id")
            item.find_element(By.CSS_SELECTOR, "button.accept").click()
            status_says("Accepted")
            until(
                "the suggestion gone",
                lambda: not driver.find_elements(By.CSS_SELECTOR, f'.suggestion[data-face-id="{face}"]'),
            )
            assert "alex/b.png" in cli()[alex]["image_keys"]
            driver.save_screenshot(str(tmp_path / "7_accepted.png"))
    for shot in ("1_rename", "2_split", "3_merge", "4_move", "5_undo", "6_review", "7_accepted"):
        assert (tmp_path / f"{shot}.png").stat().st_size > 0
