"""The `facepipe` command (the sub-commands and their flags are a contract, see README).

Query commands (`search`, `person`, `people`, `status`, `serve`) never import Dagster; `index` on an
unchanged library answers from the manifest before it does.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from facepipe import settings as settings_module
from facepipe.library import Library, LibraryError
from facepipe.manifest import SyncPlan
from facepipe.statedb import StateError
from facepipe.statefiles import StateFileError
from facepipe.stores import registry
from facepipe.stores.base import StoreError


class UsageError(Exception):
    """Bad input from the user: exit code 2 with a clear message."""


def one_line(text: str) -> str:
    """A driver's multi-line message (psycopg adds hints on new lines) as one line."""
    return " ".join(text.split())


def _library(folder: str | None = None) -> Library:
    return Library.open(settings_module.current(), folder)


def cmd_index(args: argparse.Namespace) -> int:
    from facepipe import sync

    started = time.perf_counter()
    if args.folder and not Path(args.folder).is_dir():
        raise UsageError(f"{args.folder} is not a folder")
    if args.images_moved and not args.folder:
        raise UsageError("--images-moved needs the FOLDER the photos are in now")
    library = _library(args.folder)
    if args.images_moved:
        library.move_root(args.folder)
    library.check_root()
    diff = library.manifest.diff()
    if not (args.repair or args.confirm_deletions) and _up_to_date(library, diff):
        library.record()
        images = len(library.manifest.keys())
        if args.json:
            print(json.dumps({**_empty_report(images), "seconds": time.perf_counter() - started}))
        else:
            print(f"Nothing to do: {images} images unchanged in {time.perf_counter() - started:.1f}s ({library.root}).")
        return 0
    from facepipe import warmup

    show = (not args.quiet and sys.stderr.isatty()) or args.progress
    settings_module.export_dagster_home(library.settings)  # here: no thread writes the environment later
    first = warmup.first_photos(library, diff)  # extracted while Dagster loads
    try:
        with warmup.started(library, first, partial(_load_dagster, library)) as loaded:
            from facepipe.defs.indexer import run_index  # imported by now, on the Dagster thread

            report = run_index(
                library,
                show_progress=show,
                repair=args.repair,
                confirm_deletions=args.confirm_deletions,
                diff=diff,
                loaded=loaded,
            )
    except sync.DeletionsHeld as exc:
        print(f"facepipe: {exc}", file=sys.stderr)
        return 1
    report.seconds = time.perf_counter() - started  # the command's, not only the runs' (Dagster loads first)
    if args.json:
        doc = {**report.__dict__, "errors": [{"image_key": k, "reason": r} for k, r in report.errors]}
        print(json.dumps(doc))
    else:
        print(_summary(report, library))
        for key, reason in report.errors:
            print(f"  error: {key}: {reason}")
        for run in report.failed_runs:
            print(f"  failed run: {run}", file=sys.stderr)
        if report.people.get("error"):
            print(f"  people: {report.people['error']}", file=sys.stderr)
    return 1 if report.failed_runs or report.people.get("error") else 0


def _load_dagster(library: Library):
    """Import Dagster, open the instance `facepipe index` runs against and resolve its job (on a thread
    of its own)."""
    from facepipe.defs.indexer import load

    return load(library)


def _up_to_date(library: Library, diff: SyncPlan) -> bool:
    """Folder, manifest, stores, people and compaction agree, and the Dagster home exists: no Dagster needed."""
    from facepipe import heal, sync

    if not (library.settings.dagster_home_path / "dagster.yaml").exists():
        return False
    if sync.nothing_to_do(library, diff) is None or library.people.is_stale() or library.compactor.is_stale():
        return False
    with library:  # one count per store and a stat per Parquet file: a lost store or file is healed now
        return heal.looks_whole(library)


def _empty_report(images: int) -> dict:
    return {
        "images": images,
        "processed": 0,
        "faces": 0,
        "new": 0,
        "changed": 0,
        "deleted": 0,
        "errors": [],
        "failed_runs": [],
        "repaired": [],
        "damaged": [],
        "people": {},
    }


def _summary(report, library: Library) -> str:
    took = f"in {report.seconds:.1f}s ({library.root})."
    if report.processed == 0 and not report.failed_runs:
        if report.repaired:
            again = len(report.repaired)
            return f"Exported {again} photos again to stores that lost them; {report.images} images {took}"
        if report.deleted:
            return f"Erased {report.deleted} deleted photos; {report.images} images unchanged {took}"
        return f"Nothing to do: {report.images} images unchanged {took}"
    return (
        f"Indexed {report.processed} of {report.images} images ({report.new} new, {report.changed} changed, "
        f"{report.deleted} deleted): {report.faces} faces, {len(report.errors)} errors {took}"
    )


