"""Dagster's share of `facepipe index`, two revisions side by side in one run (alternating, fresh data folder each).

    .venv/bin/python benchmarks/index_ab.py --before main --repeat 3

"before" is `git archive REV` of this repository unpacked into a temporary folder and put first on
PYTHONPATH; "after" is this checkout. Each run is `benchmarks/index_spans.py ... index --json` on the 17
benchmark photos and on extract_bench's 200-photo library, in the order before, after, no Dagster,
before, ... so all sides see the same machine load. "no Dagster" is `benchmarks/no_dagster_index.py`
(this checkout): the same work and start without Dagster. "floor" is `benchmarks/dagster_floor.py`:
Dagster imported and the library's instance and job loaded in an idle process, no run; its CPU
divided by the cores is the least any index with work pays for Dagster when the workers keep every
core busy. Prints, per photo set, the median of each
side and after/before ratios: wall, Dagster's share by the breakdown table (extract_bench's
definition) and its biggest parts, and Dagster's cost by difference: after's wall less no Dagster's,
which also counts the CPU its thread takes from the workers (the table cannot see that).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import extract_bench as eb  # the photo sets, env and load measurement of the main benchmark

PARTS = (
    "waiting for Dagster to load (import, home, instance) beside the warm-up",
    "Dagster home: dagster.yaml, storage created or migrated",
    "import dagster + facepipe.defs",
    "runs (execute_in_process)",
    "run_index, the rest (instance, dynamic partitions, progress)",
)


def unpack(rev: str, folder: Path) -> Path:
    archive = subprocess.run(["git", "archive", rev], cwd=eb.REPO, capture_output=True, check=True).stdout
    with tempfile.TemporaryFile() as tmp:
        tmp.write(archive)
        tmp.seek(0)
        with tarfile.open(fileobj=tmp) as tar:
            tar.extractall(folder, filter="data")
    return folder


SCRIPTS = {"none": "no_dagster_index.py", "floor": "dagster_floor.py"}
"""The sides that are a script of this checkout rather than `facepipe index`."""


def one_run(code: Path | None, photos: Path, work: Path, label: str, side: str) -> dict:
    data = work / f"data-{label}"
    env = eb.clean_env({}, photos, data)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    spans_file = work / f"{label}.spans.json"
    here = Path(__file__).parent
    cmd = [sys.executable, str(here / "index_spans.py"), str(spans_file), "index", "--json"]
    if side in SCRIPTS:
        cmd = [sys.executable, str(here / SCRIPTS[side])]
    wall, cpu, other, _peak, exit_code = eb.measure(cmd, env, work / f"{label}.log")
    if exit_code != 0:
        raise SystemExit(f"{label} failed ({exit_code}):\n{(work / f'{label}.log').read_text()[-3000:]}")
    lines = [line for line in (work / f"{label}.log").read_text().splitlines() if line.startswith("{")]
    last = json.loads(lines[-1])  # every side ends with a JSON line
    if side == "floor":
        return {"wall": wall, "cpu": cpu, "other": other, "dagster": 0.0, "load_cpu": last["cpu"], "faces": None}
    faces = last["faces"]  # the sides that index must agree
    if side == "none":
        return {"wall": wall, "cpu": cpu, "other": other, "dagster": 0.0, "faces": faces}
    doc = json.loads(spans_file.read_text())
    spans, overlap = doc["dagster"], sum(doc.get("overlap", {}).values())
    return {
        "wall": wall,
        "cpu": cpu,
        "other": other,
        "dagster": sum(spans.values()),
        "overlap": overlap,
        "faces": faces,
        **spans,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="main", help="git revision to compare against (default: main)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side and photo set (default 3)")
    parser.add_argument("--sets", default="bench,library", help="comma-separated: bench (17 photos), library (200)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="facepipe-index-ab-"))
    base = unpack(args.before, work / "before-code")
    bench = eb.Bench(work, verbose=False)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results: dict[str, dict[str, list[dict]]] = {}
    for name in args.sets.split(","):
        images = work / f"images-{name}"
        bench.photo_set(name)
        results[name] = {"before": [], "after": [], "none": [], "floor": []}
        for i in range(args.repeat):
            for side, code in (("before", base), ("after", None), ("none", None), ("floor", None)):
                run = one_run(code, images, work, f"{name}-{side}-{i}", side)
                results[name][side].append(run)
                if side != "floor" and run["faces"] != results[name]["before"][-1]["faces"]:
                    raise SystemExit(f"{name} {side} #{i} found {run['faces']} faces, before found another number")
                print(
                    f"{name} {side} #{i}: wall {run['wall']:.2f} s, Dagster {run['dagster']:.2f} s "
                    f"({run['dagster'] / run['wall']:.1%}), home {run.get(PARTS[1], 0):.2f} s, "
                    f"other load {run['other']:.2f}",
                    flush=True,
                )
    print(f"\nbefore = {args.before}, after = this checkout; started {started}, {args.repeat} runs each, medians")
    print(f"load average at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| photos | what | before | after | after/before |\n|---|---|--:|--:|--:|")
    for name, sides in results.items():

        def median(side: str, key: str, sides=sides) -> float:
            return statistics.median(run.get(key, 0.0) for run in sides[side])

        def share(side: str, sides=sides) -> float:
            return statistics.median(run["dagster"] / run["wall"] for run in sides[side])

        rows = [("wall s", "wall"), ("CPU s (process and children)", "cpu"), ("Dagster s", "dagster")]
        rows += [*((f"Dagster: {p} s", p) for p in PARTS), ("of the wait, workers extracting s", "overlap")]
        for label, key in rows:
            b, a = median("before", key), median("after", key)
            print(f"| {name} | {label} | {b:.2f} | {a:.2f} | {a / b if b else float('nan'):.2f} |")
        print(
            f"| {name} | **Dagster's share** | {share('before'):.1%} | {share('after'):.1%} | "
            f"{share('after') / share('before'):.2f} |"
        )
        print(f"| {name} | other load (cores) | {median('before', 'other'):.2f} | {median('after', 'other'):.2f} | |")
        none_wall, none_cpu = median("none", "wall"), median("none", "cpu")
        print(f"| {name} | no Dagster: wall s, CPU s | | {none_wall:.2f}, {none_cpu:.2f} | |")
        for side in ("before", "after"):
            cost = median(side, "wall") - none_wall
            print(
                f"| {name} | Dagster by difference, {side}: wall s (share), CPU s | | {cost:.2f} "
                f"({cost / median(side, 'wall'):.1%}), {median(side, 'cpu') - none_cpu:.2f} | |"
            )
        load_cpu, after_wall = median("floor", "load_cpu"), median("after", "wall")
        floor = load_cpu / (os.cpu_count() or 1)
        print(f"| {name} | floor: Dagster imported and loaded, no run: CPU s | | {load_cpu:.2f} | |")
        print(
            f"| {name} | floor over {os.cpu_count()} busy cores: wall s (share of after's wall) | | "
            f"{floor:.2f} ({floor / after_wall:.1%}) | |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
