"""ONNX graphs for dlib's networks, built from the weights read out of dlib's ``.dat`` files.

Only the ``onnx`` package is needed to build them (onnxruntime runs them, see onnx_session.py).
The networks come in as the plain dataclasses mmod.py and encoder.py read from the files (typed
``Any`` here so this module does not import its callers).
Each builder mirrors one dlib network type layer for layer; dlib's batch-norm-turned-affine
layers are folded into the convolution before them (one fewer pass over the feature maps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from facepipe.faces.dlib_format import Affine, Conv


class OnnxMissing(ImportError):
    """onnx or onnxruntime is not installed, so the fast engines cannot run."""


def onnx_available() -> bool:
    """True when the packages needed to build and run the graphs can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def fold_affine(conv: Conv, affine: Affine) -> Conv:
    """conv followed by a per-channel affine, as one conv."""
    scale = affine.scale
    weight = (conv.weight * scale[:, None, None, None]).astype(np.float32)
    bias = (conv.bias * scale + affine.shift).astype(np.float32)
    return Conv(weight, bias, conv.stride, conv.padding)


@dataclass
class _Graph:
    """Nodes and initializers under construction, with unique names."""

    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    count: int = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, array: np.ndarray, prefix: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], prefix: str | None = None, **attrs) -> str:
        from onnx import helper

        out = self.name(prefix or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def conv(self, x: str, conv: Conv) -> str:
        kh, kw = conv.weight.shape[2:]
        return self.op(
            "Conv",
            [x, self.const(conv.weight, "w"), self.const(conv.bias, "b")],
            kernel_shape=[kh, kw],
            strides=list(conv.stride),
            pads=[conv.padding[0], conv.padding[1], conv.padding[0], conv.padding[1]],
        )


def _model(graph: _Graph, name: str, inputs: list, outputs: list) -> bytes:
    import onnx
    from onnx import helper

    model = helper.make_model(
        helper.make_graph(graph.nodes, name, inputs, outputs, graph.inits),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised only without onnx
        raise OnnxMissing("the onnx engines need the 'onnx' package: pip install onnx") from exc


# ----------------------------------------------------------------------------------------------
# The MMOD detector's conv stack
# ----------------------------------------------------------------------------------------------


def build_mmod_onnx(net: Any) -> bytes:
    """mmod.MMODNet's conv stack with dynamic batch and image size: image (n, 3, h, w) -> scores."""
    _require_onnx()
    from onnx import TensorProto, helper

    graph = _Graph()
    current = "image"
    for conv in net.convs:
        current = graph.conv(current, conv.conv)
        if conv.relu:
            current = graph.op("Relu", [current])
    graph.nodes[-1].output[0] = "scores"
    return _model(
        graph,
        "dlib_mmod",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", len(net.windows), "oh", "ow"])],
    )


# ----------------------------------------------------------------------------------------------
# The face encoder ResNet
# ----------------------------------------------------------------------------------------------


def build_resnet_onnx(net: Any) -> bytes:
    """encoder.FaceResNet (dlib_face_recognition_resnet_model_v1) as ONNX: chips (n, 150, 150, 3) uint8 RGB -> (n, 128).

    The input normalisation is in the graph, with dlib's arithmetic: input_rgb_image_sized turns
    each pixel into float(pixel - avg) / 256, which is exact as a multiply by 1/256.
    """
    _require_onnx()
    from onnx import TensorProto, helper

    graph = _Graph()
    rows, cols = net.input_size
    x = graph.op("Cast", ["chips"], to=TensorProto.FLOAT)
    x = graph.op("Sub", [x, graph.const(np.asarray(net.avg_rgb, np.float32))])
    x = graph.op("Mul", [x, graph.const(np.asarray(1 / 256, np.float32))])
    x = graph.op("Transpose", [x], perm=[0, 3, 1, 2])  # NHWC -> NCHW, dlib's tensor layout

    x = graph.op("Relu", [graph.conv(x, net.stem)])
    shape = (net.stem.weight.shape[0], *_conv_out((rows, cols), net.stem))
    pool = net.stem_pool
    x = graph.op(
        "MaxPool",
        [x],
        kernel_shape=list(pool.size),
        strides=list(pool.stride),
        pads=[pool.padding[0], pool.padding[1], pool.padding[0], pool.padding[1]],
    )
    shape = (shape[0], *_pool_out(shape[1:], pool.size, pool.stride, pool.padding))

    for block in net.blocks:
        y = graph.op("Relu", [graph.conv(x, block.conv1)])
        y = graph.conv(y, block.conv2)
        y_shape = (block.conv2.weight.shape[0], *_conv_out(_conv_out(shape[1:], block.conv1), block.conv2))
        if block.down is None:
            x = graph.op("Relu", [graph.op("Add", [x, y])])
            shape = y_shape
            continue
        pool = block.down
        x = graph.op(
            "AveragePool",
            [x],
            kernel_shape=list(pool.size),
            strides=list(pool.stride),
            pads=[pool.padding[0], pool.padding[1], pool.padding[0], pool.padding[1]],
        )
        x_shape = (shape[0], *_pool_out(shape[1:], pool.size, pool.stride, pool.padding))
        # dlib's add_prev adds tensors of different shapes into the larger one, top-left aligned,
        # the missing channels, rows and columns counting as zeros: here 128 channels are added into
        # 256, and a 3x3 map into a 4x4 one (a 3x3 stride-2 unpadded conv and a 2x2 pool disagree).
        out_shape = tuple(max(a, b) for a, b in zip(x_shape, y_shape, strict=True))
        x = graph.op(
            "Relu", [graph.op("Add", [_pad_to(graph, x, x_shape, out_shape), _pad_to(graph, y, y_shape, out_shape)])]
        )
        shape = out_shape

    x = graph.op("GlobalAveragePool", [x])
    x = graph.op("Flatten", [x], axis=1)
    x = graph.op("MatMul", [x, graph.const(net.fc.weight, "fc")])
    if net.fc.bias is not None:
        x = graph.op("Add", [x, graph.const(net.fc.bias, "fcb")])
    graph.nodes[-1].output[0] = "descriptors"
    return _model(
        graph,
        "dlib_face_resnet",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["n", rows, cols, 3])],
        [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["n", net.fc.weight.shape[1]])],
    )


def _pad_to(graph: _Graph, x: str, shape: tuple[int, ...], target: tuple[int, ...]) -> str:
    if shape == target:
        return x
    pads = [0, 0, 0, 0] + [0] + [t - s for s, t in zip(shape, target, strict=True)]
    return graph.op("Pad", [x, graph.const(np.asarray(pads, np.int64), "pads")])


def _conv_out(size: tuple[int, int], conv: Conv) -> tuple[int, int]:
    kh, kw = conv.weight.shape[2:]
    return _pool_out(size, (kh, kw), conv.stride, conv.padding)


def _pool_out(
    size: tuple[int, ...], window: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
) -> tuple[int, int]:
    return tuple(1 + (n + 2 * p - k) // s for n, k, s, p in zip(size, window, stride, padding, strict=True))
