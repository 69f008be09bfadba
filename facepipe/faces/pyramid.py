"""dlib's image arithmetic around the MMOD detector: bilinear resizes and the tiled image pyramid.

dlib's ``input_rgb_image_pyramid<pyramid_down<6>>`` feeds the detector one image holding the photo
and its successively 5/6-smaller copies side by side; the detector's boxes are mapped back through
the same layout. The resizes reproduce dlib's float32 SIMD and double-precision tail arithmetic
step by step, so the network sees the same input values as in dlib and finds the same boxes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Rect = tuple[int, int, int, int]
"""(left, top, right, bottom), inclusive pixel coordinates as dlib's ``rectangle``."""

# Fixed by the network type the .dat was trained with (input_rgb_image_pyramid<pyramid_down<6>>):
# the type is compiled into dlib, not serialized, so it lives here.
PYRAMID_N = 6
# dlib's defaults for input_rgb_image_pyramid serialized in the old ("version 1") format.
PYRAMID_PADDING = 10
PYRAMID_OUTER_PADDING = 11
_MIN_PYRAMID_HEIGHT = 5


def _accumulate(start: float, step: float, count: int) -> np.ndarray:
    """start+step, start+2*step, ... summed one step at a time in float64, as dlib's loops do."""
    seq = np.empty(count + 1, dtype=np.float64)
    seq[0] = start
    seq[1:] = step
    return np.add.accumulate(seq)[1:]


@dataclass
class _ResizePlan:
    """Sample positions and weights of dlib's bilinear resize_image for one size pair.

    dlib computes four output columns at a time in float32 with the x position accumulated in
    float32 and truncated, then finishes the row in double precision; we precompute both parts.
    """

    top: np.ndarray
    bottom: np.ndarray
    tb: np.ndarray  # float64 row fraction
    simd_cols: int
    left: np.ndarray
    right: np.ndarray
    lr32: np.ndarray  # float32 column fraction (SIMD part)
    tail_left: np.ndarray
    tail_right: np.ndarray
    tail_lr: np.ndarray  # float64 column fraction (scalar tail)


def _resize_plan(in_h: int, in_w: int, out_h: int, out_w: int) -> _ResizePlan:
    x_scale = (in_w - 1) / max(out_w - 1, 1)
    y_scale = (in_h - 1) / max(out_h - 1, 1)
    ys = _accumulate(-y_scale, y_scale, out_h)
    top = np.floor(ys).astype(np.int64)
    bottom = np.minimum(top + 1, in_h - 1)
    tb = ys - top

    # SIMD part: 4 lanes start at x-4s .. x-s (x = -4s... i.e. -4s, -3s, -2s, -s), each lane adds
    # float32(4s) per block; blocks run while lane 3's right neighbour stays inside the image.
    x0 = -4 * x_scale
    lanes = np.array([x0, x0 + x_scale, x0 + 2 * x_scale, x0 + 3 * x_scale], dtype=np.float32)
    step = np.float32(4 * x_scale)
    n_blocks = out_w // 4 + 2
    seq = np.empty((n_blocks + 1, 4), dtype=np.float32)
    seq[0] = lanes
    seq[1:] = step
    xs = np.add.accumulate(seq, axis=0, dtype=np.float32)[1:]  # (blocks, 4)
    left_b = xs.astype(np.int32)  # truncation, like _mm_cvttps_epi32
    right_b = left_b + 1
    stop = np.nonzero(right_b[:, 3] >= in_w)[0]
    n_simd = int(stop[0]) if stop.size else n_blocks
    simd_cols = min(4 * n_simd, out_w)
    xs = xs[:n_simd].ravel()[:simd_cols]
    left = left_b[:n_simd].ravel()[:simd_cols].astype(np.int64)
    lr32 = (xs - left.astype(np.float32)).astype(np.float32)

    # Scalar tail: x restarts from -s + c*s in double and accumulates s per column.
    n_tail = out_w - simd_cols
    tail_x = _accumulate(-x_scale + simd_cols * x_scale, x_scale, n_tail)
    tail_left = np.floor(tail_x).astype(np.int64)
    tail_right = np.minimum(tail_left + 1, in_w - 1)
    return _ResizePlan(
        top=top,
        bottom=bottom,
        tb=tb,
        simd_cols=simd_cols,
        left=left,
        right=left + 1,
        lr32=lr32,
        tail_left=tail_left,
        tail_right=tail_right,
        tail_lr=tail_x - tail_left,
    )


