"""A stage that finishes at once, for bench/operator_scale.py.

    python bench/noop_stage.py stage NAME --run FILE

It follows the stage contract (docs/stage-contract.md) for a local folder store and does no
work: it reads the run file, writes a successful result.json under
`<store>/.cache/<stage>/<key>/` and exits 0. The benchmark measures the operator, so the
stage must cost as little as possible; it imports nothing but the standard library.
"""

import json
import os
import sys
import tempfile
import time


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[0] != "stage" or argv[2] != "--run":
        print("usage: noop_stage.py stage NAME --run FILE", file=sys.stderr)
        return 2
    stage, run_file = argv[1], argv[3]
    with open(run_file, encoding="utf-8") as handle:
        run = json.load(handle)
    key = run["stages"][stage]["key"]
    folder = os.path.join(run["store"], ".cache", stage, key)
    os.makedirs(folder, exist_ok=True)
    now = time.time()
    result = {"stage": stage, "succeeded": True, "reason": "", "message": "no-op stage",
              "metrics": {}, "artifacts": {}, "started": now, "finished": now}
    # Write to a temporary name and rename: the operator never reads a partial file.
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    os.replace(temporary, os.path.join(folder, "result.json"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
