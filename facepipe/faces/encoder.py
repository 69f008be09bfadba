"""dlib's ResNet face encoder (dlib_face_recognition_resnet_model_v1) on onnxruntime.

dlib-bin has no BLAS, so ``face_recognition_model_v1.compute_face_descriptor`` spends ~0.1 s of
one core per face in dlib's own matrix code. Here the weights are read out of the same ``.dat``,
the network is rebuilt as an ONNX graph (onnx_graphs.build_resnet_onnx) and run by onnxruntime on
the aligned 150x150 chips, which still come from dlib (``dlib.get_face_chips``: the same
get_face_chip_details + extract_image_chips calls compute_face_descriptor makes), so descriptors
agree with dlib's to float rounding (well under 1e-4).

The network type is compiled into dlib's Python module (tools/python/src/face_recognition.cpp):

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>>

with ``ares`` blocks relu(x + affine(con3x3(relu(affine(con3x3(x)))))) and ``ares_down`` blocks
whose first conv has stride 2 and whose shortcut is a 2x2 average pool. The file does not say
which tag a residual adds back, so load_face_resnet checks the sequence of layers against this.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepipe.faces.dlib_format import (
    AddPrev,
    Affine,
    Conv,
    DlibFormatError,
    DlibReader,
    FullyConnected,
    Layer,
    Pool,
    Relu,
    TagOrSkip,
    read_network,
)
from facepipe.faces.onnx_graphs import OnnxMissing, build_resnet_onnx, fold_affine, onnx_available
from facepipe.faces.onnx_session import CPU, make_session

CHIP_SIZE = 150
"""dlib's encoder input: the aligned face chip is CHIP_SIZE x CHIP_SIZE RGB."""
CHIP_PADDING = 0.25
"""compute_face_descriptor's default padding around the 5 landmarks' face box."""
DLIB_BATCH = 16
"""compute_face_descriptor runs the chips through the network 16 at a time; so do we."""


@dataclass
class ResidualBlock:
    conv1: Conv  # 3x3, affine folded in, followed by relu
    conv2: Conv  # 3x3, affine folded in
    down: Pool | None  # the shortcut's average pool in ares_down blocks, None in ares blocks


@dataclass
class FaceResNet:
    """What FastEncoder needs from the .dat: normalisation, stem, residual blocks, final fc."""

    input_size: tuple[int, int]
    avg_rgb: tuple[float, float, float]
    stem: Conv  # 7x7 stride 2, affine folded in, followed by relu and stem_pool
    stem_pool: Pool
    blocks: list[ResidualBlock]
    fc: FullyConnected


_CODES = {Conv: "C", Affine: "A", Relu: "R", AddPrev: "+", TagOrSkip: "T", FullyConnected: "F"}
# Input side first: stem, then ares (tag1 block add relu) and ares_down (tag1 block tag2 skip1
# avg_pool add relu) blocks, then avg_pool_everything and fc.
_ARES, _ARES_DOWN = "TCARCA+R", "TCARCATTP+R"
_LAYOUT = re.compile(rf"CARM(?:{re.escape(_ARES)}|{re.escape(_ARES_DOWN)})+GF")


def _code(layer: Layer) -> str:
    if isinstance(layer, Pool):
        if layer.kind == "max":
            return "M"
        return "G" if layer.size == (0, 0) else "P"
    return _CODES[type(layer)]


def load_face_resnet(path: str | Path) -> FaceResNet:
    """Parse dlib's serialized ``loss_metric<...>`` face encoder into plain numpy weights."""
    reader = DlibReader.open(path)
    reader.int()  # add_loss_layer version
    loss = reader.string()
    if loss not in ("loss_metric_", "loss_metric_2"):
        raise DlibFormatError(f"not a dlib metric-learning network (loss {loss!r})")
    if loss == "loss_metric_2":
        reader.real()  # margin
        reader.real()  # distance threshold
    input_layer, layers = read_network(reader)
    if input_layer.name != "input_rgb_image_sized":
        raise DlibFormatError(f"unexpected input layer {input_layer.name!r}")
    codes = "".join(_code(layer) for layer in layers)
    if not _LAYOUT.fullmatch(codes):
        raise DlibFormatError(f"layers {codes} are not dlib's face recognition ResNet")

    stem = fold_affine(layers[0], layers[1])
    blocks = []
    i = 4
    while codes[i] == "T":
        down = codes.startswith(_ARES_DOWN, i)
        conv1 = fold_affine(layers[i + 1], layers[i + 2])
        conv2 = fold_affine(layers[i + 4], layers[i + 5])
        blocks.append(ResidualBlock(conv1, conv2, layers[i + 8] if down else None))
        i += len(_ARES_DOWN if down else _ARES)
    return FaceResNet(
        input_size=input_layer.extra,
        avg_rgb=input_layer.avg_rgb,
        stem=stem,
        stem_pool=layers[3],
        blocks=blocks,
        fc=layers[-1],
    )


def default_model_path() -> str:
    import warnings

    with warnings.catch_warnings():  # face_recognition_models imports the deprecated pkg_resources
        warnings.simplefilter("ignore")
        import face_recognition_models

    return face_recognition_models.face_recognition_model_location()


class FastEncoder:
    """dlib's face encoder weights on onnxruntime; same descriptors as face_recognition_model_v1.

    ``threads`` is onnxruntime's intra-op thread count; ``providers`` are onnxruntime execution
    providers in order of preference (missing ones fall back to the CPU, see onnx_session).
    """

    def __init__(
        self, model_path: str | Path | None = None, threads: int = 1, providers: Sequence[str] = (CPU,)
    ) -> None:
        if not onnx_available():
            raise OnnxMissing("FastEncoder needs onnxruntime and onnx: pip install onnxruntime onnx")
        self.net = load_face_resnet(model_path or default_model_path())
        self._session = make_session(build_resnet_onnx(self.net), threads, providers)

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    def descriptors(self, chips: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """(n, 128) float32 descriptors of aligned (n, 150, 150, 3) uint8 RGB chips."""
        batch = np.ascontiguousarray(np.asarray(chips, dtype=np.uint8))
        if batch.ndim != 4 or batch.shape[1:] != (*self.net.input_size, 3):
            raise ValueError(f"expected (n, {self.net.input_size[0]}, {self.net.input_size[1]}, 3) uint8 chips")
        out = [
            self._session.run(["descriptors"], {"chips": batch[i : i + DLIB_BATCH]})[0]
            for i in range(0, len(batch), DLIB_BATCH)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.net.fc.weight.shape[1]), np.float32)

    def face_descriptors(self, rgb: np.ndarray, shapes) -> np.ndarray:
        """Like dlib's compute_face_descriptor(rgb, shapes, num_jitters=1), as an (n, 128) array.

        ``shapes`` are dlib.full_object_detection landmarks (5 or 68 points) of faces in ``rgb``.
        """
        import dlib

        if len(shapes) == 0:
            return np.zeros((0, self.net.fc.weight.shape[1]), np.float32)
        chips = dlib.get_face_chips(rgb, shapes, size=self.net.input_size[0], padding=CHIP_PADDING)
        return self.descriptors(np.stack(chips))
