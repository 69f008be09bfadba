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
    people = _refresh_people(report)
    if args.json:
        print(
            json.dumps(
                {
                    **report.__dict__,
                    "errors": [{"image_key": k, "reason": r} for k, r in report.errors],
                    "people": people,
                }
            )
        )
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
        if people.get("error"):
            print(f"  people: {people['error']}", file=sys.stderr)
    return 1 if report.failed_runs or people.get("error") else 0


def _refresh_people(report) -> dict:
    """The index runs cluster people as they go; deleted photos (no run) need one more pass."""
    from facepipe.people import People

    if not People().is_stale():  # checked before loading the Dagster definitions (~1.5 s of imports)
        return {"persons": len(People().list())}
    from facepipe.defs.people import refresh_people

    result = refresh_people()
    if result is not None and not result.success:
        return {"persons": None, "error": f"clustering people failed (run {result.run_id})"}
    return {"persons": len(People().list())}


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
    names = _names()
    for n, r in enumerate(results, 1):
        print(f"face {n} at (top, right, bottom, left) {r.box}:")
        for m in r.matches:
            person = f"  person {_who(m.person_id, names)}" if m.person_id else ""
            print(f"  {m.distance:.3f}  {m.image_key}  {list(m.box)}{person}")
        if not r.matches:
            print("  no match" + (f" within {args.max_distance}" if args.max_distance is not None else ""))
    return 0


def _names() -> dict:
    from facepipe.people import People

    return People().names()


def _who(person_id: str, names: dict) -> str:
    """`p3 (Ada Lovelace)`; a merged id shows as the person it was merged into."""
    pid, name = names.get(person_id, (person_id, None))
    return f"{pid} ({name})" if name else pid


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
    who = f"person {_who(person_id, _names())}" if person_id else "this face (in no person cluster)"
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


def cmd_people(args: argparse.Namespace) -> int:
    from facepipe.people import People, PeopleError, people_json

    people = People()
    try:
        if args.action == "name":
            person = people.name(args.person_id, args.name)
            print(f"{person.person_id} is now {person.name!r}" if person.name else f"{person.person_id} has no name")
            return 0
        if args.action == "merge":
            stores = _stores()
            try:
                person, moved = people.merge(args.keep, args.fold, stores=list(stores.values()))
            finally:
                for store in stores.values():
                    store.close()
            print(f"{args.fold} folded into {person.person_id}: {moved} faces moved, {person.faces} faces in all")
            return 0
    except PeopleError as exc:
        raise UsageError(str(exc)) from None
    persons = people.list()
    if args.json:
        print(json.dumps(people_json(persons)))
        return 0
    if not persons:
        print("No persons yet: `facepipe index` clusters the faces once photos are indexed.")
    for p in persons:
        shown = ", ".join(p.image_keys[:3]) + (f", ... ({len(p.image_keys)} photos)" if len(p.image_keys) > 3 else "")
        print(f"{p.person_id:>6}  {p.name or '-':24}  {p.faces:4} faces  {shown}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from facepipe.api import serve

    serve(host=args.host, port=args.port, store=args.store)
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from facepipe.forget import forget_person, forget_photos, remember_photos

    if args.undo:
        undone = remember_photos(args.image_keys)
        print(f"{len(undone)} photos will be indexed again by the next `facepipe index` or sensor tick.")
        return 0
    if args.person and args.image_keys:
        raise UsageError("give either IMAGE_KEY... or --person PERSON_ID, not both")
    if not args.person and not args.image_keys:
        raise UsageError("name the photos to forget (their image keys, as `facepipe status` shows them)")
    try:  # unknown keys or persons: the user's input
        if args.person:
            faces = forget_person(args.person)
            print(f"Forgot person {args.person}: {faces} faces erased from the Parquet, both stores and the clusters.")
        else:
            erased = forget_photos(args.image_keys)
            print(f"Forgot {len(erased)} photos; they stay out of the index until `facepipe forget --undo KEY`.")
    except KeyError as exc:
        raise UsageError(str(exc).strip("'\"")) from None
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
    index.add_argument(
        "--repair", action="store_true", help="compare the stores with the Parquet first and re-export what differs"
    )
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

    people = sub.add_parser("people", help="the person clusters, with counts; name or merge persons")
    people.add_argument("--json", action="store_true")
    people.set_defaults(func=cmd_people)
    actions = people.add_subparsers(dest="action")
    name = actions.add_parser("name", help="name a person (an empty NAME removes the name)")
    name.add_argument("person_id")
    name.add_argument("name")
    merge = actions.add_parser("merge", help="fold person B into person A (kept across re-clustering)")
    merge.add_argument("keep", metavar="A")
    merge.add_argument("fold", metavar="B")

    serve = sub.add_parser("serve", help="HTTP API and search page")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--store", choices=stores, default="qdrant")
    serve.set_defaults(func=cmd_serve)

    forget = sub.add_parser("forget", help="erase photos, or a person, from everything facepipe keeps")
    forget.add_argument("image_keys", nargs="*", metavar="IMAGE_KEY")
    forget.add_argument("--person", metavar="PERSON_ID", help="erase every face of this person instead")
    forget.add_argument("--undo", action="store_true", help="let forgotten photos be indexed again")
    forget.set_defaults(func=cmd_forget)

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
