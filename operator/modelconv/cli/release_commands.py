"""`modelconv verify`, `modelconv releases` and `modelconv promote`: work with published releases.

A release is addressed by its location, the store URL followed by model and version:

    modelconv verify   s3://bucket/prefix/MODEL/VERSION     (or DIR/MODEL/VERSION)
    modelconv releases s3://bucket/prefix/MODEL
    modelconv promote  s3://bucket/prefix/MODEL/VERSION CHANNEL

These are the locations that `modelconv run` and `modelconv releases` print, so a release
can be copied from one command to the next. Exit codes: 0 success, 1 failure (release not
found, integrity or store failure), 2 invalid input (an invalid model, version or channel).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import PurePosixPath
from typing import Callable

from ..errors import (
    EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, INVALID_ARGUMENT, ConversionError, InvalidSpec,
)

OUTPUT_CHOICES = ("text", "json")
DEBUG_HINT = "rerun with `modelconv --debug ...` to see the stack trace"


def register(subparsers) -> None:
    verify = subparsers.add_parser(
        "verify",
        help="download a release and check every file against its manifest",
        description=(
            "Download every file of a published release and check its size and SHA-256 against"
            " manifest.json. Exit codes: 0 verified, 1 missing or differing files, 2 invalid"
            " location."
        ),
    )
    verify.add_argument("release", metavar="STORE/MODEL/VERSION",
                        help="release location, e.g. s3://bucket/prefix/mobilenet/1.2.0")
    _add_output(verify)
    verify.set_defaults(func=_guarded(verify_command))

    releases = subparsers.add_parser(
        "releases",
        help="list the published versions and channels of a model",
        description="List the versions of a model recorded in its index, and its channels.",
    )
    releases.add_argument("model", metavar="STORE/MODEL",
                          help="model location, e.g. s3://bucket/prefix/mobilenet")
    _add_output(releases)
    releases.set_defaults(func=_guarded(releases_command))

    promote = subparsers.add_parser(
        "promote",
        help="point a channel at a published version",
        description=(
            "Point CHANNEL (e.g. stable) at a published version. A version whose manifest.json"
            " is missing is rejected: its publish never finished."
        ),
    )
    promote.add_argument("release", metavar="STORE/MODEL/VERSION",
                         help="release location, e.g. s3://bucket/prefix/mobilenet/1.2.0")
    promote.add_argument("channel", metavar="CHANNEL", help="channel name, e.g. stable")
    _add_output(promote)
    promote.set_defaults(func=_guarded(promote_command))


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", choices=OUTPUT_CHOICES, default="text",
        help="json: print one JSON document on stdout instead of text",
    )


# --- commands ---------------------------------------------------------------------------


def verify_command(args: argparse.Namespace) -> int:
    from ..release import ReleaseIntegrityError, verify_release

    store, (model, version) = split_location(args.release, ("model", "version"))
    try:
        report = verify_release(store, model, version)
    except ReleaseIntegrityError as error:
        _print_report(error.report, args.output)
        raise
    _print_report(report, args.output)
    return EXIT_OK


def releases_command(args: argparse.Namespace) -> int:
    from ..release import RELEASE_NOT_FOUND, list_releases

    store, (model,) = split_location(args.model, ("model",))
    catalog = list_releases(store, model)
    if not catalog.versions and not catalog.channels and not catalog.unindexed:
        raise ConversionError(
            RELEASE_NOT_FOUND, f"{catalog.location} has no releases (no index.json): check the "
            "store URL and the model name"
        )
    if args.output == "json":
        print(json.dumps({"succeeded": True, **catalog.to_dict()}, indent=2))
        return EXIT_OK
    rows = [("VERSION", "CREATED", "CHANNELS", "MANIFEST SHA256")]
    for entry in catalog.versions:
        rows.append((entry.version, entry.created_at, ",".join(entry.channels) or "-",
                     entry.manifest_sha256))
    count = len(catalog.versions)
    print(f"{catalog.location}: {count} version{'' if count == 1 else 's'}")
    _print_table(rows)
    for version in catalog.unindexed:
        print(
            f"{version}: published (manifest.json exists) but not in index.json, because its"
            f" publish stopped early. Run the same `modelconv run` again, or `modelconv promote"
            f" {catalog.location}/{version} CHANNEL`, to record it"
        )
    return EXIT_OK


def promote_command(args: argparse.Namespace) -> int:
    from ..release import promote

    from ..release.manifest import check_release_names

    store, (model, version) = split_location(args.release, ("model", "version"))
    try:
        check_release_names(model, channels=[args.channel])
    except InvalidSpec as error:
        # The rule is that of spec.publish.channels, but the value came from the command line.
        raise InvalidSpec("CHANNEL", error.message.removeprefix(f"{error.path}: ")) from None
    pointer = promote(store, model, version, args.channel)
    if args.output == "json":
        print(json.dumps({"succeeded": True, "model": model, **pointer.to_dict()}, indent=2))
        return EXIT_OK
    moved = f" (was {pointer.previous_version})" if pointer.previous_version else ""
    print(f"{model}: channel {pointer.channel} -> {pointer.version}{moved}")
    return EXIT_OK


# --- locations, output and errors -------------------------------------------------------


def split_location(location: str, names: tuple[str, ...]):
    """Split `STORE/<names...>` into the opened store and the trailing segments.

    Raises InvalidSpec when the location has no store root before the segments.
    """
    from ..store import open_store

    if names[-1] == "version" and location.rstrip("/").endswith("/manifest.json"):
        folder = location.rstrip("/").removesuffix("/manifest.json")
        raise InvalidSpec(
            "", f"{location!r} is the manifest file. Give the release folder, {folder!r}"
        )
    parts = location.rstrip("/").rsplit("/", len(names))
    store_url, segments = parts[0], tuple(parts[1:])
    bucket = store_url.removeprefix("s3://") if store_url.startswith("s3://") else "-"
    if len(segments) != len(names) or not all(segments) or not bucket or store_url in (
        "", "s3:", "s3:/", "file:", "file:/", "file://"
    ):
        example = "/".join(name.upper() for name in names)
        raise InvalidSpec(
            "", f"{location!r} is not a release location: write STORE/{example}, e.g. "
            f"s3://bucket/prefix/{example} or ./releases/{example}"
        )
    return open_store(store_url), segments


def _print_report(report, output: str) -> None:
    if output == "json":
        print(json.dumps({"succeeded": report.ok, **report.to_dict()}, indent=2))
        return
    status = "verified" if report.ok else "FAILED"
    print(f"{status} {report.location} (manifest sha256 {report.manifest_sha256})")
    rows = [("FILE", "SIZE", "SHA256", "STATUS")]
    for check in report.files:
        rows.append((check.name, str(check.expected_size), check.expected_sha256,
                     check.problem or "ok"))
    _print_table(rows)
    for problem in report.problems:
        print(f"problem: {problem}")
    from ..store.folder import TEMP_PREFIX

    for name in report.unlisted:
        if PurePosixPath(name).name.startswith(TEMP_PREFIX):
            print(f"note: {name} is a temporary file of a stopped write; readers ignore it,"
                  " and it can be deleted")
        else:
            print(f"note: {name} is in the release folder but not in the manifest (ignored)")


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Wrap a command: a classified failure becomes one line on stderr and its exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ConversionError as error:
            if args.debug:
                traceback.print_exception(error, file=sys.stderr)
            if args.output == "json" and not hasattr(error, "report"):
                print(json.dumps({"succeeded": False, "reason": error.reason,
                                  "message": error.message}, indent=2))
            print(f"modelconv: {error.reason}: {error.message}", file=sys.stderr)
            return error.exit_code
        except BrokenPipeError:
            raise  # the reader went away (`| head`); main() exits quietly
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as error:
            # A location that is not a release folder: the user's input, not a bug.
            print(f"modelconv: {INVALID_ARGUMENT}: {error.filename}: {error.strerror}; give"
                  " the folder or s3:// location of a model or release", file=sys.stderr)
            return EXIT_BAD_INPUT
        except Exception as error:  # noqa: BLE001 - a bug: one line unless --debug
            if args.debug:
                raise
            first_line = (str(error).strip().splitlines() or [""])[0][:300]
            print(f"modelconv: internal error: {type(error).__name__}: {first_line}; "
                  f"{DEBUG_HINT}", file=sys.stderr)
            return EXIT_FAILED

    return run