def _read_query(path: str) -> bytes:
    file = Path(path)
    if file.is_dir():
        raise UsageError(
            f"{path} is a folder: give one photo to search with (`facepipe index {path}` indexes a folder)"
        )
    if not file.is_file():
        raise UsageError(f"{path}: no such file")
    return file.read_bytes()


@contextmanager
def _query_photo(args: argparse.Namespace) -> Iterator[tuple[Library, bytes]]:
    """The library and the query photo's bytes; a photo that cannot be read is bad input (exit 2)."""
    from facepipe.query import QueryImageError

    with _library() as library:
        try:
            yield library, _read_query(args.image)
        except QueryImageError as exc:
            raise UsageError(f"{args.image}: {exc}") from None


def cmd_search(args: argparse.Namespace) -> int:
    from facepipe import query

    with _query_photo(args) as (library, photo):
        store, extract = library.store(args.store), library.settings.extract
        results = query.search(photo, store, args.top_k, args.max_distance, extract)
        names = library.people.names()
    if not results:
        print(query.no_face_found(args.image), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps([[_match_json(m, names, r.box) for m in r.matches] for r in results]))
        return 0
    for n, r in enumerate(results, 1):
        print(f"face {n} at (top, right, bottom, left) {r.box}:")
        for m in r.matches:
            person = f"  person {_who(m.person_id, names)}" if m.person_id else ""
            print(f"  {m.distance:.3f}  {m.image_key}  {list(m.box)}{person}")
        if not r.matches:
            print("  no match" + (f" within {args.max_distance}" if args.max_distance is not None else ""))
    return 0


def _who(person_id: str, names: dict) -> str:
    """`p3 (Ada Lovelace)`; a merged id shows as the person it was merged into."""
    pid, name = names.get(person_id, (person_id, None))
    return f"{pid} ({name})" if name else pid


def _match_json(m, names: dict, query_box) -> dict:
    """The DESIGN's match fields plus what the HTTP API adds: the person (as it now is) and the query face's box."""
    pid, name = names.get(m.person_id, (m.person_id, None)) if m.person_id else (None, None)
    return {
        "image_key": m.image_key,
        "face_id": m.face_id,
        "box": list(m.box),
        "distance": round(m.distance, 6),
        "person_id": pid,
        "name": name,
        "query_box": [int(v) for v in query_box],
    }


