"""Detectors side by side: YuNet, dlib's CNN and HOG (facepipe) and CocoIndex's reference configuration.

    .venv/bin/python benchmarks/detect_bench.py                 # every detector, ~30 min on 2 cores
    .venv/bin/python benchmarks/detect_bench.py --only yunet hog --no-write

Each detector runs in its own subprocess, one after the other, extracting faces end to end
(decode, detect, embed) with facepipe's worker pool (one process per core, as `facepipe index`
without Dagster), the reference photo by photo as its example does, on:

- the 17-photo extract_bench set: photos/s, faces/s, recall/precision on dlib's hand-labelled
  training.xml (4 of the photos), identity on face_recognition's photo pairs (extract_bench's
  `quality`: same person < 0.6);
- the labelled development set (facepipe_tests/devset.py): 12/24 MP composites, Solvay 2x/3x,
  sideways photos, face-free images: recall/precision per set and per face-size bucket, seconds
  per megapixel.

dlib's CNN at the 32 px minimum works on a 2x enlarged photo (4x the pixels): it runs on the
sets below 20 MP only (`CNN_ITEMS`), and the reference on the labelled photos only (it shrinks
every photo to 1280 px wide, so its cost does not grow with the photo). Peak memory is each
subprocess's max RSS. The results replace the `detect_bench:results` block in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import extract_bench as xb
from facepipe.processes import peak_rss_bytes

REPO = xb.REPO
DETECTORS = ["yunet", "cnn", "hog", "reference"]
SETS = ["composite", "solvay_up", "sideways", "face_free"]
CNN_ITEMS = {"composite_12mp_a", "solvay_x2"}  # plus every item under 1 MP
REFERENCE_SETS = {"composite", "solvay_up"}


def _extractor(detector: str):
    if detector == "reference":

        def run(items: dict[str, Path]) -> dict[str, list[dict]]:
            return xb.run_reference(items)["faces"]

        return run
    from facepipe.faces import ExtractSettings
    from facepipe.faces.batch import extract_many
    from facepipe.faces.detection import DetectSettings

    settings = ExtractSettings(detect=DetectSettings(detector=detector))

    def run(items: dict[str, Path]) -> dict[str, list[dict]]:
        out = {}
        for record in extract_many(list(items.items()), settings):  # one worker per core, as `facepipe index`
            key = record.image_key
            if not record.ok:
                raise RuntimeError(f"{key}: {record.reason}")
            out[key] = xb._faces_json([f.box for f in record.faces], [f.embedding for f in record.faces])
        return out

    return run


def child_main(detector: str, out_path: Path) -> None:
    from facepipe_tests import devset

    run = _extractor(detector)
    photos = {key: xb.DATA / src for key, src in xb.BENCH_PHOTOS.items()}
    started = time.perf_counter()
    faces = run(photos)
    seconds = time.perf_counter() - started
    q = xb.quality(SimpleNamespace(faces=faces, row=SimpleNamespace(photos="bench")))  # the photos at their size
    result: dict = {
        "detector": detector,
        "speed": {"photos": len(photos), "seconds": seconds, "faces": sum(len(v) for v in faces.values())},
        "quality": {k: getattr(q, k) for k in ("recall", "precision", "matched", "same_ok", "same_n", "diff_ok")}
        | {"diff_n": q.diff_n, "same_max": q.same_max, "diff_min": q.diff_min, "identity": q.identity},
        "per_photo": {k: len(v) for k, v in faces.items()},
        "sets": {},
    }
    items = devset.build()
    for name in SETS:
        chosen = [i for i in items if i.set == name]
        if detector == "reference" and name not in REFERENCE_SETS:
            continue
        if detector == "cnn":
            chosen = [i for i in chosen if i.name in CNN_ITEMS or i.width * i.height < 1e6]
        score = devset.SetScore()
        per_item = {}
        t0 = time.perf_counter()
        for item in chosen:
            found = run({item.name: Path(item.path)})[item.name]
            boxes = [tuple(f["box"]) for f in found]
            before = score.score.matched
            devset.score_item(item, boxes, score)
            matched = score.score.matched - before
            per_item[item.name] = {"found": len(boxes), "matched": matched, "truths": len(item.boxes)}
        elapsed = time.perf_counter() - t0
        result["sets"][name] = {
            "images": len(chosen),
            "megapixels": sum(i.width * i.height for i in chosen) / 1e6,
            "seconds": elapsed,
            "truths": score.score.truths,
            "matched": score.score.matched,
            "detections": score.score.detections,
            "false_positives": score.false_positives,
            "cut": [score.cut.matched, score.cut.truths],
            "buckets": {b: [s.matched, s.truths] for b, s in sorted(score.buckets.items())},
            "per_item": per_item,
        }
    result["peak_mb"] = peak_rss_bytes() / 2**20
    out_path.write_text(json.dumps(result))


def _pct(matched: int, total: int) -> str:
    return f"{matched / total:.2f} ({matched}/{total})" if total else "n/a"


def render(results: dict[str, dict], command: str, started: datetime, minutes: float) -> str:
    info = xb.machine()
    ref = results.get("reference")
    lines = [
        f"Command: `{command}` (run {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} min).  ",
        f"Machine: {info['cpu']}, {info['ram']} RAM, no GPU; Python {info['python']}; {info['dlib']}.  ",
        f"Load average: {info['load']} (the machine is shared: ratios measured in the same run are the claim).",
        "",
        "**17-photo extract_bench set** (end to end: facepipe with its worker pool, one process per core; "
        "the reference photo by photo, as its example does):",
        "",
        "| detector | photos/s | faces/s | x reference photos/s | training.xml recall | precision "
        "| same/diff-person | peak RSS MB |",
        "|---|--:|--:|--:|--:|--:|---|--:|",
    ]
    for name, r in results.items():
        s, q = r["speed"], r["quality"]
        pps = s["photos"] / s["seconds"]
        x = f"{pps / (ref['speed']['photos'] / ref['speed']['seconds']):.1f}x" if ref else ""
        ident = (
            f"{q['identity']:.2f} ({q['same_ok']}/{q['same_n']} same <= {q['same_max']:.3f}, "
            f"{q['diff_ok']}/{q['diff_n']} diff >= {q['diff_min']:.3f})"
            if q["identity"] is not None
            else "n/a"
        )
        lines.append(
            f"| {name} | {pps:.3f} | {s['faces'] / s['seconds']:.2f} | {x} | {q['recall']:.2f} ({q['matched']}) "
            f"| {q['precision']:.2f} | {ident} | {r['peak_mb']:.0f} |"
        )
    lines += [
        "",
        "**Development set** (facepipe_tests/devset.py; recall = matched/labelled at IoU >= 0.4, "
        "precision = matched/detections; face-free: false positives):",
        "",
        "| detector | set | images | MP | recall | precision | false pos. | cut by edge | 20-31 px | 32-47 px "
        "| 48-95 px | 96-200 px | 201+ px | s/MP |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, r in results.items():
        for set_name, s in r["sets"].items():
            b = s["buckets"]
            cells = [_pct(*b[k]) if k in b else "" for k in ("20-31", "32-47", "48-95", "96-200", "201+")]
            precision = f"{s['matched'] / s['detections']:.2f}" if s["detections"] else "n/a"
            lines.append(
                f"| {name} | {set_name} | {s['images']} | {s['megapixels']:.0f} | {_pct(s['matched'], s['truths'])} "
                f"| {precision} | {s['false_positives']} | {_pct(*s['cut'])} | {' | '.join(cells)} "
                f"| {s['seconds'] / s['megapixels']:.2f} |"
            )
    if ref:
        lines += ["", "**Default (yunet) vs the reference, labelled photo by photo** (faces matched):", ""]
        worse = []
        for set_name, s in ref["sets"].items():
            mine = results.get("yunet", {}).get("sets", {}).get(set_name, {}).get("per_item", {})
            for item, v in s["per_item"].items():
                if item in mine and mine[item]["matched"] < v["matched"]:
                    worse.append(f"{item}: yunet {mine[item]['matched']} < reference {v['matched']}")
        lines.append("; ".join(worse) if worse else "yunet matches at least as many labelled faces as the reference "
                     "on every composite and upscaled Solvay photo.")  # fmt: skip
    return "\n".join(lines) + "\n"


def replace_block(body: str) -> None:
    begin, end = "<!-- detect_bench:results begin -->", "<!-- detect_bench:results end -->"
    text = xb.BENCHMARKS_MD.read_text()
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = f"{text.rstrip()}\n\n## Detectors: `benchmarks/detect_bench.py`\n\n{block}\n"
    xb.BENCHMARKS_MD.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="+", choices=DETECTORS, default=DETECTORS)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", choices=DETECTORS)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--render", metavar="MINUTES", type=float, help="only re-render the last run's results")
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.out)
        return
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    if args.render is not None:  # the tables again from the saved results (e.g. after a format change)
        saved = {n: json.loads((Path(tempfile.gettempdir()) / f"detect_bench_{n}.json").read_text()) for n in args.only}
        replace_block(render(saved, "python benchmarks/detect_bench.py", started, args.render))
        return
    from facepipe_tests import devset

    devset.build()  # generated once, before any timing
    results = {}
    for name in args.only:
        out = Path(tempfile.gettempdir()) / f"detect_bench_{name}.json"
        subprocess.run([sys.executable, __file__, "--child", name, "--out", str(out)], check=True, cwd=REPO)
        results[name] = json.loads(out.read_text())
        print(f"{name}: {json.dumps({k: v for k, v in results[name].items() if k != 'sets'})}", flush=True)
    command = "python benchmarks/detect_bench.py" + (f" --only {' '.join(args.only)}" if args.only != DETECTORS else "")
    body = render(results, command, started, (time.perf_counter() - t0) / 60)
    print(body)
    if not args.no_write:
        replace_block(body)


if __name__ == "__main__":
    main()
