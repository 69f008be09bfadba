"""dlib's MMOD CNN face detector, run on onnxruntime instead of dlib's own CPU code.

dlib-bin has no BLAS, so its CNN detector spends seconds on a ~10 GFLOP network. Here we read
the weights straight out of dlib's serialized ``.dat`` file, rebuild the network as an ONNX graph
and run it on onnxruntime. Everything around the network (the tiled ``pyramid_down<6>`` input
image, the mapping of output cells back to image boxes, thresholding, non-max suppression and the
``upsample`` step of the Python binding) follows dlib's arithmetic step by step, so detections
match ``dlib.cnn_face_detection_model_v1`` box for box (scores agree to float rounding).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Rect = tuple[int, int, int, int]
"""(left, top, right, bottom), inclusive pixel coordinates as dlib's ``rectangle``."""
Detection = tuple[Rect, float]

# Fixed by the network type the .dat was trained with (input_rgb_image_pyramid<pyramid_down<6>>):
# the type is compiled into dlib, not serialized, so it lives here.
PYRAMID_N = 6
# dlib's defaults for input_rgb_image_pyramid serialized in the old ("version 1") format.
PYRAMID_PADDING = 10
PYRAMID_OUTER_PADDING = 11
_MIN_PYRAMID_HEIGHT = 5


class MMODRuntimeMissing(ImportError):
    """onnxruntime or onnx is not installed, so the fast engine cannot run."""


def available() -> bool:
    """True when the runtime packages needed by FastMMOD can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# dlib serialization format
# ----------------------------------------------------------------------------------------------


class _DlibReader:
    """Cursor over dlib's serialize() stream (variable-length ints, mantissa/exponent floats)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        start = self.pos + 1
        value = int.from_bytes(self.data[start : start + size], "little")
        self.pos = start + size
        return -value if control & 0x80 else value

    def real(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        size = self.int()
        text = self.data[self.pos : self.pos + size].decode("ascii")
        self.pos += size
        return text

    def boolean(self) -> bool:
        char = self.data[self.pos : self.pos + 1]
        self.pos += 1
        if char not in (b"0", b"1"):
            raise ValueError(f"bad bool {char!r} at byte {self.pos - 1}")
        return char == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"unsupported tensor version {version}")
        shape = tuple(self.int() for _ in range(4))
        count = math.prod(shape)
        # Tensors are stored as raw little-endian IEEE floats, not dlib's generic float format.
        values = np.frombuffer(self.data, "<f4", count, self.pos).reshape(shape).copy()
        self.pos += 4 * count
        return values

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.int()  # version
        return (self.int(), self.int(), self.int(), self.int())


@dataclass
class _Conv:
    weight: np.ndarray  # (out, in, kh, kw) float32
    bias: np.ndarray  # (out,) float32
    stride: int
    padding: int
    relu: bool = False


@dataclass
class MMODNet:
    """What FastMMOD needs from the .dat: conv stack, input normalisation and loss options."""

    convs: list[_Conv]
    avg_rgb: tuple[float, float, float]
    windows: list[tuple[int, int]]
    nms_iou: float
    nms_percent_covered: float
    pyramid_padding: int = PYRAMID_PADDING
    pyramid_outer_padding: int = PYRAMID_OUTER_PADDING


