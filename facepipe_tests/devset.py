"""A labelled detection development set built from licensed photos only, deterministically.

Sources: the sample photos beside the checkout (dlib_faces with its hand-labelled training.xml,
the cocoindex Solvay and Carter photos, face_recognition portraits) and images shipped inside
scikit-image (`skimage.data`: the astronaut and cameraman faces, face-free scenes and textures).

Sets (each item: an image file in the cache folder and its face boxes):

- `composite`: phone-size canvases (12 MP 4000x3000, 24 MP 6000x4000) on enlarged face-free
  scenes, with sample faces pasted *with their surroundings* at 20-200 px, some cut by the
  canvas edge. A face is labelled when the source labels it; a labelled face only partly inside
  the pasted region becomes an `ignore` box (a detection there counts neither way).
- `solvay_up`: the Solvay 1927 photo (29 faces) enlarged 2x and 3x.
- `sideways`: group photos turned 90/270 degrees in their pixels, with no EXIF to undo it.
- `face_free`: scikit-image scenes and textures with no human face (a cat included), some
  enlarged to 12 MP.

Boxes not from training.xml were checked by detector agreement and hard-coded below: the
Solvay, astronaut and portrait boxes are dlib HOG boxes that dlib's CNN and YuNet also found
(IoU >= 0.4, all 29 Solvay faces by all three); the cameraman and Carter boxes are dlib CNN
boxes YuNet also found (HOG misses those turned faces). Each was looked at once on the photo.

Generated files are cached under the system temp folder (never in the repository):

    .venv/bin/python -m facepipe_tests.devset          # build (or reuse) and list the items
"""

from __future__ import annotations

import io
import json
import math
import random
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facepipe.faces.evaluation import Score, iou, load_imglab
from facepipe.faces.loading import load_rgb
from facepipe.faces.records import Box

VERSION = "v1"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CACHE = Path(tempfile.gettempdir()) / "facepipe-devset" / VERSION

SOLVAY = "cocoindex/Solvay_conference_1927.jpg"
SOLVAY_BOXES: list[Box] = [
    (652, 2163, 727, 2088), (660, 478, 735, 403), (723, 653, 785, 591), (727, 2030, 802, 1955),
    (727, 2279, 802, 2204), (735, 1428, 810, 1353), (735, 1848, 810, 1773), (743, 1644, 818, 1569),
    (760, 1000, 835, 925), (768, 784, 843, 710), (785, 1228, 847, 1166), (884, 1279, 959, 1204),
    (893, 196, 967, 121), (893, 1494, 967, 1420), (901, 967, 976, 892), (909, 685, 984, 610),
    (909, 1735, 984, 1660), (918, 2014, 992, 1939), (922, 2279, 1012, 2189), (934, 428, 1009, 353),
    (978, 1441, 1068, 1351), (978, 1660, 1068, 1570), (978, 1880, 1068, 1791), (983, 278, 1058, 204),
    (992, 809, 1066, 735), (998, 1103, 1087, 1013), (1000, 544, 1074, 469), (1000, 2163, 1074, 2088),
    (1018, 2368, 1107, 2279),
]  # fmt: skip
PHOTO_BOXES: dict[str, list[Box]] = {
    SOLVAY: SOLVAY_BOXES,
    "face_recognition/tests/test_images/obama.jpg": [(142, 617, 409, 349)],  # upstream's own test box
    "face_recognition/tests/test_images/biden.jpg": [(241, 740, 562, 419)],
    "face_recognition/examples/two_people.jpg": [(47, 390, 202, 236), (57, 964, 242, 778)],
    "cocoindex/Carter_welcomes_Reagan.jpg": [(116, 219, 195, 140), (148, 459, 227, 380), (188, 675, 267, 596)],
}
SKIMAGE_BOXES: dict[str, list[Box]] = {"astronaut": [(76, 265, 166, 175)], "camera": [(116, 259, 195, 180)]}
FACE_FREE = ["coffee", "chelsea", "rocket", "motorcycle_left", "brick", "grass", "gravel", "hubble_deep_field"]
FACE_FREE += ["ihc", "coins", "moon", "retina", "color", "page", "text", "logo", "clock_motion", "cell"]
BACKGROUNDS = ["coffee", "rocket", "motorcycle_left", "hubble_deep_field", "ihc", "retina"]
FACE_SIZES = [20, 24, 28, 32, 36, 40, 48, 56, 64, 80, 96, 128, 160, 200]
BUCKETS = [(20, 32), (32, 48), (48, 96), (96, 201)]


