"""Does facepipe's Dagster event log (facepipe/defs/storage.py) still pay? `facepipe index` of faceless
tiny photos (so orchestration is all that is left) with it and with Dagster's stock SQLite storage,
side by side, alternating, each a fresh process and data folder. Prints a Markdown table.

    .venv/bin/python benchmarks/event_log_bench.py --photos 300 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

STOCK_YAML = "telemetry:\n  enabled: false\n"  # kept as is by facepipe (not one of its own versions)


def make_photos(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / f"d{i % 5}" / f"noise {i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=70)


def index_once(images: Path, work: Path, stock: bool) -> float:
    home = work / "dagster"
    home.mkdir(parents=True)
    if stock:
        (home / "dagster.yaml").write_text(STOCK_YAML)
    env = {
        **os.environ,
        "FACEPIPE_DATA": str(work / "data"),
        "DAGSTER_HOME": str(home),
        "FACEPIPE_DETECTOR": "hog",
        "FACEPIPE_WORKERS": "1",
    }
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "facepipe.cli", "index", "--quiet", str(images)],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="facepipe-eventlog-") as tmp:
        root = Path(tmp)
        make_photos(root / "images", args.photos)
        times: dict[str, list[float]] = {"facepipe": [], "stock": []}
        for r in range(args.rounds):
            for name in ("facepipe", "stock") if r % 2 == 0 else ("stock", "facepipe"):
                times[name].append(index_once(root / "images", root / f"{name}-{r}", stock=name == "stock"))
    best = {name: min(values) for name, values in times.items()}
    load = os.getloadavg()
    command = f"benchmarks/event_log_bench.py --photos {args.photos} --rounds {args.rounds}"
    machine = f"{platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}"
    print(f"`{command}`, {machine}\n")
    print("| event log | best wall s | ms per photo | all runs s |")
    print("|---|--:|--:|---|")
    for name, values in times.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {best[name]:.1f} | {1000 * best[name] / args.photos:.0f} | {runs} |")
    print(f"\nstock / facepipe: {best['stock'] / best['facepipe']:.2f}x")


if __name__ == "__main__":
    main()