def _read_layer_details(reader: _DlibReader) -> dict:
    name = reader.string()
    if name == "con_4":
        params = reader.tensor().ravel()
        num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(7))
        filters = reader.alias_tensor()
        reader.alias_tensor()  # biases
        for _ in range(4):  # learning-rate and weight-decay multipliers
            reader.real()
        if stride_y != stride_x or pad_y != pad_x or nr != nc:
            raise ValueError("only square convolutions are supported")
        k = filters[1]
        n_weights = num_filters * k * nr * nc
        weight = params[:n_weights].reshape(num_filters, k, nr, nc)
        bias = params[n_weights : n_weights + num_filters]
        return {"kind": "con", "conv": _Conv(weight, bias, stride_y, pad_y)}
    if name == "bn_con2":
        params = reader.tensor().ravel()
        reader.alias_tensor()
        reader.alias_tensor()
        reader.tensor()  # batch means
        reader.tensor()  # batch inverse stds
        running_means = reader.tensor().ravel()
        running_vars = reader.tensor().ravel()
        reader.int()  # num_updates
        reader.int()  # running_stats_window_size
        for _ in range(4):
            reader.real()
        eps = reader.real()
        n = running_means.size
        # dlib turns bn_con into affine_ at load time the same way.
        scale = params[:n] * (np.float32(1.0) / np.sqrt(running_vars + np.float32(eps)))
        shift = params[n : 2 * n] - scale * running_means
        return {"kind": "affine", "scale": scale.astype(np.float32), "shift": shift.astype(np.float32)}
    if name == "affine_":
        params = reader.tensor().ravel()
        reader.alias_tensor()
        reader.alias_tensor()
        reader.int()  # mode
        n = params.size // 2
        return {"kind": "affine", "scale": params[:n], "shift": params[n:]}
    if name == "relu_":
        return {"kind": "relu"}
    raise ValueError(f"unsupported dlib layer {name!r}")


def _read_layers(reader: _DlibReader) -> tuple[list[dict], dict]:
    """Walk dlib's nested add_layer serialization, innermost (input side) first."""
    version = reader.int()
    if version == 2:
        layers, input_layer = _read_layers(reader)
    elif version == 3:
        name = reader.string()
        if name not in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
            raise ValueError(f"unsupported input layer {name!r}")
        avg = (reader.real(), reader.real(), reader.real())
        input_layer = {"avg": avg, "padding": PYRAMID_PADDING, "outer": PYRAMID_OUTER_PADDING}
        if name == "input_rgb_image_pyramid2":
            input_layer["padding"] = reader.int()
            input_layer["outer"] = reader.int()
        layers = []
    else:
        raise ValueError(f"unsupported add_layer version {version}")
    layers.append(_read_layer_details(reader))
    for _ in range(3):  # setup/stale/disabled flags
        reader.boolean()
    reader.tensor()  # x_grad
    reader.tensor()  # cached_output
    reader.tensor()  # params_grad (version 2) or grad_final (version 3)
    if version == 3:
        reader.int()  # sample expansion factor
    return layers, input_layer


def load_dlib_mmod(path: str | Path) -> MMODNet:
    """Parse dlib's serialized ``loss_mmod<...>`` network into plain numpy weights."""
    reader = _DlibReader(Path(path).read_bytes())
    reader.int()  # add_loss_layer version
    if reader.string() != "loss_mmod_":
        raise ValueError("not a dlib mmod network")
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
    if opt_version >= 3:
        pyramid = reader.data[reader.pos]
        reader.pos += 1
        if pyramid != 1:
            raise ValueError("only image-pyramid mmod models are supported")
    if opt_version >= 4:
        if reader.boolean():
            raise ValueError("bounding box regression is not supported")
        reader.real()
    layers, input_layer = _read_layers(reader)
    if reader.pos != len(reader.data):
        raise ValueError("trailing bytes after the network: unexpected layout")

    convs: list[_Conv] = []
    for layer in layers:
        if layer["kind"] == "con":
            convs.append(layer["conv"])
        elif layer["kind"] == "affine":
            conv = convs[-1]
            # Fold the affine into the conv before it: one fewer pass over the feature maps.
            scale = layer["scale"]
            conv.weight = (conv.weight * scale[:, None, None, None]).astype(np.float32)
            conv.bias = (conv.bias * scale + layer["shift"]).astype(np.float32)
        elif layer["kind"] == "relu":
            convs[-1].relu = True
    if len(windows) != convs[-1].weight.shape[0]:
        raise ValueError("number of detector windows does not match the last layer")
    return MMODNet(
        convs=convs,
        avg_rgb=input_layer["avg"],
        windows=windows,
        nms_iou=nms_iou,
        nms_percent_covered=nms_covered,
        pyramid_padding=input_layer["padding"],
        pyramid_outer_padding=input_layer["outer"],
    )