def cmd_person(args: argparse.Namespace) -> int:
    from facepipe import query

    with _query_photo(args) as (library, photo):
        faces = query.faces_in(photo, library.settings.extract)
        if not faces:
            print(query.no_face_found(args.image), file=sys.stderr if args.json else sys.stdout)
            person_id, photos = None, []
        else:
            store = library.store(args.store)
            person_id, photos = query.person_of_face(faces[0], store, library.parquet, args.max_distance)
        pid, name = library.people.names().get(person_id, (person_id, None)) if person_id else (None, None)
    if args.json:
        doc = [
            {"image_key": p.image_key, "distance": round(p.distance, 6), "person_id": pid, "name": name} for p in photos
        ]
        print(json.dumps(doc))
        return 0
    if not faces:
        return 0
    who = f"person {pid} ({name})" if name else f"person {pid}" if pid else "this face (in no person cluster)"
    print(f"{len(photos)} photos of {who}:")
    for p in photos:
        print(f"  {p.distance:.3f}  {p.image_key}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from facepipe import query

    if args.list:
        return _status_list(args)
    with _library() as library:
        doc = query.status(library.parquet, library.stores())
    if args.json:
        print(json.dumps(doc))
        return 0
    print(f"{doc['images']} images, {len(doc['errors'])} errors ({library.banner()})")
    for name in ("parquet", *registry.names()):
        entry = doc[name]
        print(
            f"  {name:9} {entry['faces'] if entry['faces'] is not None else 'unavailable'} faces"
            + (f"  ({entry['error']})" if entry.get("error") else "")
        )
    for err in doc["errors"]:
        print(f"  error: {err['image_key']}: {err['reason']}")
    for path in doc["parquet"].get("damaged", []):
        print(f"  damaged: {path} (left out of the counts; `facepipe index` extracts its photo again)")
    return 0


def _status_list(args: argparse.Namespace) -> int:
    """`status --list images|errors`: the keys themselves, one a line (or a JSON list), from the Parquet alone."""
    library = _library()
    rows = library.parquet.images(["image_key", "status", "reason"]).sort_by("image_key").to_pylist()
    if args.list == "errors":
        errors = [{"image_key": r["image_key"], "reason": r["reason"]} for r in rows if r["status"] != "ok"]
        print(json.dumps(errors) if args.json else "\n".join(f"{e['image_key']}: {e['reason']}" for e in errors))
    else:
        keys = [r["image_key"] for r in rows]
        print(json.dumps(keys) if args.json else "\n".join(keys))
    return 0


def cmd_people(args: argparse.Namespace) -> int:
    from facepipe.people import PeopleError, people_json

    library = _library()
    people = library.people
    try:
        if args.action:
            return _people_edit(args, library)
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
        hidden = " (hidden)" if p.hidden else ""
        print(f"{p.person_id:>6}  {(p.name or '-') + hidden:24}  {p.faces:4} faces  {shown}")
    return 0


def _people_edit(args: argparse.Namespace, library: Library) -> int:
    """`facepipe people ACTION ...`: the same People methods the HTTP API calls, logged as this user."""
    import getpass

    people, who = library.people, f"cli {getpass.getuser()}"
    if args.action == "name":
        person = people.name(args.person_id, args.name, who=who)
        print(f"{person.person_id} is now {person.name!r}" if person.name else f"{person.person_id} has no name")
    elif args.action == "hide":
        person = people.hide(args.person_id, not args.show, who=who)
        print(f"{person.person_id} is {'hidden' if person.hidden else 'shown'}")
    elif args.action == "merge":
        with library:
            person, moved = people.merge_all(args.keep, args.fold, list(library.stores().values()), who)
        print(
            f"{', '.join(args.fold)} folded into {person.person_id}: {moved} faces moved, {person.faces} faces in all"
        )
    elif args.action == "split":
        with library:
            person = people.split(args.person_id, args.face_ids, list(library.stores().values()), who)
        print(f"{len(args.face_ids)} faces of {args.person_id} are now {person.person_id}")
    elif args.action == "move":
        target = None if args.to.lower() in ("none", "-") else args.to
        with library:
            person = people.move(args.face_id, target, list(library.stores().values()), who)
        print(f"face {args.face_id} is now in {person.person_id if person else 'no person'}")
    elif args.action == "log":
        edits = people.log(args.limit)
        if args.json:
            print(json.dumps(edits))
            return 0
        for e in edits:
            undone = f"  (undone {e['undone_at']})" if e["undone_at"] else ""
            print(f"{e['id']:>5}  {e['at']}  {e['who']:16}  {e['action']:7} {json.dumps(e['detail'])}{undone}")
        if not edits:
            print("No people edits yet.")
    elif args.action == "undo":
        with library:
            undone = people.undo(args.n, list(library.stores().values()))
        for e in undone:
            print(f"undid {e['id']}: {e['action']} {json.dumps(e['detail'])}")
        if not undone:
            print("Nothing to undo.")
    elif args.action == "review":
        found = people.suggestions(args.limit)
        if args.json:
            print(json.dumps(found))
            return 0
        for s in found:
            what = (
                f"{s['person_id']} ~ {s['other_id']}"
                if s["kind"] == "persons"
                else f"face {s['face_id']} ~ {s['person_id']}"
            )
            print(f"  {s['distance']:.3f}  {what}")
        if not found:
            print("Nothing to review.")
    elif args.action == "evaluate":
        report = people.evaluate()
        if args.json:
            print(json.dumps(report))
            return 0
        print(f"{report['faces']} faces of {report['names']} named persons (the labels); pairwise scores:")
        for r in report["sweep"]:
            mark = "  <- best" if r == report["best"] else ""
            mark += "  (current)" if report["current"] and r == report["current"] else ""
            print(
                f"  threshold {r['threshold']:.2f}: precision {r['precision']:.3f}  recall {r['recall']:.3f}  "
                f"F1 {r['f1']:.3f}{mark}"
            )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from facepipe.api.app import PortInUse, serve

    try:
        serve(_library(), host=args.host, port=args.port, store=args.store)
    except PortInUse as exc:
        print(f"facepipe: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from facepipe import forget

    library = _library()
    if args.undo:
        undone = forget.remember_photos(library, args.image_keys)
        print(f"{len(undone)} photos will be indexed again by the next `facepipe index` or sensor tick.")
        return 0
    if args.person and args.image_keys:
        raise UsageError("give either IMAGE_KEY... or --person PERSON_ID, not both")
    if not args.person and not args.image_keys:
        raise UsageError("name the photos to forget (their image keys, as `facepipe status --list images` shows them)")
    try:  # unknown keys or persons: the user's input
        if args.dry_run:
            return _forget_dry_run(library, args)
        with library:
            if args.person:
                faces = forget.forget_person(library, args.person)
                print(
                    f"Forgot person {args.person}: {faces} faces erased from the Parquet, every store and the clusters."
                )
                return 0
            erased = forget.forget_photos(library, args.image_keys)
    except KeyError as exc:
        raise UsageError(str(exc).strip("'\"")) from None
    _drop_partitions(library, erased)
    print(f"Forgot {len(erased)} photos; they stay out of the index until `facepipe forget --undo KEY`.")
    return 0


def _forget_dry_run(library: Library, args: argparse.Namespace) -> int:
    """What `forget` would erase, and nothing erased."""
    from facepipe import forget

    if args.person:
        person_id, faces = forget.faces_of_person(library, args.person)
        photos = sorted(set(faces.values()))
        print(f"Would forget person {person_id}: {len(faces)} faces in {len(photos)} photos (the photos stay):")
        for key in photos:
            print(f"  {key}")
    else:
        photos = forget.photos_to_forget(library, args.image_keys)
        print(f"Would forget {len(photos)} photos:")
        for key, faces in photos.items():
            print(f"  {key}  ({faces} faces)")
    print("Nothing was erased (--dry-run).")
    return 0


def _drop_partitions(library: Library, keys: list[str]) -> None:
    """Dagster's own records of the erased photos: their partitions and, where possible, their events."""
    from facepipe.defs.partitions import forget_partitions

    forget_partitions(library.settings, keys)


def cmd_compact(args: argparse.Namespace) -> int:
    """Rewrite every store's files now, so nothing of an erased face waits for the store's own vacuum."""
    with _library() as library:
        for name, store in library.stores().items():
            compact = getattr(store, "compact", None)
            if compact is None:
                print(f"  {name}: nothing to compact")
                continue
            report = compact(progress=not args.quiet and sys.stderr.isatty())
            print(f"  {name}: compacted ({', '.join(f'{k} {v}' for k, v in report.items())})")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    import os

    from facepipe.defs.instance import ensure_dagster_home

    library = _library()
    ensure_dagster_home(library.settings)
    root = Path(__file__).resolve().parent.parent
    beside = Path(sys.executable).parent / "dagster"  # the venv's, even when the venv is not activated
    dagster = str(beside) if beside.exists() else "dagster"
    print(f"facepipe: Dagster UI on http://127.0.0.1:{args.port}/ for {library.banner()}", file=sys.stderr)
    os.execvp(dagster, [dagster, "dev", "-w", str(root / "workspace.yaml"), "-p", str(args.port)])
    return 0  # pragma: no cover


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's default in its help, except where there is none to show (None, an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or isinstance(action, argparse._VersionAction):
            return action.help
        return super()._get_help_string(action)


def _at_least_one(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more (got {value})")
    return value


def _port(text: str) -> int:
    value = _integer(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535 (got {value})")
    return value


def _distance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"a distance is 0 or more (got {text})")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from facepipe import __version__

    parser = argparse.ArgumentParser(prog="facepipe", description=__doc__, formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"facepipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=_Help)

    index = command("index", "process every new, changed or deleted image once, in-process")
    index.add_argument(
        "folder",
        nargs="?",
        help="images folder; when omitted, the one the library recorded, else $FACEPIPE_IMAGES or data/images",
    )
    index.add_argument("--json", action="store_true", help="print the summary as JSON")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.add_argument("--progress", action="store_true", help="progress bar even when not on a terminal")
    index.add_argument(
        "--repair", action="store_true", help="compare the stores with the Parquet first and re-export what differs"
    )
    index.add_argument(
        "--images-moved",
        action="store_true",
        help="the library's photos now live in FOLDER: re-root it, keeping the faces of files that match",
    )
    index.add_argument(
        "--confirm-deletions",
        action="store_true",
        help="erase photos gone from the folder even when that is all of them or more than FACEPIPE_MAX_DELETE_SHARE",
    )
    index.set_defaults(func=cmd_index)

    stores = registry.names()
    store_help = "vector store to ask"
    json_help = "print one JSON document on stdout"
    search = command("search", "faces most similar to each face in IMAGE")
    search.add_argument("image", help="the photo to search with")
    search.add_argument("--top-k", type=_at_least_one, default=10, help="matches per query face")
    search.add_argument("--store", choices=stores, default=stores[0], help=store_help)
    search.add_argument(
        "--max-distance", type=_distance, default=None, help="drop matches farther than this (when omitted: none)"
    )
    search.add_argument("--json", action="store_true", help=json_help)
    search.set_defaults(func=cmd_search)

    person = command("person", "images that contain the person in IMAGE (its largest face)")
    person.add_argument("image", help="a photo of the person")
    person.add_argument("--store", choices=stores, default=stores[0], help=store_help)
    person.add_argument("--max-distance", type=_distance, default=0.6, help="farthest face still counted as them")
    person.add_argument("--json", action="store_true", help=json_help)
    person.set_defaults(func=cmd_person)

    status = command("status", "images, faces, errors, per store")
    status.add_argument("--json", action="store_true", help=json_help)
    status.add_argument(
        "--list", choices=["images", "errors"], default=None, help="print these image keys instead, one a line"
    )
    status.set_defaults(func=cmd_status)

    people = command("people", "the person clusters, with counts; name, merge, split, move, hide, review, undo")
    people.add_argument("--json", action="store_true", help=json_help)
    people.set_defaults(func=cmd_people)
    actions = people.add_subparsers(dest="action")

    def action(name: str, text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, help=text, description=text, formatter_class=_Help)

    person_help = "the person, as `facepipe people` lists them"
    name = action("name", "name a person (an empty NAME removes the name)")
    name.add_argument("person_id", help=person_help)
    name.add_argument("name", help="the new name")
    merge = action("merge", "fold persons B... into person A (kept across re-clustering)")
    merge.add_argument("keep", metavar="A", help="the person kept")
    merge.add_argument("fold", metavar="B", nargs="+", help="the persons folded into A")
    split = action("split", "move these faces of PERSON to a new person (kept apart from then on)")
    split.add_argument("person_id", metavar="PERSON", help=person_help)
    split.add_argument("face_ids", metavar="FACE_ID", nargs="+", help="faces of PERSON (ids as in --json output)")
    move = action("move", "put one face in PERSON, or in no person with `none`")
    move.add_argument("face_id", metavar="FACE_ID", help="the face")
    move.add_argument("to", metavar="PERSON", help="the person it is, or `none`")
    hide = action("hide", "hide a person from the people page")
    hide.add_argument("person_id", metavar="PERSON", help=person_help)
    hide.add_argument("--show", action="store_true", help="show a hidden person again")
    log = action("log", "the people edits, newest first (who, when, what)")
    log.add_argument("--limit", type=_at_least_one, default=50, help="edits shown")
    log.add_argument("--json", action="store_true", help=json_help)
    undo = action("undo", "revert the last N people edits")
    undo.add_argument("n", metavar="N", nargs="?", type=_at_least_one, default=1, help="how many edits")
    review = action("review", '"maybe the same person" suggestions, nearest first')
    review.add_argument("--limit", type=_at_least_one, default=50, help="suggestions shown")
    review.add_argument("--json", action="store_true", help=json_help)
    evaluate = action("evaluate", "pairwise precision/recall of the clustering on the persons you named, per threshold")
    evaluate.add_argument("--json", action="store_true", help=json_help)

    serve = command("serve", "HTTP API and search page")
    serve.add_argument("--port", type=_port, default=8000, help="TCP port to listen on")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback: this machine only)")
    serve.add_argument("--store", choices=stores, default=stores[0], help=store_help)
    serve.set_defaults(func=cmd_serve)

    forget = command("forget", "erase photos, or a person, from everything facepipe keeps")
    forget.add_argument("image_keys", nargs="*", metavar="IMAGE_KEY", help="the photos to erase")
    forget.add_argument("--person", metavar="PERSON_ID", help="erase every face of this person instead")
    forget.add_argument("--undo", action="store_true", help="let forgotten photos be indexed again")
    forget.add_argument("--dry-run", action="store_true", help="list what would be erased, erase nothing")
    forget.set_defaults(func=cmd_forget)

    compact = command("compact", "rewrite the stores' files now, so no byte of a forgotten face remains in them")
    compact.add_argument("--quiet", action="store_true", help="no progress bar")
    compact.set_defaults(func=cmd_compact)

    ui = command("ui", "open the Dagster UI (dagster dev) on this project")
    ui.add_argument("--port", type=_port, default=3000, help="TCP port of the UI")
    ui.set_defaults(func=cmd_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        settings_module.reload()  # each command sees the environment as it is now
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, LibraryError, settings_module.SettingsError, StateFileError) as exc:
        print(f"facepipe: {exc}", file=sys.stderr)
        return 2
    except (StoreError, StateError) as exc:  # a store or the state's Postgres down: named, no traceback
        print(f"facepipe: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
