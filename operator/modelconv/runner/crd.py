"""The CoreMLCheck CustomResourceDefinition, generated from the models in `resource`.

It reuses the structural-schema builder of `modelconv.crd` (refs inlined, optional fields
collapsed, OpenAPI v3.0 bounds). The status schema keeps no defaults, because runners and
the controller write the status whole.

    modelconv crd --kind coremlcheck > crds/coremlcheck.yaml

(or `python -m modelconv.runner.crd`) regenerates the checked-in file; a test fails when that file is stale.
"""

from __future__ import annotations

import sys

import yaml

from ..crd import model_schema
from .resource import (
    API_GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    CheckSpec,
    CheckStatus,
)

CRD_NAME = f"{PLURAL}.{API_GROUP}"
# Schema paths are prefixed with the kind, so no rule of the ModelConversion schema (keyed by
# `spec.` paths) applies to this resource by accident.
SCHEMA_ROOT = "coremlcheck"

PRINTER_COLUMNS = [
    {"name": "State", "type": "string", "jsonPath": ".status.state",
     "description": "Pending, Claimed, Succeeded or Failed."},
    {"name": "Runner", "type": "string", "jsonPath": ".status.runner",
     "description": "Runner that holds or held the claim."},
    {"name": "Attempts", "type": "integer", "jsonPath": ".status.attempts",
     "description": "Claims made so far."},
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1,
     "description": "Why the check ended as it did."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def openapi_schema() -> dict:
    """Return the openAPIV3Schema of the CoreMLCheck resource."""
    spec = model_schema(CheckSpec, f"{SCHEMA_ROOT}.spec")
    spec["properties"]["computeUnits"]["x-kubernetes-list-type"] = "set"
    status = model_schema(CheckStatus, f"{SCHEMA_ROOT}.status", defaults=False)
    return {
        "type": "object",
        "description": (
            "One on-device check of a converted Core ML model, created by the modelconv "
            "operator and claimed by a runner of the macOS runner pool."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": f"{API_GROUP}/{VERSION}"},
            "kind": {"type": "string", "description": KIND},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def crd_manifest() -> dict:
    """Return the CoreMLCheck CustomResourceDefinition as a manifest."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/name": "modelconv"}},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["modelconv"],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": PRINTER_COLUMNS,
                "schema": {"openAPIV3Schema": openapi_schema()},
            }],
        },
    }


def render_crd() -> str:
    """Return the CRD as the YAML text of crds/coremlcheck.yaml."""
    header = (
        "# Generated from the models in operator/modelconv/runner/resource.py. Do not edit:\n"
        "# change the models and run\n"
        "#   modelconv crd --kind coremlcheck > crds/coremlcheck.yaml\n"
    )
    return header + yaml.safe_dump(crd_manifest(), sort_keys=False, width=100, allow_unicode=True)


if __name__ == "__main__":
    sys.stdout.write(render_crd())