# ----------------------------------------------------------------------------------------------
# ONNX graph
# ----------------------------------------------------------------------------------------------


def build_onnx(net: MMODNet) -> bytes:
    """The conv stack as an ONNX model with dynamic batch and image size."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:  # pragma: no cover - exercised only without onnx
        raise MMODRuntimeMissing("FastMMOD needs the 'onnx' package: pip install onnx") from exc

    nodes = []
    inits = []
    current = "image"
    for i, conv in enumerate(net.convs):
        w_name, b_name, out = f"w{i}", f"b{i}", f"conv{i}"
        inits.append(numpy_helper.from_array(conv.weight, w_name))
        inits.append(numpy_helper.from_array(conv.bias, b_name))
        k = conv.weight.shape[2]
        nodes.append(
            helper.make_node(
                "Conv",
                [current, w_name, b_name],
                [out],
                kernel_shape=[k, k],
                strides=[conv.stride, conv.stride],
                pads=[conv.padding] * 4,
            )
        )
        current = out
        if conv.relu:
            nodes.append(helper.make_node("Relu", [current], [f"relu{i}"]))
            current = f"relu{i}"
    nodes[-1].output[0] = "scores"
    graph = helper.make_graph(
        nodes,
        "dlib_mmod",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", len(net.windows), "oh", "ow"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


# ----------------------------------------------------------------------------------------------
# dlib's image arithmetic
# ----------------------------------------------------------------------------------------------


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


def _rect_down2(rect: tuple[float, float, float, float], levels: int) -> Rect:
    """pyramid_down<2>::rect_down applied ``levels`` times, rounded to an integer rectangle."""
    left, top, right, bottom = rect
    for _ in range(levels):
        left, top = left / 2.0 - 1.25, top / 2.0 - 0.75
        right, bottom = right / 2.0 - 1.25, bottom / 2.0 - 0.75
    return _round_rect(left, top, right, bottom)


def _round_rect(left: float, top: float, right: float, bottom: float) -> Rect:
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

    def __init__(self, model_path: str | Path | None = None, threads: int = 1) -> None:
        if not available():
            raise MMODRuntimeMissing("FastMMOD needs onnxruntime and onnx: pip install onnxruntime onnx")
        import onnxruntime as ort

        if model_path is None:
            import face_recognition_models

            model_path = face_recognition_models.cnn_face_detector_model_location()
        self.net = load_dlib_mmod(model_path)
        # Output cell (c, r) looks at input pixel (c, r) * scale + offset: compose each conv's
        # map_output_to_input (p * stride - padding + kernel // 2) from the top layer down.
        scale, offset = 1, 0
        for conv in reversed(self.net.convs):
            k = conv.weight.shape[2]
            offset = offset * conv.stride - conv.padding + k // 2
            scale *= conv.stride
        self._scale, self._offset = scale, offset

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(
            build_onnx(self.net), sess_options=opts, providers=["CPUExecutionProvider"]
        )

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
        for conv in self.net.convs:
            k = conv.weight.shape[2]
            rows = (rows + 2 * conv.padding - k) // conv.stride + 1
            cols = (cols + 2 * conv.padding - k) // conv.stride + 1
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
                candidates.append((score, _round_rect(left, top, right, bottom)))
        candidates.sort(key=lambda item: -item[0])
        kept: list[tuple[float, Rect]] = []
        for score, rect in candidates:
            if any(_box_overlaps(other, rect, self.net.nms_iou, self.net.nms_percent_covered) for _, other in kept):
                continue
            kept.append((score, rect))
        dets: list[Detection] = []
        for score, rect in kept:
            if upsample:
                rect = _rect_down2(rect, upsample)
            dets.append((rect, score))
        return dets
