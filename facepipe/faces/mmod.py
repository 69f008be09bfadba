"""dlib's MMOD CNN face detector, run on onnxruntime instead of dlib's own CPU code.

dlib-bin has no BLAS, so its CNN detector spends seconds on a ~10 GFLOP network. Here we read
the weights straight out of dlib's serialized ``.dat`` file (dlib_format), rebuild the network as
an ONNX graph (onnx_graphs) and run it on onnxruntime. Everything around the network (the tiled
``pyramid_down<6>`` input image in pyramid.py, the mapping of output cells back to image boxes,
thresholding, non-max suppression and the ``upsample`` step of the Python binding) follows dlib's
arithmetic step by step, so detections match ``dlib.cnn_face_detection_model_v1`` box for box
(scores agree to float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepipe.faces.dlib_format import Affine, Conv, DlibFormatError, DlibReader, Relu, read_network
from facepipe.faces.onnx_graphs import OnnxMissing, build_mmod_onnx, fold_affine, onnx_available
from facepipe.faces.onnx_session import CPU, make_session
from facepipe.faces.pyramid import (
    PYRAMID_N,
    PYRAMID_OUTER_PADDING,
    PYRAMID_PADDING,
    Rect,
    build_tiled_input,
    pyramid_up2,
    rect_down2,
    round_rect,
)

Detection = tuple[Rect, float]


@dataclass
class MMODLayer:
    conv: Conv  # batch norm / affine folded in
    relu: bool = False


@dataclass
class MMODNet:
    """What FastMMOD needs from the .dat: conv stack, input normalisation and loss options."""

    convs: list[MMODLayer]
    avg_rgb: tuple[float, float, float]
    windows: list[tuple[int, int]]
    nms_iou: float
    nms_percent_covered: float
    pyramid_padding: int = PYRAMID_PADDING
    pyramid_outer_padding: int = PYRAMID_OUTER_PADDING


def load_dlib_mmod(path: str | Path) -> MMODNet:
    """Parse dlib's serialized ``loss_mmod<...>`` network into plain numpy weights."""
    reader = DlibReader.open(path)
    reader.int()  # add_loss_layer version
    if reader.string() != "loss_mmod_":
        raise DlibFormatError("not a dlib mmod network")
    opt_version = reader.int()
    if opt_version == 1:
        windows = [(reader.int(), reader.int())]
    else:
        windows = []
        for _ in range(reader.int()):
            win_version = reader.int()
            width, height = reader.int(), reader.int()
            if win_version == 2:
                reader.string()  # label
            windows.append((width, height))
    for _ in range(3):  # loss per false alarm / missed target, truth match iou
        reader.real()
    nms_iou, nms_covered = reader.real(), reader.real()
    reader.real()  # overlaps_ignore
    reader.real()
    if opt_version >= 3 and reader.byte() != 1:
        raise DlibFormatError("only image-pyramid mmod models are supported")
    if opt_version >= 4:
        if reader.boolean():
            raise DlibFormatError("bounding box regression is not supported")
        reader.real()
    input_layer, layers = read_network(reader)
    if input_layer.name not in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
        raise DlibFormatError(f"unsupported input layer {input_layer.name!r}")
    padding, outer = input_layer.extra or (PYRAMID_PADDING, PYRAMID_OUTER_PADDING)

    convs: list[MMODLayer] = []
    for layer in layers:
        if isinstance(layer, Conv):
            # Boxes are mapped back with one scale and offset for both axes (FastMMOD.__init__).
            if layer.stride[0] != layer.stride[1] or layer.padding[0] != layer.padding[1]:
                raise DlibFormatError("only square convolutions are supported")
            if layer.weight.shape[2] != layer.weight.shape[3]:
                raise DlibFormatError("only square convolutions are supported")
            convs.append(MMODLayer(layer))
        elif isinstance(layer, Affine) and convs and not convs[-1].relu:
            convs[-1].conv = fold_affine(convs[-1].conv, layer)
        elif isinstance(layer, Relu) and convs:
            convs[-1].relu = True
        else:
            raise DlibFormatError(f"unexpected {type(layer).__name__} layer in an mmod network")
    if len(windows) != convs[-1].conv.weight.shape[0]:
        raise DlibFormatError("number of detector windows does not match the last layer")
    return MMODNet(
        convs=convs,
        avg_rgb=input_layer.avg_rgb,
        windows=windows,
        nms_iou=nms_iou,
        nms_percent_covered=nms_covered,
        pyramid_padding=padding,
        pyramid_outer_padding=outer,
    )


# ----------------------------------------------------------------------------------------------
# dlib's loss_mmod_::to_label
# ----------------------------------------------------------------------------------------------


