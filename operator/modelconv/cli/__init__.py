"""The `modelconv` command line.

Each command group lives in its own module with a `register(subparsers)` function. Heavy
libraries (torch, onnx, coremltools) are imported inside command handlers only, so
`modelconv operator` and `modelconv agent` start without them.

`main` is the console script's entry point. This module imports only `os` and `sys` at the
top, which Python has loaded before any script runs. Everything else, argparse included, is
imported inside `main`, so a Ctrl-C during those imports ends with one line and code 130.
NOTE: a Ctrl-C in the first milliseconds, while Python itself starts and imports this
module, still ends with Python's own traceback, because no code of modelconv runs yet.
"""

from __future__ import annotations

import os
import sys

# The shell's convention for a process ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130
# 128 + 15: SIGTERM, which `modelconv run` handles like Ctrl-C.
EXIT_TERMINATED = 143

# Command modules, in the order their commands appear in `--help`.
COMMAND_MODULES = (
    "modelconv.cli.run_commands",  # run, schema, stage
    "modelconv.cli.release_commands",  # verify, releases, promote
    "modelconv.cli.cluster_commands",  # operator, crd
    "modelconv.cli.apply_command",  # apply
    "modelconv.cli.runner_commands",  # agent, runners
)


def build_parser() -> "argparse.ArgumentParser":
    import argparse
    import importlib

    parser = argparse.ArgumentParser(
        prog="modelconv",
        description="Convert PyTorch and ONNX models to validated Core ML packages.",
    )
    parser.add_argument("--debug", action="store_true", help="show stack traces on errors")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the version of the installed modelconv package and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue  # that command group is not built yet
        module.register(subparsers)
    return parser


def package_version() -> str:
    """Return the version of the installed modelconv package (pyproject.toml's version)."""
    from importlib import metadata

    try:
        return metadata.version("modelconv")
    except metadata.PackageNotFoundError:
        # Imported from a source tree that was never installed.
        from .. import __version__

        return __version__


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except KeyboardInterrupt as interrupt:
        # Commands that can leave work half done (run, apply) report their own state first.
        # Elsewhere, Ctrl-C (during imports, while a file loads, a listing runs) ends with
        # the usual 130.
        from ..errors import Terminated

        if isinstance(interrupt, Terminated):
            print("modelconv: terminated (SIGTERM)", file=sys.stderr)
            return EXIT_TERMINATED
        print("modelconv: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout exited early (`modelconv schema | head`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