def _blend_simd(plan: _ResizePlan, top_rows: np.ndarray, bot_rows: np.ndarray, out: np.ndarray) -> None:
    """dlib's 4-lane float32 bilinear blend for the first ``plan.simd_cols`` columns of a plane.

    Same float32 products and left-to-right sum as dlib's loop; np.take gathers are several times
    faster than 2-D fancy indexing here.
    """
    tb32 = plan.tb.astype(np.float32)[:, None]
    inv_tb32 = (1 - plan.tb).astype(np.float32)[:, None]
    lr = plan.lr32[None, :]
    inv_lr = np.float32(1) - lr
    tmp = np.empty(out.shape, dtype=np.float32)
    np.multiply(np.take(top_rows, plan.left, axis=1), inv_tb32 * inv_lr, out=out)
    np.multiply(np.take(top_rows, plan.right, axis=1), inv_tb32 * lr, out=tmp)
    out += tmp
    np.multiply(np.take(bot_rows, plan.left, axis=1), tb32 * inv_lr, out=tmp)
    out += tmp
    np.multiply(np.take(bot_rows, plan.right, axis=1), tb32 * lr, out=tmp)
    out += tmp


def _resize_float(src: np.ndarray, dst: np.ndarray) -> None:
    """dlib's resize_image(interpolate_bilinear) on float planes, written into ``dst`` (C, h, w)."""
    channels, in_h, in_w = src.shape
    _, out_h, out_w = dst.shape
    plan = _resize_plan(in_h, in_w, out_h, out_w)
    s = plan.simd_cols
    tail_lr = plan.tail_lr.astype(np.float32)[None, :]
    tail_inv_lr = np.float32(1) - tail_lr
    tb = plan.tb[:, None]
    for ch in range(channels):
        top_rows = np.take(src[ch], plan.top, axis=0)
        bot_rows = np.take(src[ch], plan.bottom, axis=0)
        if s:
            _blend_simd(plan, top_rows, bot_rows, dst[ch, :, :s])
        if s < out_w:
            # dlib's scalar tail for float pixels: float32 row blends, combined in double.
            upper = tail_inv_lr * top_rows[:, plan.tail_left] + tail_lr * top_rows[:, plan.tail_right]
            lower = tail_inv_lr * bot_rows[:, plan.tail_left] + tail_lr * bot_rows[:, plan.tail_right]
            dst[ch, :, s:] = (1 - tb) * upper.astype(np.float64) + tb * lower.astype(np.float64)