def _box_overlaps(a: Rect, b: Rect, iou_thresh: float, covered_thresh: float) -> bool:
    """dlib's test_box_overlap: 'union' is the bounding box of both rectangles."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return False
    inner = float(iw * ih)
    outer = float((max(a[2], b[2]) - min(a[0], b[0]) + 1) * (max(a[3], b[3]) - min(a[1], b[1]) + 1))
    area_a = float((a[2] - a[0] + 1) * (a[3] - a[1] + 1))
    area_b = float((b[2] - b[0] + 1) * (b[3] - b[1] + 1))
    return inner / outer > iou_thresh or inner / area_a > covered_thresh or inner / area_b > covered_thresh


def _nearest_rect(rects: list[Rect], x: float, y: float) -> int:
    best, best_dist = 0, math.inf
    for i, (left, top, right, bottom) in enumerate(rects):
        if left <= x <= right and top <= y <= bottom:
            return i
        dx = min(max(x, left), right) - x
        dy = min(max(y, top), bottom) - y
        dist = math.hypot(dx, dy)
        if dist < best_dist:
            best, best_dist = i, dist
    return best


# ----------------------------------------------------------------------------------------------
# The detector
# ----------------------------------------------------------------------------------------------


class FastMMOD:
    """dlib's CNN face detector weights on onnxruntime; same boxes as cnn_face_detection_model_v1.

    ``threads`` is onnxruntime's intra-op thread count: 1 suits one worker process per core.
    """

    def __init__(
        self, model_path: str | Path | None = None, threads: int = 1, providers: Sequence[str] = (CPU,)
    ) -> None:
        if not onnx_available():
            raise OnnxMissing("FastMMOD needs onnxruntime and onnx: pip install onnxruntime onnx")
        if model_path is None:
            import warnings

            with warnings.catch_warnings():  # face_recognition_models imports the deprecated pkg_resources
                warnings.simplefilter("ignore")
                import face_recognition_models

            model_path = face_recognition_models.cnn_face_detector_model_location()
        self.net = load_dlib_mmod(model_path)
        # Output cell (c, r) looks at input pixel (c, r) * scale + offset: compose each conv's
        # map_output_to_input (p * stride - padding + kernel // 2) from the top layer down.
        scale, offset = 1, 0
        for layer in reversed(self.net.convs):
            conv = layer.conv
            offset = offset * conv.stride[0] - conv.padding[0] + conv.weight.shape[2] // 2
            scale *= conv.stride[0]
        self._scale, self._offset = scale, offset

        self._session = make_session(build_mmod_onnx(self.net), threads, providers)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on, preferred first."""
        return self._session.get_providers()

    # -- public API ---------------------------------------------------------------------------

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[Detection]:
        """Faces in an (H, W, 3) uint8 RGB (or (H, W) gray) image: ((left, top, right, bottom), score)."""
        return self.detect_batch([image], upsample)[0]

    def detect_batch(self, images: Sequence[np.ndarray], upsample: int = 0) -> list[list[Detection]]:
        """Like detect() per image; images of equal size share one network call."""
        prepared = [self._upsampled(img, upsample) for img in images]
        results: list[list[Detection]] = [[] for _ in prepared]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(prepared):
            by_shape.setdefault(img.shape, []).append(i)
        for indices in by_shape.values():
            tiles = [
                build_tiled_input(
                    prepared[i], self.net.avg_rgb, self.net.pyramid_padding, self.net.pyramid_outer_padding
                )
                for i in indices
            ]
            rects = tiles[0][1]
            if not rects or not self._produces_output(tiles[0][0].shape[1:]):
                continue
            batch = np.stack([data for data, _ in tiles])
            scores = self._session.run(["scores"], {"image": batch})[0]
            for i, score_map in zip(indices, scores, strict=True):
                results[i] = self._to_detections(score_map, rects, upsample)
        return results

    # -- internals ----------------------------------------------------------------------------

    def _produces_output(self, shape: tuple[int, ...]) -> bool:
        """False when the tiled image is too small for the conv stack (dlib then finds nothing)."""
        rows, cols = shape
        for layer in self.net.convs:
            conv = layer.conv
            k, stride, padding = conv.weight.shape[2], conv.stride[0], conv.padding[0]
            rows = (rows + 2 * padding - k) // stride + 1
            cols = (cols + 2 * padding - k) // stride + 1
            if rows <= 0 or cols <= 0:
                return False
        return True

    @staticmethod
    def _upsampled(image: np.ndarray, upsample: int) -> np.ndarray:
        img = np.asarray(image)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError("expected an (H, W, 3) uint8 RGB or (H, W) uint8 gray image")
        for _ in range(upsample):
            img = pyramid_up2(img)
        return img

    def _to_detections(self, score_map: np.ndarray, rects: list[Rect], upsample: int) -> list[Detection]:
        """dlib's loss_mmod_::to_label: cells scoring > 0 become windows mapped back through the tiled
        pyramid, then greedy NMS by descending score; finally undo the Python binding's upsampling."""
        candidates: list[tuple[float, Rect]] = []
        for k, (win_w, win_h) in enumerate(self.net.windows):
            rows, cols = np.nonzero(score_map[k] > 0)
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                score = float(score_map[k, r, c])
                px = c * self._scale + self._offset
                py = r * self._scale + self._offset
                half_w, half_h = (win_w - 1) / 2, (win_h - 1) / 2
                level = _nearest_rect(rects, px, py)
                ox, oy = rects[level][0], rects[level][1]
                left, top = px - half_w - ox, py - half_h - oy
                right, bottom = px + half_w - ox, py + half_h - oy
                ratio = PYRAMID_N / (PYRAMID_N - 1.0)
                for _ in range(level):
                    left, top = left * ratio + 0.3, top * ratio + 0.3
                    right, bottom = right * ratio + 0.3, bottom * ratio + 0.3
                candidates.append((score, round_rect(left, top, right, bottom)))
        candidates.sort(key=lambda item: -item[0])
        kept: list[tuple[float, Rect]] = []
        for score, rect in candidates:
            if any(_box_overlaps(other, rect, self.net.nms_iou, self.net.nms_percent_covered) for _, other in kept):
                continue
            kept.append((score, rect))
        dets: list[Detection] = []
        for score, rect in kept:
            if upsample:
                rect = rect_down2(rect, upsample)
            dets.append((rect, score))
        return dets
