"""What each `facepipe` command costs before it does anything: process wall and CPU time, as ratios
against `python -c pass` and `python -c "import dlib, numpy, PIL"` measured in the same run, turn by turn.

    .venv/bin/python benchmarks/startup_bench.py --repeat 5

Runs against a small indexed library it builds in a temporary folder (HOG, two sample photos), so
`search` and `person` include extracting the query photo's face.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "face_recognition"
PHOTO = SAMPLES / "examples" / "knn_examples" / "test" / "obama1.jpg"


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="facepipe-startup-") as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        for name in ("obama.jpg", "biden.jpg"):
            shutil.copyfile(SAMPLES / "tests" / "test_images" / name, root / "images" / name)
        env = {
            **os.environ,
            "FACEPIPE_DATA": str(root / "data"),
            "DAGSTER_HOME": str(root / "dagster"),
            "FACEPIPE_DETECTOR": "hog",
        }
        subprocess.run([py, "-m", "facepipe.cli", "index", "--quiet", str(root / "images")], env=env, check=True)
        commands = {
            "python -c pass": [py, "-c", "pass"],
            "python -c 'import dlib, numpy, PIL'": [py, "-c", "import dlib, numpy, PIL"],
            "facepipe status": [py, "-m", "facepipe.cli", "status"],
            "facepipe people": [py, "-m", "facepipe.cli", "people"],
            "facepipe index (unchanged)": [py, "-m", "facepipe.cli", "index", "--quiet"],
            "facepipe search --store pgvector": [py, "-m", "facepipe.cli", "search", str(PHOTO), "--store", "pgvector"],
            "facepipe search (embedded Qdrant)": [py, "-m", "facepipe.cli", "search", str(PHOTO)],
            "facepipe person": [py, "-m", "facepipe.cli", "person", str(PHOTO)],
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.repeat):  # turn by turn, so a load spike hits every command alike
            for name, argv in commands.items():
                results[name].append(timed(argv, env))
    best = {name: (min(w for w, _ in runs), min(c for _, c in runs)) for name, runs in results.items()}
    base_wall, base_cpu = best["python -c pass"]
    libs_wall, libs_cpu = best["python -c 'import dlib, numpy, PIL'"]
    load = os.getloadavg()
    print(
        f"`benchmarks/startup_bench.py --repeat {args.repeat}`: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}; best of {args.repeat}\n"
    )
    print(
        "| command | wall s | CPU s | wall / `pass` | wall / `import dlib, numpy, PIL` | CPU / `pass` "
        "| CPU / `import dlib, numpy, PIL` |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    for name, (wall, cpu) in best.items():
        print(
            f"| {name} | {wall:.2f} | {cpu:.2f} | {wall / base_wall:.1f}x | {wall / libs_wall:.2f}x "
            f"| {cpu / max(base_cpu, 1e-3):.1f}x | {cpu / libs_cpu:.2f}x |"
        )
    print(f"\n(`pass` CPU {base_cpu:.2f} s; `import dlib, numpy, PIL` CPU {libs_cpu:.2f} s)")


if __name__ == "__main__":
    main()