def _resize_rgb8(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """dlib's resize_image(interpolate_bilinear) for rgb_pixel images, (h, w, 3) uint8."""
    in_h, in_w, _ = img.shape
    plan = _resize_plan(in_h, in_w, out_h, out_w)
    s = plan.simd_cols
    out = np.empty((3, out_h, out_w), dtype=np.uint8)
    blended = np.empty((out_h, s), dtype=np.float32)
    lr = plan.tail_lr[None, :]
    tb = plan.tb[:, None]
    for ch in range(3):
        plane = img[:, :, ch].astype(np.float32)
        top_rows = np.take(plane, plan.top, axis=0)
        bot_rows = np.take(plane, plan.bottom, axis=0)
        if s:
            _blend_simd(plan, top_rows, bot_rows, blended)
            out[ch, :, :s] = blended.astype(np.int32)  # truncation, as dlib's simd4i conversion
        if s < out_w:
            # dlib's scalar tail for rgb pixels is all double precision, then truncated.
            t64, b64 = top_rows.astype(np.float64), bot_rows.astype(np.float64)
            upper = (1 - lr) * t64[:, plan.tail_left] + lr * t64[:, plan.tail_right]
            lower = (1 - lr) * b64[:, plan.tail_left] + lr * b64[:, plan.tail_right]
            out[ch, :, s:] = ((1 - tb) * upper + tb * lower).astype(np.int32)
    return out.transpose(1, 2, 0)


def pyramid_up2(img: np.ndarray) -> np.ndarray:
    """dlib's pyramid_up(img, pyramid_down<2>): note dlib's odd (2h+1, 2w+2) output size."""
    h, w = img.shape[:2]
    # rect_up of (0,0,w-1,h-1) maps corners by (p + (1.25, 0.75)) * 2, then rounds to a rectangle.
    right = math.floor((w - 1 + 1.25) * 2 + 0.5)
    bottom = math.floor((h - 1 + 0.75) * 2 + 0.5)
    return _resize_rgb8(img, bottom + 1, right + 1)


def rect_down2(rect: tuple[float, float, float, float], levels: int) -> Rect:
    """pyramid_down<2>::rect_down applied ``levels`` times, rounded to an integer rectangle."""
    left, top, right, bottom = rect
    for _ in range(levels):
        left, top = left / 2.0 - 1.25, top / 2.0 - 0.75
        right, bottom = right / 2.0 - 1.25, bottom / 2.0 - 0.75
    return round_rect(left, top, right, bottom)


def round_rect(left: float, top: float, right: float, bottom: float) -> Rect:
    return (
        math.floor(left + 0.5),
        math.floor(top + 0.5),
        math.floor(right + 0.5),
        math.floor(bottom + 0.5),
    )


def tiled_pyramid_layout(
    nr: int, nc: int, padding: int = PYRAMID_PADDING, outer_padding: int = PYRAMID_OUTER_PADDING
) -> tuple[list[Rect], int, int]:
    """Where dlib places each pyramid_down<6> level in its single tiled input image.

    Returns the level rectangles (left, top, right, bottom) and the tiled image's rows, columns.
    """
    if nr * nc == 0:
        return [], 0, 0
    rate = (PYRAMID_N - 1.0) / PYRAMID_N
    sizes = [(nc, nr)]
    while True:
        nr, nc = math.floor(rate * nr), math.floor(rate * nc)
        if nr * nc == 0 or nr < _MIN_PYRAMID_HEIGHT:
            break
        sizes.append((nc, nr))
    width0, height0 = sizes[0]
    total_height = sum(h + padding for _, h in sizes) - 2 * padding
    height = 0
    prev_width = 0
    for w, h in sizes:
        if w <= width0 - prev_width - padding and (height - height0) * 2 >= total_height - height0:
            break
        height += h + padding
        prev_width = w
    height -= padding
    out_nr = height + 2 * outer_padding
    out_nc = width0 + 2 * outer_padding

    rects: list[Rect] = []
    y = outer_padding
    i = 0
    while y < height + outer_padding and i < len(sizes):
        w, h = sizes[i]
        rects.append((outer_padding, y, outer_padding + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    first = rects[0]
    while i < len(sizes):
        w, h = sizes[i]
        rect = (outer_padding + width0 - w, y - h, outer_padding + width0 - 1, y - 1)
        overlaps = not (rect[2] < first[0] or rect[0] > first[2] or rect[3] < first[1] or rect[1] > first[3])
        if overlaps:
            break
        rects.append(rect)
        y -= h + padding
        i += 1
    return rects, out_nr, out_nc


def build_tiled_input(
    img: np.ndarray, avg_rgb: Sequence[float], padding: int, outer_padding: int
) -> tuple[np.ndarray, list[Rect]]:
    """dlib's input_rgb_image_pyramid::to_tensor: normalised image plus its levels, tiled (3, H, W)."""
    h, w = img.shape[:2]
    rects, out_nr, out_nc = tiled_pyramid_layout(h, w, padding, outer_padding)
    data = np.zeros((3, out_nr, out_nc), dtype=np.float32)
    if not rects:
        return data, rects
    avg = np.asarray(avg_rgb, dtype=np.float32)
    l0, t0, r0, b0 = rects[0]
    norm = (img.astype(np.float32) - avg) / np.float32(256.0)
    data[:, t0 : b0 + 1, l0 : r0 + 1] = norm.transpose(2, 0, 1)
    for prev, cur in itertools.pairwise(rects):
        src = data[:, prev[1] : prev[3] + 1, prev[0] : prev[2] + 1]
        _resize_float(src, data[:, cur[1] : cur[3] + 1, cur[0] : cur[2] + 1])
    return data, rects