@dataclass
class Item:
    name: str
    set: str
    path: str
    width: int
    height: int
    boxes: list[Box] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)  # each box's face width before any edge cut
    cut: list[bool] = field(default_factory=list)  # the face is cut by the image edge
    ignore: list[Box] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def _skimage(name: str) -> np.ndarray:
    """An image file shipped inside the scikit-image wheel (read from its folder: nothing is fetched)."""
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    path = next(p for p in sorted(folder.iterdir()) if p.stem == name and p.suffix in (".png", ".jpg"))
    return load_rgb(path.read_bytes())


def face_sources() -> list[tuple[str, np.ndarray, list[Box]]]:
    """(name, RGB, every labelled face box) for each photo faces are pasted from."""
    sources = []
    folder = SHARED_DATA / "dlib_faces"
    for name, boxes in sorted(load_imglab(folder / "training.xml").items()):
        sources.append((f"dlib_faces/{name}", load_rgb((folder / name).read_bytes()), boxes))
    for key, boxes in PHOTO_BOXES.items():
        sources.append((key, load_rgb((SHARED_DATA / key).read_bytes()), boxes))
    for name, boxes in SKIMAGE_BOXES.items():
        sources.append((f"skimage/{name}", _skimage(name), boxes))
    return sources


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=92)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))


def _scale_box(box: Box, s: float, dy: float = 0.0, dx: float = 0.0) -> Box:
    top, right, bottom, left = box
    return (round(top * s + dy), round(right * s + dx), round(bottom * s + dy), round(left * s + dx))


def _clip(box: Box, height: int, width: int) -> Box:
    top, right, bottom, left = box
    return (max(0, top), min(width - 1, right), min(height - 1, bottom), max(0, left))


def _area(box: Box) -> int:
    return max(0, box[1] - box[3]) * max(0, box[2] - box[0])


def paste(
    canvas: np.ndarray,
    source: np.ndarray,
    boxes: Sequence[Box],
    target: int,
    size: int,
    top: int,
    left: int,
    context: float = 0.6,
) -> tuple[list[Box], list[int], list[Box], tuple[int, int, int, int]]:
    """Paste `boxes[target]` with `context` x its size around it, enlarged so the face is `size` px
    wide, with the region's top-left at (top, left) of the canvas (which may be outside it).

    Returns (faces wholly in the region, their widths, partly included faces, region on the canvas).
    """
    t, r, b, lf = boxes[target]
    pad = context * max(r - lf, b - t)
    sh, sw = source.shape[:2]
    region = (max(0, round(t - pad)), min(sw, round(r + pad)), min(sh, round(b + pad)), max(0, round(lf - pad)))
    s = size / (r - lf)
    patch = source[region[0] : region[2], region[3] : region[1]]
    ph, pw = max(1, round(patch.shape[0] * s)), max(1, round(patch.shape[1] * s))
    patch = _resize(np.ascontiguousarray(patch), pw, ph)
    ch, cw = canvas.shape[:2]
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(ch, top + ph), min(cw, left + pw)
    canvas[y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - left : x1 - left]
    inside, widths, partial = [], [], []
    for box in boxes:
        bt, br, bb, bl = box
        full = bt >= region[0] and bb <= region[2] and bl >= region[3] and br <= region[1]
        overlaps = bt < region[2] and bb > region[0] and bl < region[1] and br > region[3]
        placed = _scale_box((bt - region[0], br - region[3], bb - region[0], bl - region[3]), s, top, left)
        if full:
            inside.append(placed)
            widths.append(round((br - bl) * s))
        elif overlaps:
            partial.append(_clip(placed, ch, cw))
    return inside, widths, partial, (y0, x1, y1, x0)


