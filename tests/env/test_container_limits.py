"""The node agent's reading of memory limits (Kubernetes quantities) and of image references
it treats as unpullable."""

from __future__ import annotations

import pytest

from testenv.container_limits import (
    memory_limit_bytes,
    parse_quantity,
    pull_failure,
    registry_host,
)


@pytest.mark.parametrize("text, expected", [
    ("64Mi", 64 * 2**20),
    ("1Gi", 2**30),
    ("512M", 512 * 10**6),
    ("1.5Gi", 3 * 2**29),
    ("1e9", 10**9),
    ("1E3", 1000),
    ("2k", 2000),
    ("100", 100),
    ("1500m", 2),  # rounded up to whole bytes
])
def test_quantity_parses_to_units(text: str, expected: int) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "Mi", "12 Mi", "1.2.3", "5X"])
def test_invalid_quantity_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity(text)


def test_memory_limit_is_read_from_limits_only() -> None:
    assert memory_limit_bytes({"resources": {"limits": {"memory": "1Mi"}}}) == 2**20
    assert memory_limit_bytes({"resources": {"requests": {"memory": "1Mi"}}}) is None
    assert memory_limit_bytes({}) is None


@pytest.mark.parametrize("image, host", [
    ("python:3.11-slim", "docker.io"),
    ("team/app:1", "docker.io"),
    ("registry.example.com/team/app:1", "registry.example.com"),
    ("127.0.0.1:5000/app", "127.0.0.1:5000"),
    ("localhost/app", "localhost"),
])
def test_registry_host_of_image(image: str, host: str) -> None:
    assert registry_host(image) == host


def test_invalid_registry_host_never_pulls() -> None:
    message = pull_failure("registry.invalid:5000/team/app:1", ())
    assert message is not None
    assert "lookup registry.invalid: no such host" in message


def test_configured_pattern_makes_image_unpullable() -> None:
    patterns = ("team/private-*",)
    message = pull_failure("team/private-app:2", patterns)
    assert message is not None
    assert "team/private-*" in message
    assert pull_failure("team/public-app:2", patterns) is None
    assert pull_failure("python:3.11-slim", ()) is None
