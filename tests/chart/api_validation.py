"""Validate rendered objects with the API server (a server-side dry run of each create), and
install the CRDs such a dry run needs.

A dry run runs every admission and validation step of a real create, OpenAPI schemas and
CRD schemas included, and stores nothing. `fieldValidation=Strict` makes an unknown or
duplicate field an error instead of a warning, as `kubectl apply --dry-run=server` does.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import dynamic
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from testenv.api import ApiError, KubeAPI
from testenv.processes import wait_until

FIELD_MANAGER = "modelconv-chart-tests"


class DryRunRejected(Exception):
    """The API server rejected an object; the message names it and quotes the server."""


def _call(client: ApiClient, method: str, path: str, body: Any, query: list[tuple[str, str]],
          content_type: str) -> None:
    """Send one request; raise ApiException for an error status, as the client's APIs do."""
    request = client.param_serialize(
        method, path, query_params=query, body=body,
        header_params={"Content-Type": content_type, "Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = client.call_api(*request)
    response.read()
    client.response_deserialize(response, {"2XX": "object", "4XX": "object", "5XX": "object"})


def dry_run_create(client: ApiClient, document: dict) -> None:
    """Send `document` as a dry-run create; raise DryRunRejected when the server rejects it.

    An object that already exists (409, e.g. a CRD installed by another test) is checked
    with a dry-run server-side apply instead, which validates the same way.
    """
    resources = dynamic.DynamicClient(client).resources
    resource = resources.get(api_version=document["apiVersion"], kind=document["kind"])
    metadata = document["metadata"]
    namespace = metadata.get("namespace") if resource.namespaced else None
    collection = resource.path(namespace=namespace)
    label = f"{document['kind']} {namespace + '/' if namespace else ''}{metadata['name']}"
    strict = [("dryRun", "All"), ("fieldValidation", "Strict")]
    try:
        _call(client, "POST", collection, document, strict, "application/json")
        return
    except ApiException as error:
        if error.status != 409:
            raise DryRunRejected(f"{label}: {error.status} {_status_message(error)}") from None
    try:
        _call(client, "PATCH", f"{collection}/{metadata['name']}", document,
              strict + [("fieldManager", FIELD_MANAGER), ("force", "true")],
              "application/apply-patch+yaml")
    except ApiException as error:
        raise DryRunRejected(
            f"{label} (apply): {error.status} {_status_message(error)}") from None


def _status_message(error: ApiException) -> str:
    """Return the message of the API server's Status body, or the raw body."""
    try:
        return json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(error.body)


def install_crd(kube_api: KubeAPI, document: dict) -> None:
    """Create the CRD unless it exists, and wait until the API server serves it."""
    try:
        kube_api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", document)
    except ApiError as error:
        if error.status != 409:
            raise
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{document['metadata']['name']}"

    def established() -> bool:
        conditions = kube_api.get(path).get("status", {}).get("conditions") or []
        return any(item["type"] == "Established" and item["status"] == "True"
                   for item in conditions)

    wait_until(established, 30, f"CRD {document['metadata']['name']} to be established")
