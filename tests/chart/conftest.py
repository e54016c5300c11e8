"""Fixtures of the chart tests: rendering with the real helm, and the value sets under test."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from chart_rendering import REPO, render_chart
from value_sets import VALUE_SETS

@pytest.fixture(scope="session")
def gen_chart():
    """hack/gen-chart.py as a module."""
    path = REPO / "hack" / "gen-chart.py"
    spec = importlib.util.spec_from_file_location("gen_chart", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_chart"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def render(helm_without_cluster):
    """render(values, **options) -> the documents of `helm template`."""
    def render_values(values=None, **options):
        return render_chart(helm_without_cluster, values, **options)

    return render_values


@pytest.fixture(scope="session")
def rendered_sets(render) -> dict[str, list[dict]]:
    return {name: render(values) for name, values in VALUE_SETS.items()}
