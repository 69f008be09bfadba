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
