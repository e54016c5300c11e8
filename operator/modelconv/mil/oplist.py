"""The table of implemented MIL ops in docs/mil-executor.md, generated from the registry.

    python -m modelconv.mil.oplist             # print the table
    python -m modelconv.mil.oplist --write docs/mil-executor.md

`--write` replaces the lines between the BEGIN and END markers of the document; a test checks
that the document matches the registry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .registry import UPCAST, implementation_of, registered_op_types

BEGIN = "<!-- BEGIN generated op list: python -m modelconv.mil.oplist --write -->"
END = "<!-- END generated op list -->"


def op_table() -> str:
    """Return the markdown table of every registered op type, grouped by topic module."""
    rows = []
    for op_type in registered_op_types():
        implementation = implementation_of(op_type)
        topic = implementation.function.__module__.rsplit(".", 1)[-1]
        fp16 = "fp32, rounded to fp16" if implementation.fp16 == UPCAST else "fp16"
        rows.append((topic, op_type, fp16))
    lines = [
        f"{len(rows)} op types.",
        "",
        "| topic module | op type | computed at program precision in |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {topic} | `{op_type}` | {fp16} |" for topic, op_type, fp16 in sorted(rows)]
    return "\n".join(lines)


def replace_table(document: str, table: str) -> str:
    """Return `document` with the text between the markers replaced by `table`."""
    try:
        start = document.index(BEGIN) + len(BEGIN)
        end = document.index(END)
    except ValueError:
        raise ValueError(f"the document has no {BEGIN!r} ... {END!r} markers") from None
    return document[:start] + "\n" + table + "\n" + document[end:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Print or write the executor's op table.")
    parser.add_argument("--write", type=Path, help="markdown file whose op table to replace")
    args = parser.parse_args(argv)
    table = op_table()
    if args.write is None:
        print(table)
        return 0
    args.write.write_text(replace_table(args.write.read_text(), table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
