"""How far facepipe's extraction is from what the CPU can do: FLOPs per photo against a measured peak.

    .venv/bin/python benchmarks/flops_bench.py            # ~2 min; --no-write to print only

One process, one thread (OMP/OpenBLAS/onnxruntime set to 1 before anything loads), default settings.
Per photo: detection FLOPs = the working pixels of every tile of facepipe's tiling plan x YuNet's
FLOPs per input pixel (counted from its layer list below); encoding FLOPs = faces x the ResNet's
FLOPs, counted from the ONNX graph facepipe runs (every Conv and Gemm/MatMul; elementwise ops are
left out, under 1%). The peak is a float32 numpy matmul (2048^3) on one thread, measured in the
same run; the two cores are twice that. Times are CPU seconds of the one-thread process (robust to
other jobs on a shared machine), best of 2 per photo, after a warm-up.
Writes its block of BENCHMARKS.md (between `flops_bench` markers).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_bench import BENCH_PHOTOS, BENCHMARKS_MD, DATA  # noqa: E402

# YuNet (libfacedetection 2023): (stride, input channels, output channels, kind) per layer, from the
# layer list of its published model (depthwise-separable units: a 1x1 conv, then a 3x3 depthwise conv).
# The head's 3x3 stride-2 conv on RGB is 27 inputs per output.
_HEADS = [(64, 1), (64, 4), (64, 1), (64, 10)]  # cls, bbox, obj, 5 landmarks
YUNET_LAYERS: list[tuple[int, int, int]] = [
    (2, 27, 16),  # conv head (as a 1x1 on 3x3x3 patches)
    (2, 16, 16),  # conv0 unit
    (4, 16, 16),
    (4, 16, 32),  # conv1
    (4, 32, 32),
    (4, 32, 64),  # conv2
    *((s, 64, 64) for s in (8, 16, 32) for _ in range(3)),  # conv3..5 (2 units each) + the neck's unit
    *((s, cin, cout) for s in (8, 16, 32) for cin, cout in _HEADS),
]


def yunet_flops_per_pixel() -> float:
    """FLOPs (2 per multiply-add) per input pixel: 1x1 conv cin*cout, then 3x3 depthwise 9*cout, except the head."""
    macs = 0.0
    for i, (stride, cin, cout) in enumerate(YUNET_LAYERS):
        per_position = cin * cout + (0 if i == 0 else 9 * cout)
        macs += per_position / stride**2
    return 2 * macs


def encoder_flops() -> float:
    """FLOPs of one 150x150 face through the ResNet, counted from the ONNX graph facepipe builds."""
    import onnx
    from onnx import numpy_helper, shape_inference

    from facepipe.faces.encoder import FastEncoder
    from facepipe.faces.onnx_graphs import build_resnet_onnx

    model = onnx.load_from_string(build_resnet_onnx(FastEncoder().net))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]
    }
    weights = {t.name: numpy_helper.to_array(t).shape for t in model.graph.initializer}
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out = shapes[node.output[0]]
            kernel = weights[node.input[1]]
            macs += int(np.prod(out)) * int(np.prod(kernel[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0]) or weights[node.input[0]]
            b = weights.get(node.input[1]) or shapes[node.input[1]]
            macs += int(np.prod(a)) * int(b[-1])
    return 2.0 * macs


def matmul_peak(n: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of a float32 n^3 matmul on one thread, best of `repeat`."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeat))
    return 2 * n**3 / best / 1e9


def _timed(fn, *args) -> float:
    """CPU seconds of this (one-thread) process: on a shared machine, wall time also counts the waits."""
    started = time.process_time()
    fn(*args)
    return time.process_time() - started


def upscaled(path: Path) -> bytes:
    """The photo scaled to fit 4000x3000 on a grey canvas, as extract_bench's 12 MP part makes it."""
    import io

    from PIL import Image, ImageOps

    with Image.open(path) as img:
        image = ImageOps.exif_transpose(img).convert("RGB")
    scale = min(4000 / image.width, 3000 / image.height)
    size = (round(image.width * scale), round(image.height * scale))
    canvas = Image.new("RGB", (4000, 3000), (128, 128, 128))
    canvas.paste(image.resize(size, Image.Resampling.BICUBIC), ((4000 - size[0]) // 2, (3000 - size[1]) // 2))
    out = io.BytesIO()
    canvas.save(out, format="JPEG", quality=90)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from facepipe.faces import tiling
    from facepipe.faces.detection import detect
    from facepipe.faces.embedding import embed
    from facepipe.faces.extract import ExtractSettings
    from facepipe.faces.loading import load_rgb

    started_at, t0 = datetime.now(UTC), time.perf_counter()
    settings = ExtractSettings()
    band, min_face = settings.detect.band(), settings.detect.effective_min_face()
    per_pixel, per_face = yunet_flops_per_pixel(), encoder_flops()
    peak = matmul_peak()
    photos = {key: (DATA / source).read_bytes() for key, source in BENCH_PHOTOS.items()}
    photos["Solvay_conference_1927.jpg"] = (DATA / "cocoindex/Solvay_conference_1927.jpg").read_bytes()
    for key in ("dlib_faces/2008_001322.jpg", "cocoindex/Carter_welcomes_Reagan.jpg"):
        photos[f"12 MP: {key.split('/')[-1]}"] = upscaled(DATA / BENCH_PHOTOS[key])

    rows = []
    warm = load_rgb(next(iter(photos.values())))
    embed(warm, [d.box for d in detect(warm, settings.detect, settings.engines)], 1, settings.engines)
    for key, data in photos.items():
        rgb = load_rgb(data)
        height, width = rgb.shape[:2]
        working = sum(
            round((t.bottom - t.top) * level.scale) * round((t.right - t.left) * level.scale)
            for level in tiling.plan(height, width, band, min_face, settings.detect.max_side)
            for t in level.tiles
        )
        detect_s = min(_timed(detect, rgb, settings.detect, settings.engines) for _ in range(2))
        boxes = [d.box for d in detect(rgb, settings.detect, settings.engines)]
        embed_s = min(_timed(embed, rgb, boxes, 1, settings.engines) for _ in range(2))
        decode_s = min(_timed(load_rgb, data) for _ in range(2))
        rows.append((key, width * height / 1e6, working / 1e6, len(boxes), decode_s, detect_s, embed_s))
        print(f"{key}: {len(boxes)} faces, detect {detect_s:.3f}s, embed {embed_s:.3f}s", file=sys.stderr)

    chips = np.zeros((8, 150, 150, 3), np.uint8)
    from facepipe.faces.encoder import FastEncoder

    encoder = FastEncoder()
    encoder.descriptors(chips)
    network_s = min(_timed(lambda: encoder.descriptors(chips)) for _ in range(5)) / 8
    tile = np.random.default_rng(2).integers(0, 255, (1536, 1536, 3), dtype=np.uint8)
    from facepipe.faces import yunet

    yunet.detect(tile)
    yunet_s = min(_timed(lambda: yunet.detect(tile)) for _ in range(3))

    lines = [
        f"Command: `python benchmarks/flops_bench.py` (run {started_at:%Y-%m-%d %H:%M} UTC, "
        f"{(time.perf_counter() - t0) / 60:.1f} min).  \n",
        f"Machine: {_cpu()}, {os.cpu_count()} cores; {platform.platform()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}; one thread.  \n",
        f"Load average: {' / '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min, at the end of the run).\n\n",
        f"**Peak assumed: {peak:.1f} GFLOP/s per core** (float32 numpy matmul 2048^3, one thread, best of 5, this "
        f"run), {2 * peak:.1f} GFLOP/s for the 2 cores. YuNet: {per_pixel / 1e3:.2f} kFLOP per working pixel "
        f"({per_pixel * 1e6 / 1e9:.2f} GFLOP per MP searched); the face encoder: {per_face / 1e9:.2f} GFLOP per "
        "150x150 face (ONNX graph, Conv + Gemm).\n\n",
        f"Networks alone, one thread: YuNet on a 1536x1536 tile {yunet_s * 1e3:.0f} ms = "
        f"{per_pixel * 1536**2 / yunet_s / 1e9:.1f} GFLOP/s ({per_pixel * 1536**2 / yunet_s / 1e9 / peak:.0%} of "
        f"the matmul peak); the encoder on a batch of 8 chips {network_s * 1e3:.1f} ms per face = "
        f"{per_face / network_s / 1e9:.1f} GFLOP/s ({per_face / network_s / 1e9 / peak:.0%}).\n\n",
        "| photo | MP | MP searched (tiles, all levels) | faces | detect GFLOP | encode GFLOP | decode s | detect s "
        "| landmarks + encode s | measured CPU s | at peak s (1 core) | measured / at peak |\n",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    ]
    totals = np.zeros(6)
    for key, mp, searched, faces, decode_s, detect_s, embed_s in rows:
        d_gf, e_gf = searched * 1e6 * per_pixel / 1e9, faces * per_face / 1e9
        measured, ideal = decode_s + detect_s + embed_s, (d_gf + e_gf) / peak
        if not key.startswith(("12 MP", "Solvay")):
            totals += (d_gf, e_gf, faces, measured, ideal, 1)
        lines.append(
            f"| {key} | {mp:.2f} | {searched:.2f} | {faces} | {d_gf:.2f} | {e_gf:.2f} | {decode_s:.3f} | "
            f"{detect_s:.3f} | {embed_s:.3f} | {measured:.3f} | {ideal:.3f} | {measured / ideal:.1f}x |\n"
        )
    d_gf, e_gf, faces, measured, ideal, n = totals
    lines.append(
        f"\nThe 17 benchmark photos: {d_gf + e_gf:.1f} GFLOP ({d_gf:.1f} detection, {e_gf:.1f} encoding of {faces:.0f} "
        f"faces), {(d_gf + e_gf) / n:.2f} GFLOP per photo. On one thread they took {measured:.2f} CPU s; at the matmul "
        f"peak {ideal:.2f} s on one core, {ideal / 2:.2f} s on two: measured is {measured / ideal:.1f}x the "
        f"one-core limit, and the pool of 2 ({measured / 2:.2f} s if it scaled perfectly) {measured / ideal:.1f}x "
        f"the two-core limit ({ideal / 2:.2f} s, {n / (ideal / 2):.0f} photos/s).\n"
    )
    body = "".join(lines)
    print(body)
    if not args.no_write:
        begin, end = "<!-- flops_bench begin -->", "<!-- flops_bench end -->"
        title = "### FLOPs per photo vs the machine's peak: `benchmarks/flops_bench.py`"
        block = f"{begin}\n{title}\n\n{body.rstrip()}\n{end}"
        text = BENCHMARKS_MD.read_text()
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
        text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text.rstrip()}\n\n{block}\n"
        BENCHMARKS_MD.write_text(text)


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if "model name" in line:
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
