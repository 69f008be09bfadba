"""Where a detector looks: the working scales and tiles that keep the minimum face size at every photo size.

A detector finds faces in a band of sizes (in its input pixels): `min_px` is the smallest it finds
reliably, `max_px` the largest it finds in one pass. The finest level is scaled so that a face of
`min_face` pixels of the original photo reaches `min_px`; each coarser level shrinks the photo so
that its band starts a little below where the previous one ends, until the largest face the photo
can hold is covered (the last level only as far as that face needs). A level larger than one
tile is cut into overlapping tiles (overlap >= `max_px`, so every face in the band lies wholly
inside some tile) cropped from the original and resized tile by tile: memory stays bounded by the
tile size, not the photo size. A band may pad tiles at the photo's border (`pad`), so faces cut
by the frame look more like faces to the detector (YuNet measured no better with it: off).

Detections are mapped back to full-size pixels; a detection touching a tile's inner edge is
dropped (the neighbouring tile sees that face whole), and the rest are merged across tiles and
levels by non-maximum suppression.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

Rect = tuple[float, float, float, float, float | None]
"""(left, top, right, bottom, score) in some image's pixels; score None when the detector has none."""

BAND_OVERLAP = 0.8
"""A coarser level starts finding faces at this fraction of the finer level's largest face."""


@dataclass(frozen=True)
class DetectorBand:
    min_px: float  # smallest face the detector finds reliably, in its input pixels
    max_px: float  # largest face it finds in one pass (and the tile overlap)
    tile: int  # side of the square the detector is given at once
    pad: int = 0  # pixels of border added on the sides of tiles that touch the photo's edge
    whole_pyramid: bool = False  # True: inside one tile it finds faces of any size (dlib's own pyramid)
    upsample_steps: bool = False  # True: scales above 1 are left to the detector as 2x steps (dlib)


@dataclass(frozen=True)
class Tile:
    top: int  # region of the original photo, in its pixels
    left: int
    bottom: int
    right: int

    def edges(self, height: int, width: int) -> tuple[bool, bool, bool, bool]:
        """(top, right, bottom, left): True where this side is the photo's own edge."""
        return self.top == 0, self.right == width, self.bottom == height, self.left == 0


@dataclass(frozen=True)
class Level:
    scale: float  # working pixels per original pixel
    tiles: tuple[Tile, ...]
    min_face: float  # smallest face (original pixels) this level finds
    max_face: float  # largest face (original pixels) this level finds (inf for the last)


def plan(height: int, width: int, band: DetectorBand, min_face: float, max_side: int = 0) -> list[Level]:
    """The levels and tiles to search; `max_side` > 0 caps the finest level's longest side (speed over recall)."""
    scale = band.min_px / max(min_face, 1.0)
    if max_side > 0:
        scale = min(scale, max_side / max(height, width))
    largest_face = min(height, width)
    levels: list[Level] = []
    while True:
        fits = max(height, width) * scale <= band.tile
        last = largest_face * scale <= band.max_px or (band.whole_pyramid and fits)
        levels.append(
            Level(
                scale=scale,
                tiles=tuple(_tiles(height, width, scale, band)),
                min_face=band.min_px / scale,
                max_face=math.inf if last else band.max_px / scale,
            )
        )
        if last:
            return levels
        # The next band starts a little below this one's end; the last level is no smaller than it
        # needs to be for the largest face the photo can hold (tiny images give false faces).
        scale = max(scale * band.min_px / (BAND_OVERLAP * band.max_px), band.max_px / largest_face)


def _tiles(height: int, width: int, scale: float, band: DetectorBand) -> list[Tile]:
    """Tiles covering the photo, each at most `band.tile` working pixels a side, overlapping by `band.max_px`.

    Each axis gets the fewest tiles that fit, all of one length, just long enough to overlap by the band's
    largest face: a 2560x1853 photo at scale 1 is searched as four 1440x1087 tiles (6.3 MP), not four
    1536x1536 ones (9.4 MP) that overlap far more than any face needs.
    """
    size = band.tile / scale  # longest tile side in original pixels
    overlap = band.max_px / scale
    if size >= max(height, width):
        return [Tile(0, 0, height, width)]
    if size <= overlap:
        raise ValueError(f"tile {band.tile} px must be larger than the band's largest face {band.max_px} px")
    return [
        Tile(top, left, bottom, right)
        for top, bottom in _spans(height, size, overlap)
        for left, right in _spans(width, size, overlap)
    ]


