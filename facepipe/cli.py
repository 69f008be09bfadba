"""The `facepipe` command (the sub-commands and their flags are a contract, see README)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


class UsageError(Exception):
    """Bad input from the user: exit code 2 with a clear message."""


def cmd_index(args: argparse.Namespace) -> int:
    if args.folder:
        folder = Path(args.folder)
        if not folder.is_dir():
            raise UsageError(f"{folder} is not a folder")
        os.environ["FACEPIPE_IMAGES"] = str(folder.resolve())
    from facepipe.runner import run_index

    report = run_index(show_progress=(not args.quiet and sys.stderr.isatty()) or args.progress)
    if args.json:
        print(json.dumps({**report.__dict__, "errors": [{"image_key": k, "reason": r} for k, r in report.errors]}))
    else:
        if report.processed == 0 and not report.failed_runs:
            print(
                f"Nothing to do: {report.images} images unchanged ({report.deleted} deleted) in {report.seconds:.1f}s."
            )
        else:
            print(
                f"Indexed {report.processed} of {report.images} images ({report.new} new, {report.changed} changed, "
                f"{report.deleted} deleted): {report.faces} faces, {len(report.errors)} errors "
                f"in {report.seconds:.1f}s."
            )
        for key, reason in report.errors:
            print(f"  error: {key}: {reason}")
        for run in report.failed_runs:
            print(f"  failed run: {run}", file=sys.stderr)
    return 1 if report.failed_runs else 0


def _stores() -> dict:
    from facepipe.stores import stores_from_env

    qdrant, pgvector = stores_from_env()
    return {"qdrant": qdrant, "pgvector": pgvector}


def _read_query(path: str) -> bytes:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{path}: no such file")
    return file.read_bytes()


def cmd_search(args: argparse.Namespace) -> int:
    from facepipe import query

    store = _stores()[args.store]
    try:
        results = query.search(_read_query(args.image), store, args.top_k, args.max_distance)
    except query.QueryImageError as exc:
        raise UsageError(f"{args.image}: {exc}") from None
    finally:
        store.close()
    if args.json:
        print(json.dumps([[_match_json(m) for m in r.matches] for r in results]))
        return 0
    if not results:
        print(f"No face found in {args.image}.")
    for n, r in enumerate(results, 1):
        print(f"face {n} at (top, right, bottom, left) {r.box}:")
        for m in r.matches:
            person = f"  person {m.person_id}" if m.person_id else ""
            print(f"  {m.distance:.3f}  {m.image_key}  {list(m.box)}{person}")
        if not r.matches:
            print("  no match" + (f" within {args.max_distance}" if args.max_distance is not None else ""))
    return 0


def _match_json(m) -> dict:
    return {"image_key": m.image_key, "face_id": m.face_id, "box": list(m.box), "distance": round(m.distance, 6)}


def cmd_person(args: argparse.Namespace) -> int:
    from facepipe import query
    from facepipe.defs.resources import parquet_from_env

    store = _stores()[args.store]
    try:
        person_id, photos = query.person(_read_query(args.image), store, parquet_from_env(), args.max_distance)
    except query.QueryImageError as exc:
        raise UsageError(f"{args.image}: {exc}") from None
    finally:
        store.close()
    if args.json:
        print(json.dumps([{"image_key": p.image_key, "distance": round(p.distance, 6)} for p in photos]))
        return 0
    who = f"person {person_id}" if person_id else "this face (no person cluster yet)"
    print(f"{len(photos)} photos of {who}:")
    for p in photos:
        print(f"  {p.distance:.3f}  {p.image_key}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from facepipe import query
    from facepipe.defs.resources import parquet_from_env

    stores = _stores()
    try:
        doc = query.status(parquet_from_env(), stores)
    finally:
        for store in stores.values():
            store.close()
    if args.json:
        print(json.dumps(doc))
        return 0
    print(f"{doc['images']} images, {len(doc['errors'])} errors")
    for name in ("parquet", "qdrant", "pgvector"):
        entry = doc[name]
        print(
            f"  {name:9} {entry['faces'] if entry['faces'] is not None else 'unavailable'} faces"
            + (f"  ({entry['error']})" if entry.get("error") else "")
        )
    for err in doc["errors"]:
        print(f"  error: {err['image_key']}: {err['reason']}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from facepipe.runner import ensure_dagster_home

    ensure_dagster_home()
    root = Path(__file__).resolve().parent.parent
    os.execvp("dagster", ["dagster", "dev", "-w", str(root / "workspace.yaml"), "-p", str(args.port)])
    return 0  # pragma: no cover


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facepipe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    index = sub.add_parser("index", help="process every new, changed or deleted image once, in-process")
    index.add_argument("folder", nargs="?", help="images folder (default: $FACEPIPE_IMAGES or data/images)")
    index.add_argument("--json", action="store_true", help="print the summary as JSON")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.add_argument("--progress", action="store_true", help="progress bar even when not on a terminal")
    index.set_defaults(func=cmd_index)

    stores = ("qdrant", "pgvector")
    search = sub.add_parser("search", help="faces most similar to each face in IMAGE")
    search.add_argument("image")
    search.add_argument("--top-k", type=int, default=10)
    search.add_argument("--store", choices=stores, default="qdrant")
    search.add_argument("--max-distance", type=float, default=None)
    search.add_argument("--json", action="store_true")
    search.set_defaults(func=cmd_search)

    person = sub.add_parser("person", help="images that contain the person in IMAGE (its largest face)")
    person.add_argument("image")
    person.add_argument("--store", choices=stores, default="qdrant")
    person.add_argument("--max-distance", type=float, default=0.6)
    person.add_argument("--json", action="store_true")
    person.set_defaults(func=cmd_person)

    status = sub.add_parser("status", help="images, faces, errors, per store")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on this project")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"facepipe: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