def build_composite(name: str, width: int, height: int, seed: int, cache: Path, faces: int) -> Item:
    rng = random.Random(seed)
    background = _skimage(BACKGROUNDS[seed % len(BACKGROUNDS)])
    canvas = np.array(_resize(background, width, height))
    sources = face_sources()
    item = Item(name, "composite", str(cache / f"{name}.jpg"), width, height)
    taken: list[tuple[int, int, int, int]] = []
    cut_every = 5  # every 5th face is placed across the canvas edge
    placed = 0
    attempts = 0
    while placed < faces and attempts < faces * 50:
        attempts += 1
        _, source, boxes = sources[rng.randrange(len(sources))]
        target = rng.randrange(len(boxes))
        size = FACE_SIZES[placed % len(FACE_SIZES)]
        t, r, b, lf = boxes[target]
        s = size / (r - lf)
        pad = 0.6 * max(r - lf, b - t)
        rh, rw = round((b - t + 2 * pad) * s), round((r - lf + 2 * pad) * s)
        face_off = (round(pad * s), round(pad * s))  # where the face sits in the patch (approx.)
        if placed % cut_every == cut_every - 1:  # a face cut by the edge: 30-50% of its width outside
            side = rng.choice(["left", "right", "top", "bottom"])
            out = rng.uniform(0.3, 0.5)
            fh = round((b - t) * s)
            if side == "left":
                left, top = -face_off[1] - round(out * size), rng.randrange(0, max(1, height - rh))
            elif side == "right":
                left, top = width - face_off[1] - round((1 - out) * size), rng.randrange(0, max(1, height - rh))
            elif side == "top":
                top, left = -face_off[0] - round(out * fh), rng.randrange(0, max(1, width - rw))
            else:
                top, left = height - face_off[0] - round((1 - out) * fh), rng.randrange(0, max(1, width - rw))
        else:
            if rw >= width or rh >= height:
                continue
            top, left = rng.randrange(0, height - rh), rng.randrange(0, width - rw)
        rect = (top, left, top + rh, left + rw)
        if any(not (rect[2] <= o[0] or rect[0] >= o[2] or rect[3] <= o[1] or rect[1] >= o[3]) for o in taken):
            continue
        inside, widths, partial, _ = paste(canvas, source, boxes, target, size, top, left)
        taken.append(rect)
        for box, w in zip(inside, widths, strict=True):
            clipped = _clip(box, height, width)
            if _area(clipped) < 0.5 * _area(box):  # less than half the face shows: not a fair target
                item.ignore.append(clipped)
                continue
            item.boxes.append(clipped)
            item.sizes.append(w)
            item.cut.append(clipped != box)
        item.ignore.extend(partial)
        placed += 1
    _save(canvas, Path(item.path))
    return item


def build_solvay(factor: int, cache: Path) -> Item:
    rgb = load_rgb((SHARED_DATA / SOLVAY).read_bytes())
    height, width = rgb.shape[0] * factor, rgb.shape[1] * factor
    item = Item(f"solvay_x{factor}", "solvay_up", str(cache / f"solvay_x{factor}.jpg"), width, height)
    _save(_resize(rgb, width, height), Path(item.path))
    item.boxes = [_scale_box(b, factor) for b in SOLVAY_BOXES]
    item.sizes = [b[1] - b[3] for b in item.boxes]
    item.cut = [False] * len(item.boxes)
    return item


def _rotate_box(box: Box, height: int, width: int, turns: int) -> Box:
    """The box after np.rot90(image, turns) (counter-clockwise), for an image of height x width."""
    top, right, bottom, left = box
    for _ in range(turns % 4):
        top, right, bottom, left = width - 1 - right, bottom, width - 1 - left, top
        height, width = width, height
    return (top, right, bottom, left)


def build_sideways(source: str, boxes: Sequence[Box], turns: int, cache: Path) -> Item:
    rgb = load_rgb((SHARED_DATA / source).read_bytes())
    turned = np.ascontiguousarray(np.rot90(rgb, turns))
    name = f"sideways_{Path(source).stem}_{turns * 90}"
    item = Item(name, "sideways", str(cache / f"{name}.jpg"), turned.shape[1], turned.shape[0])
    _save(turned, Path(item.path))  # saved by Pillow from an array: no EXIF orientation at all
    item.boxes = [_rotate_box(b, rgb.shape[0], rgb.shape[1], turns) for b in boxes]
    item.sizes = [max(b[1] - b[3], b[2] - b[0]) for b in item.boxes]
    item.cut = [False] * len(item.boxes)
    return item