def _spans(length: int, size: float, overlap: float) -> list[tuple[int, int]]:
    """(start, stop) of equal spans covering 0..length, each at most `size`, neighbours sharing >= `overlap`."""
    if size >= length:
        return [(0, length)]
    count = math.ceil((length - overlap) / (size - overlap))
    span = min(size, (length + (count - 1) * overlap) / count + 1)  # + 1: rounding never shaves the overlap
    step = (length - span) / (count - 1)
    return [(round(i * step), min(length, round(i * step + span))) for i in range(count)]


def resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    if math.isclose(scale, 1.0, rel_tol=1e-3):
        return rgb
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.BILINEAR if scale > 1 else Image.Resampling.BOX
    return np.asarray(Image.fromarray(rgb).resize(size, resample))


def search(
    rgb: np.ndarray,
    band: DetectorBand,
    min_face: float,
    run: Callable[[np.ndarray, int], list[Rect]],
    max_side: int = 0,
    merge_iou: float = 0.4,
) -> list[Rect]:
    """Run the detector on every tile of every level; merged boxes in full-size pixels.

    `run(image, upsample)` answers boxes in `image`'s own pixels; `upsample` is the number of 2x
    steps it should still take itself (dlib's detectors do it inside, the way face_recognition
    does, so a 2x level gives dlib's own boxes); it is 0 unless the band sets `upsample_steps`.
    """
    height, width = rgb.shape[:2]
    found: list[Rect] = []
    for level in plan(height, width, band, min_face, max_side):
        for tile in level.tiles:
            found.extend(_search_tile(rgb, tile, level.scale, band, run))
    return merge(found, merge_iou)


def split_scale(scale: float, upsample_steps: bool) -> tuple[float, int]:
    """(resize factor, 2x steps left to the detector): 2.0 -> (1.0, 1), 3.0 -> (0.75, 2), 0.5 -> (0.5, 0)."""
    if not upsample_steps or scale <= 1.0 + 1e-6:
        return scale, 0
    steps = math.ceil(math.log2(scale) - 1e-6)
    return scale / 2**steps, steps


def _search_tile(
    rgb: np.ndarray, tile: Tile, scale: float, band: DetectorBand, run: Callable[[np.ndarray, int], list[Rect]]
) -> list[Rect]:
    height, width = rgb.shape[:2]
    factor, steps = split_scale(scale, band.upsample_steps)
    work = resize(rgb[tile.top : tile.bottom, tile.left : tile.right], factor)
    inner_h, inner_w = work.shape[:2]
    pad = math.ceil(band.pad / 2**steps) if band.pad else 0
    edge_top, edge_right, edge_bottom, edge_left = tile.edges(height, width)
    if pad:
        work = np.pad(work, ((pad, pad), (pad, pad), (0, 0)), mode="constant")
    sy = (tile.bottom - tile.top) / inner_h
    sx = (tile.right - tile.left) / inner_w
    margin = 2.0 / 2**steps  # detector pixels: a box this close to an inner tile edge is a face the tile cut
    out: list[Rect] = []
    for left, top, right, bottom, score in run(np.ascontiguousarray(work), steps):
        left, top, right, bottom = left - pad, top - pad, right - pad, bottom - pad
        if (
            (not edge_left and left <= margin)
            or (not edge_top and top <= margin)
            or (not edge_right and right >= inner_w - 1 - margin)
            or (not edge_bottom and bottom >= inner_h - 1 - margin)
        ):
            continue
        out.append((left * sx + tile.left, top * sy + tile.top, right * sx + tile.left, bottom * sy + tile.top, score))
    return out


def merge(rects: Sequence[Rect], min_iou: float = 0.4) -> list[Rect]:
    """Non-maximum suppression across tiles and levels: the highest score wins, ties keep the first."""
    order = sorted(range(len(rects)), key=lambda i: -(rects[i][4] if rects[i][4] is not None else 0.0))
    kept: list[Rect] = []
    for i in order:
        r = rects[i]
        if all(_iou(r, k) < min_iou and not _inside(r, k) for k in kept):
            kept.append(r)
    return kept


def _area(r: Rect) -> float:
    return (r[2] - r[0]) * (r[3] - r[1])


def _intersection(a: Rect, b: Rect) -> float:
    left, top, right, bottom = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    return max(0.0, right - left) * max(0.0, bottom - top)


def _iou(a: Rect, b: Rect) -> float:
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _inside(a: Rect, b: Rect, share: float = 0.8) -> bool:
    """A box mostly inside another of similar size is the same face seen twice (e.g. by two levels)."""
    area_a, area_b = _area(a), _area(b)
    small = min(area_a, area_b)
    return small > 0 and _intersection(a, b) / small >= share and small / max(area_a, area_b) >= 0.25
