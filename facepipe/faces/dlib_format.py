"""Reading dlib's serialized DNN files (``.dat``) into plain numpy weights.

dlib writes a network as its loss layer followed by the nested ``add_layer`` chain: every layer
writes a version number, then the layer below it, then its own details, so the bytes hold the
outermost version first and the innermost (input side) layer's details first. The network type
(which tag a residual adds back, which skip jumps where) is compiled into dlib, not serialized:
callers know their architecture and check the sequence of layers returned here against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DlibFormatError(ValueError):
    """The file is not a dlib network of a layout this reader knows."""


class DlibReader:
    """Cursor over dlib's serialize() stream (variable-length ints, mantissa/exponent floats)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @classmethod
    def open(cls, path: str | Path) -> DlibReader:
        return cls(Path(path).read_bytes())

    def at_end(self) -> bool:
        return self.pos == len(self.data)

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

    def peek_string(self) -> str | None:
        """The string at the cursor if one plausibly starts there (the cursor does not move)."""
        pos = self.pos
        try:
            size = self.int()
            raw = self.data[self.pos : self.pos + size]
            if not 0 < size < 64 or len(raw) != size or not raw.isascii() or not raw.decode().isidentifier():
                return None
            return raw.decode()
        except IndexError:
            return None
        finally:
            self.pos = pos

    def boolean(self) -> bool:
        char = self.data[self.pos : self.pos + 1]
        self.pos += 1
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {char!r} at byte {self.pos - 1}")
        return char == b"1"

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"unsupported tensor version {version}")
        shape = tuple(self.int() for _ in range(4))
        count = math.prod(shape)
        # Tensors are stored as raw little-endian IEEE floats, not dlib's generic float format.
        values = np.frombuffer(self.data, "<f4", count, self.pos).reshape(shape).copy()
        self.pos += 4 * count
        return values

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.int()  # version
        return (self.int(), self.int(), self.int(), self.int())


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


@dataclass
class Conv:
    weight: np.ndarray  # (out, in, kh, kw) float32
    bias: np.ndarray  # (out,) float32, zeros when the layer has none
    stride: tuple[int, int]  # (y, x)
    padding: tuple[int, int]  # (y, x)


@dataclass
class Affine:
    """Per-channel ``x * scale + shift``: dlib's affine_, and bn_ as dlib converts it at load time."""

    scale: np.ndarray
    shift: np.ndarray


@dataclass
class Relu:
    pass


@dataclass
class Pool:
    kind: str  # "max" | "avg"
    size: tuple[int, int]  # (rows, cols); (0, 0) pools the whole plane
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass
class FullyConnected:
    weight: np.ndarray  # (inputs, outputs): dlib multiplies row vectors, x @ weight
    bias: np.ndarray | None


@dataclass
class AddPrev:
    """Adds a tagged layer's output; which tag is part of the compiled type, not the file."""


@dataclass
class TagOrSkip:
    """add_tag_layer or add_skip_layer: both serialize as version 1 + subnet and nothing else."""


Layer = Conv | Affine | Relu | Pool | FullyConnected | AddPrev | TagOrSkip


@dataclass
class InputLayer:
    name: str
    avg_rgb: tuple[float, float, float]
    extra: tuple[int, ...]  # input_rgb_image_sized: (rows, cols); input_rgb_image_pyramid2: paddings


def _multipliers(reader: DlibReader, count: int = 4) -> None:
    for _ in range(count):  # learning-rate and weight-decay multipliers: training only
        reader.real()


def _read_conv(reader: DlibReader, version: str) -> Conv:
    params = reader.tensor().ravel()
    num_filters, nr, nc, stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(7))
    filters = reader.alias_tensor()
    reader.alias_tensor()  # biases
    _multipliers(reader)
    use_bias = reader.boolean() if version in ("con_5", "con_6") else True
    if version == "con_6" and reader.boolean():  # use_relu: a fused relu dlib adds when it fuses layers
        raise DlibFormatError("con_ with a fused relu is not supported")
    n_weights = num_filters * filters[1] * nr * nc
    weight = params[:n_weights].reshape(num_filters, filters[1], nr, nc)
    bias = params[n_weights : n_weights + num_filters] if use_bias else np.zeros(num_filters, np.float32)
    return Conv(weight, bias, (stride_y, stride_x), (pad_y, pad_x))


