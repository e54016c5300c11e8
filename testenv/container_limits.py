"""Limits the test node agent enforces on a container besides running it: the memory limit and
whether its image can be pulled.

Memory: the container's `resources.limits.memory` is written to the attempt folder, and
container_shim.py samples the resident set size (RSS) of the container's processes (its
session) every `MEMORY_SAMPLE_SECONDS`. Over the limit, the shim kills them with SIGKILL and
the container ends as the kubelet reports a cgroup OOM kill: reason OOMKilled, exit code 137.
Unlike a cgroup, sampling counts RSS only (no page cache or kernel memory) and notices an
allocation up to one sampling interval late, so a process that grows and exits within that
interval is not killed.

Images: the agent pulls nothing, but it treats some images as unpullable, so that pods
report ErrImagePull and ImagePullBackOff as they would on a real node. Those are images
from a registry host under `.invalid` (a name that never resolves, RFC 2606) and images
matching a configured fnmatch pattern (`--unpullable-image`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

MEMORY_LIMIT_FILE = "memory-limit"
OOM_KILLED_FILE = "oom-killed"
OOM_EXIT_CODE = 137
# container_shim.py reads this too; keep the two in step.
MEMORY_SAMPLE_SECONDS = 0.1

_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {"m": Decimal("0.001"), "": Decimal(1), "k": Decimal(10**3),
                     "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
                     "P": Decimal(10**15), "E": Decimal(10**18)}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE])?$")


def parse_quantity(text: str) -> int:
    """Return a Kubernetes quantity (`512Mi`, `1G`, `1e9`) in whole units, rounded up."""
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        raise ValueError(f"invalid quantity {text!r}")
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix in _BINARY_SUFFIXES:
        value = number * _BINARY_SUFFIXES[suffix]
    elif suffix in _DECIMAL_SUFFIXES:
        value = number * _DECIMAL_SUFFIXES[suffix]
    else:
        value = number * Decimal(10) ** int(suffix[1:])
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def memory_limit_bytes(container: dict[str, Any]) -> int | None:
    """Return the container's memory limit in bytes, or None when it sets none."""
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return None if limit is None else parse_quantity(limit)


def registry_host(image: str) -> str:
    """Return the registry host of an image reference (docker.io when it names none)."""
    first, separator, _ = image.partition("/")
    if separator and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def pull_failure(image: str, unpullable: Iterable[str]) -> str | None:
    """Return why pulling `image` fails on the test node, or None when it can be pulled."""
    host = registry_host(image).partition(":")[0]
    if host == "invalid" or host.endswith(".invalid"):
        return (f'failed to pull and unpack image "{image}": failed to resolve reference '
                f'"{image}": dial tcp: lookup {host}: no such host')
    for pattern in unpullable:
        if fnmatch.fnmatchcase(image, pattern):
            return (f'failed to pull and unpack image "{image}": the test node agent does not '
                    f"have it (--unpullable-image {pattern})")
    return None
