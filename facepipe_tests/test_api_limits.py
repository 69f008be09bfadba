"""HTTP API limits: photos are drawn a few at a time (FACEPIPE_RENDERS), and a crop is found through the
people state's face index, never by reading every Parquet file."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import numpy as np
import pyarrow.dataset
import pyarrow.parquet
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facepipe import settings
from facepipe.api import create_app, pictures
from facepipe.library import Library
from facepipe_tests.conftest import KNN


def big_photo(path: Path, width: int = 7200, height: int = 4800) -> Path:
    """A 35-megapixel JPEG made here: a gradient with texture (decoding costs what a real one does)."""
    y, x = np.mgrid[0:height:8, 0:width:8]
    small = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) % 256)], axis=-1).astype(np.uint8)
    Image.fromarray(small).resize((width, height)).save(path, quality=90)
    return path


class InFlight:
    """Counts the photos being decoded at once (wraps the real decoder, changes nothing)."""

    def __init__(self, real) -> None:
        self.real, self.now, self.most, self.calls = real, 0, 0, 0
        self.lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.now += 1
            self.calls += 1
            self.most = max(self.most, self.now)
        try:
            return self.real(*args, **kwargs)
        finally:
            with self.lock:
                self.now -= 1


async def _get_all(app, urls: list[str]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://facepipe.test", timeout=600) as client:
        return await asyncio.gather(*(client.get(u) for u in urls))


@pytest.mark.parametrize("renders", [1, 2])
def test_photos_are_drawn_a_few_at_a_time(env, monkeypatch, renders):
    big_photo(env.images / "big.jpg")
    monkeypatch.setenv("FACEPIPE_RENDERS", str(renders))
    spy = InFlight(pictures.load_rgb_shrunk)
    monkeypatch.setattr(pictures, "load_rgb_shrunk", spy)
    app = create_app("qdrant", library=Library.open(settings.reload()), render_wait=600)
    try:
        answers = asyncio.run(_get_all(app, ["/api/images/big.jpg?max_side=512"] * 5))
    finally:
        app.state.store.close()
    assert [r.status_code for r in answers] == [200] * 5, [r.text for r in answers]
    assert spy.calls == 5 and spy.most <= renders, (spy.calls, spy.most)


def test_a_big_jpeg_is_drawn_from_a_fraction_of_its_pixels_with_boxes_in_place(tmp_path):
    """Drawn 512 px wide, a 35 MP JPEG is decoded at 1/8 straight from its DCT, not at full size (its
    peak memory is the process's own, in a fresh interpreter), and a face box lands where it belongs."""
    import json
    import subprocess
    import sys

    path = big_photo(tmp_path / "big.jpg")
    box = {"face_id": "f", "top": 1200, "right": 4800, "bottom": 3600, "left": 2400}  # full-size pixels
    script = (
        "import io, json, sys; import numpy as np; from PIL import Image\n"
        "from facepipe.api.drawing import outlined_jpeg; from facepipe.faces.loading import load_rgb_shrunk\n"
        "from facepipe.processes import peak_rss_bytes\n"
        "rgb, scale = load_rgb_shrunk(open(sys.argv[1], 'rb').read(), 512)\n"
        "out = np.asarray(Image.open(io.BytesIO(outlined_jpeg(rgb, [json.loads(sys.argv[2])], set(), 512, scale))))\n"
        "print(json.dumps({'decoded': rgb.shape[:2], 'scale': scale, 'out': out.shape[:2], "
        "'row': out[150, 150:190].tolist(), 'peak': peak_rss_bytes()}))\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(path), json.dumps(box)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["decoded"] == [600, 900] and got["scale"] == 0.125  # 1/8 of 4800x7200
    assert got["out"] == [341, 512]
    # The box's left edge lands at x = 2400 * 512/7200 = 171 (rows 85-256): on row 150 the outline's
    # green (200; the gradient there has ~50) shows at x 168-174 and not at x 150-160.
    green = [pixel[1] for pixel in got["row"]]  # x = 150 ... 189
    assert max(green[18:25]) > 150 and max(green[:11]) < 120, green
    assert got["peak"] < 250 * 2**20, f"peak {got['peak'] / 2**20:.0f} MiB: the full photo alone is 99 MiB"


def test_a_full_renderer_answers_503_with_retry_after(env, monkeypatch):
    big_photo(env.images / "big.jpg", 1200, 800)
    monkeypatch.setenv("FACEPIPE_RENDERS", "1")
    with TestClient(create_app("qdrant", library=Library.open(settings.reload()), render_wait=0)) as client:
        slots = client.app.state.context.renders
        assert slots.acquire(timeout=0), "the one slot is free"  # a render in flight, held by the test
        try:
            busy = client.get("/api/images/big.jpg")
            assert busy.status_code == 503 and busy.headers["retry-after"] == pictures.RETRY_RENDER
            assert "busy drawing" in busy.json()["detail"]
        finally:
            slots.release()
        assert client.get("/api/images/big.jpg").status_code == 200


class ParquetReads:
    """Counts every way the code reads a Parquet file (wrapping pyarrow's own readers)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for module, name in [
            (pyarrow.parquet, "read_table"),
            (pyarrow.parquet, "ParquetFile"),
            (pyarrow.parquet, "ParquetDataset"),
            (pyarrow.dataset, "dataset"),
        ]:
            monkeypatch.setattr(module, name, self._counted(getattr(module, name)))

    def _counted(self, real):
        def counted(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)

        return counted


def test_a_crop_is_found_through_the_index_not_by_scanning(knn, monkeypatch):
    with TestClient(create_app("qdrant", library=Library.open(settings.reload()))) as client:
        photo = {"image": ("alex.jpg", (KNN / "test/alex_lacamoire1.jpg").read_bytes(), "image/jpeg")}
        match = client.post("/api/search", files=photo).json()["faces"][0]["matches"][0]
        assert match["person_id"] is None  # a face in no cluster: only the index knows its photo

        reads = ParquetReads(monkeypatch)
        unknown = client.get("/api/faces/0b6e1a3c-2f4d-4e8a-9c1b-7d5e3f2a1b0c/crop")
        assert unknown.status_code == 404 and reads.count == 0, reads.count

        known = client.get(f"/api/faces/{match['face_id']}/crop")
        assert known.status_code == 200 and known.headers["content-type"] == "image/jpeg"
        assert reads.count == 1, "one faces file read: the face's own"


def test_a_damaged_people_state_answers_503_naming_it(env):
    (env.data / "people.sqlite").write_bytes(b"not a database, a disk error's leftovers" * 100)
    with TestClient(create_app("qdrant", library=Library.open(settings.reload()))) as client:
        r = client.get("/api/people")
    assert r.status_code == 503 and f"{env.data / 'people.sqlite'} is damaged" in r.json()["detail"], r.text