def _read_bn(reader: DlibReader) -> Affine:
    params = reader.tensor().ravel()
    reader.alias_tensor()
    reader.alias_tensor()
    reader.tensor()  # batch means
    reader.tensor()  # batch inverse stds
    running_means = reader.tensor().ravel()
    running_vars = reader.tensor().ravel()
    reader.int()  # num_updates
    reader.int()  # running_stats_window_size
    _multipliers(reader)
    eps = reader.real()
    n = running_means.size
    # dlib turns bn_con into affine_ at load time the same way.
    scale = params[:n] * (np.float32(1.0) / np.sqrt(running_vars + np.float32(eps)))
    shift = params[n : 2 * n] - scale * running_means
    return Affine(scale.astype(np.float32), shift.astype(np.float32))


def _read_layer_details(reader: DlibReader) -> Layer | None:
    """One layer's own parameters; None for a layer that computes nothing at inference (disabled)."""
    name = reader.string()
    if name in ("con_4", "con_5", "con_6"):
        return _read_conv(reader, name)
    if name == "bn_con2":
        return _read_bn(reader)
    if name in ("affine_", "affine_2"):
        params = reader.tensor().ravel()
        reader.alias_tensor()
        reader.alias_tensor()
        reader.int()  # mode (per channel for conv nets)
        if name == "affine_2" and reader.boolean():
            return None
        n = params.size // 2
        return Affine(params[:n], params[n:])
    if name in ("relu_", "relu_2"):
        if name == "relu_2" and reader.boolean():
            return None
        return Relu()
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, stride_y, stride_x, pad_y, pad_x = (reader.int() for _ in range(6))
        return Pool(name[:3], (nr, nc), (stride_y, stride_x), (pad_y, pad_x))
    if name in ("fc_2", "fc_3"):
        num_outputs, num_inputs = reader.int(), reader.int()
        params = reader.tensor().ravel()
        reader.alias_tensor()  # weights
        reader.alias_tensor()  # biases
        has_bias = reader.int() == 0  # fc_bias_mode: FC_HAS_BIAS = 0, FC_NO_BIAS = 1
        _multipliers(reader)
        if name == "fc_3":
            has_bias = reader.boolean() and has_bias
        n = num_inputs * num_outputs
        weight = params[:n].reshape(num_inputs, num_outputs)
        return FullyConnected(weight, params[n : n + num_outputs] if has_bias else None)
    if name == "add_prev_":
        return AddPrev()
    raise DlibFormatError(f"unsupported dlib layer {name!r}")


def _read_input(reader: DlibReader) -> InputLayer:
    name = reader.string()
    avg = (reader.real(), reader.real(), reader.real())
    if name == "input_rgb_image_sized":
        return InputLayer(name, avg, (reader.int(), reader.int()))
    if name == "input_rgb_image_pyramid2":
        return InputLayer(name, avg, (reader.int(), reader.int()))
    if name in ("input_rgb_image", "input_rgb_image_pyramid"):
        return InputLayer(name, avg, ())
    raise DlibFormatError(f"unsupported input layer {name!r}")


def read_network(reader: DlibReader) -> tuple[InputLayer, list[Layer]]:
    """The add_layer chain under the loss layer: its input layer and its layers, input side first.

    Versions: add_layer over a layer writes 2, add_layer over the input layer 2 or 3 (3 adds the
    sample expansion factor), tag and skip layers 1. Older (version 1) add_layers are not supported:
    they would be indistinguishable from tags.
    """
    layers: list[Layer] = []
    input_layer = _read_subnet(reader, layers)
    if not reader.at_end():
        raise DlibFormatError("trailing bytes after the network: unexpected layout")
    return input_layer, layers


def _read_subnet(reader: DlibReader, layers: list[Layer]) -> InputLayer:
    # Iterative on the way down (a ResNet nests ~100 deep), then the details on the way back up.
    versions: list[int] = []
    while True:
        version = reader.int()
        name = reader.peek_string()
        if name is not None and name.startswith("input"):
            break
        if version not in (1, 2):
            raise DlibFormatError(f"unsupported add_layer version {version}")
        versions.append(version)
    if version not in (2, 3):
        raise DlibFormatError(f"unsupported layer version {version} over the input layer")
    input_layer = _read_input(reader)
    _read_add_layer_rest(reader, layers, over_input_version=version)
    for version in reversed(versions):
        if version == 1:
            layers.append(TagOrSkip())
        else:
            _read_add_layer_rest(reader, layers)
    return input_layer


def _read_add_layer_rest(reader: DlibReader, layers: list[Layer], over_input_version: int = 0) -> None:
    """An add_layer's own part, after its subnet: details, then training state that is skipped."""
    layer = _read_layer_details(reader)
    if layer is not None:
        layers.append(layer)
    for _ in range(3):  # setup / gradient-stale / output-disabled flags
        reader.boolean()
    reader.tensor()  # x_grad
    reader.tensor()  # cached_output
    reader.tensor()  # params_grad (over a layer) or grad_final (over the input)
    if over_input_version == 3:
        reader.int()  # sample expansion factor
