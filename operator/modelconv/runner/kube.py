"""The runner pool's only door to the Kubernetes API: CoreMLChecks and runner Leases.

Objects travel as plain dicts in their API JSON form. Two API errors are normal in a pool
and get their own exceptions: `Conflict` (409: someone else changed the object first, which
is how the loser of a claim race learns it lost) and `NotFound` (404: the object was deleted). Every other
`ApiException` propagates to the caller's retry policy.

The kubernetes client logs request and response bodies at DEBUG level, and a check's spec
contains presigned URLs, so `quiet_client_loggers()` caps those loggers at INFO, and
urllib3's at ERROR.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Iterator, Optional

from .resource import API_GROUP, PLURAL, VERSION

# Loggers that print URLs or bodies at DEBUG: the kubernetes client's, and urllib3's, which
# logs each request line, presigned query string included.
CHATTY_LOGGERS = ("kubernetes", "urllib3", "botocore", "requests")


class Conflict(Exception):
    """The write was based on an old resourceVersion: another writer came first (409)."""


class NotFound(Exception):
    """The object does not exist (404)."""


def quiet_client_loggers() -> None:
    """Keep the HTTP client loggers at INFO or above, whatever the root level."""
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    # urllib3 2.x logs each retry at WARNING with the request path and query string, so a
    # retried download would log a presigned URL's signature. The agent logs the final error.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


# Fixes for the API errors that retrying does not cure, by HTTP status.
API_ERROR_HINTS = {
    401: "the kubeconfig's credentials were rejected; issue a new token",
    403: "the ServiceAccount lacks a permission; apply examples/macos/agent-rbac.yaml in the "
         "pool namespace",
    404: "the API server does not serve CoreMLChecks or the namespace does not exist; apply "
         "crds/coremlcheck.yaml and check --namespace",
}


def describe_api_error(error) -> str:
    """Return '<status> <reason>' of an ApiException, with a hint for 401, 403 and 404."""
    text = f"{error.status} {error.reason}"
    hint = API_ERROR_HINTS.get(error.status)
    return f"{text}: {hint}" if hint else text


def api_client(kubeconfig: Optional[str] = None, context: Optional[str] = None):
    """Return a kubernetes ApiClient from a kubeconfig, or in-cluster config without one."""
    from kubernetes import client, config

    configuration = client.Configuration()
    if kubeconfig is None and _in_cluster():
        config.load_incluster_config(client_configuration=configuration)
    else:
        config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    return client.ApiClient(configuration)


def _in_cluster() -> bool:
    import os

    return "KUBERNETES_SERVICE_HOST" in os.environ


@contextlib.contextmanager
def _classified() -> Iterator[None]:
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except ApiException as error:
        if error.status == 409:
            raise Conflict(str(error.reason)) from None
        if error.status == 404:
            raise NotFound(str(error.reason)) from None
        raise


def _decoded(response) -> dict:
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


class CheckApi:
    """CoreMLChecks in one namespace."""

    def __init__(self, client, namespace: str):
        from kubernetes import client as kube

        self.namespace = namespace
        self._api = kube.CustomObjectsApi(client)

    def _args(self) -> tuple[str, str, str, str]:
        return (API_GROUP, VERSION, self.namespace, PLURAL)

    def get(self, name: str) -> dict:
        with _classified():
            return self._api.get_namespaced_custom_object(*self._args(), name)

    def list(self, label_selector: Optional[str] = None) -> tuple[list[dict], str]:
        """Return the checks and the list's resourceVersion, to start a watch from."""
        with _classified():
            result = self._api.list_namespaced_custom_object(
                *self._args(), label_selector=label_selector
            )
        return result.get("items", []), result["metadata"]["resourceVersion"]

    def create(self, body: dict) -> dict:
        with _classified():
            return self._api.create_namespaced_custom_object(*self._args(), body)

    def delete(self, name: str) -> None:
        with _classified():
            self._api.delete_namespaced_custom_object(*self._args(), name)

    def replace_status(self, obj: dict) -> dict:
        """Write `obj["status"]`, conditioned on `obj["metadata"]["resourceVersion"]`."""
        if not obj.get("metadata", {}).get("resourceVersion"):
            raise ValueError("a status write needs metadata.resourceVersion")
        with _classified():
            return self._api.replace_namespaced_custom_object_status(
                *self._args(), obj["metadata"]["name"], obj
            )

    def watch(self, resource_version: str, timeout_seconds: int) -> "CheckWatch":
        """Return a watch of changes after `resource_version`, ending after the timeout."""
        return CheckWatch(self, resource_version, timeout_seconds)


class CheckWatch:
    """One watch request; iterate for (event type, object); `resource_version` advances.

    A 410 (the version is too old) raises `kubernetes.client.exceptions.ApiException` with
    status 410: relist and watch again.
    """

    def __init__(self, api: CheckApi, resource_version: str, timeout_seconds: int):
        self._api = api
        self.resource_version = resource_version
        self._timeout = timeout_seconds
        self._watch = None

    def __iter__(self) -> Iterator[tuple[str, dict]]:
        from kubernetes import watch

        self._watch = watch.Watch()
        stream = self._watch.stream(
            self._api._api.list_namespaced_custom_object,
            *self._api._args(),
            resource_version=self.resource_version,
            timeout_seconds=self._timeout,
            allow_watch_bookmarks=True,
            # A socket that stays silent longer than the server-side timeout is dead.
            _request_timeout=(10, self._timeout + 30),
        )
        for event in stream:
            self.resource_version = self._watch.resource_version or self.resource_version
            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                yield event["type"], event["raw_object"]

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()


class LeaseApi:
    """`coordination.k8s.io/v1` Leases in one namespace, as dicts."""

    def __init__(self, client, namespace: str):
        from kubernetes import client as kube

        self.namespace = namespace
        self._api = kube.CoordinationV1Api(client)

    def get(self, name: str) -> dict:
        with _classified():
            response = self._api.read_namespaced_lease(
                name, self.namespace, _preload_content=False
            )
        return _decoded(response)

    def create(self, body: dict) -> dict:
        with _classified():
            response = self._api.create_namespaced_lease(
                self.namespace, body, _preload_content=False
            )
        return _decoded(response)

    def replace(self, body: dict) -> dict:
        """Replace the Lease, conditioned on `body["metadata"]["resourceVersion"]`."""
        with _classified():
            response = self._api.replace_namespaced_lease(
                body["metadata"]["name"], self.namespace, body, _preload_content=False
            )
        return _decoded(response)

    def list(self, label_selector: str) -> list[dict]:
        with _classified():
            response = self._api.list_namespaced_lease(
                self.namespace, label_selector=label_selector, _preload_content=False
            )
        return _decoded(response).get("items", [])