def build_face_free(name: str, cache: Path, megapixels: float = 0.0) -> Item:
    image = _skimage(name)
    if megapixels:
        s = math.sqrt(megapixels * 1e6 / (image.shape[0] * image.shape[1]))
        image = _resize(image, round(image.shape[1] * s), round(image.shape[0] * s))
    label = f"free_{name}" + (f"_{megapixels:g}mp" if megapixels else "")
    item = Item(label, "face_free", str(cache / f"{label}.jpg"), image.shape[1], image.shape[0])
    _save(image, Path(item.path))
    return item


def build(cache: Path = CACHE) -> list[Item]:
    """Every item, generated once into `cache` (reused while the manifest is there)."""
    manifest = cache / "manifest.json"
    if manifest.exists():
        items = [Item(**{**d, "boxes": [tuple(b) for b in d["boxes"]], "ignore": [tuple(b) for b in d["ignore"]]})
                 for d in json.loads(manifest.read_text())]  # fmt: skip
        if all(Path(i.path).exists() for i in items):
            return items
    cache.mkdir(parents=True, exist_ok=True)
    items = [
        build_composite("composite_12mp_a", 4000, 3000, 1, cache, 30),
        build_composite("composite_12mp_b", 4000, 3000, 2, cache, 30),
        build_composite("composite_24mp_a", 6000, 4000, 3, cache, 40),
        build_composite("composite_24mp_b", 6000, 4000, 4, cache, 40),
        build_solvay(2, cache),
        build_solvay(3, cache),
    ]
    truth = load_imglab(SHARED_DATA / "dlib_faces" / "training.xml")
    items.append(build_sideways("dlib_faces/2007_007763.jpg", truth["2007_007763.jpg"], 1, cache))
    items.append(build_sideways("dlib_faces/2008_002079.jpg", truth["2008_002079.jpg"], 3, cache))
    for key, turns in (("face_recognition/examples/two_people.jpg", 1), ("cocoindex/Carter_welcomes_Reagan.jpg", 3)):
        items.append(build_sideways(key, PHOTO_BOXES[key], turns, cache))
    items += [build_face_free(name, cache) for name in FACE_FREE]
    items += [build_face_free(name, cache, 12) for name in ("coffee", "chelsea", "gravel")]
    manifest.write_text(json.dumps([asdict(i) for i in items]))
    return items


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


@dataclass
class SetScore:
    score: Score = field(default_factory=Score)
    buckets: dict[str, Score] = field(default_factory=dict)
    cut: Score = field(default_factory=Score)
    false_positives: int = 0
    images: int = 0
    missed: list[str] = field(default_factory=list)


def bucket_of(size: int) -> str:
    for low, high in BUCKETS:
        if low <= size < high:
            return f"{low}-{high - 1}"
    return f"{BUCKETS[-1][1]}+"


def score_item(item: Item, found: Iterable[Box], into: SetScore, min_iou: float = 0.4) -> None:
    """Match one image's detections; those on an ignore box count neither way."""
    kept = [f for f in found if not any(iou(f, g) >= min_iou or _inside(f, g) for g in item.ignore)]
    into.images += 1
    before = into.score.matched
    into.score.add(item.boxes, kept, min_iou)
    into.false_positives += len(kept) - (into.score.matched - before)
    for i, box in enumerate(item.boxes):
        hit = any(iou(box, f) >= min_iou for f in kept)
        bucket = into.buckets.setdefault(bucket_of(item.sizes[i]), Score())
        bucket.truths += 1
        bucket.matched += hit
        if item.cut[i]:
            into.cut.truths += 1
            into.cut.matched += hit
        if not hit:
            into.missed.append(f"{item.name}:{box}")


def _inside(a: Box, b: Box) -> bool:
    top, right, bottom, left = max(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    return _area(a) > 0 and inter / _area(a) >= 0.5


def evaluate(items: Sequence[Item], detect: Callable[[bytes], list[Box]]) -> dict[str, SetScore]:
    scores: dict[str, SetScore] = {}
    for item in items:
        score_item(item, detect(Path(item.path).read_bytes()), scores.setdefault(item.set, SetScore()))
    return scores


def jpeg_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=92)
    return out.getvalue()


if __name__ == "__main__":
    for item in build():
        size = f"{item.width}x{item.height}"
        print(f"{item.set:10s} {item.name:36s} {size:10s} faces={len(item.boxes)} ignore={len(item.ignore)}")
