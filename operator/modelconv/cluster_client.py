"""The Kubernetes side of `modelconv apply`: the user's kubeconfig, server-side apply of a
ModelConversion, and a watch that follows it until the operator reports a result.

It acts with the kube user's own credentials and rights, and needs these verbs on
`modelconversions.modelconv.io` in the target namespace: `patch` and `create` (server-side
apply, which creates the resource the first time), `get` and `watch`. It never lists: the
watch starts from the resourceVersion that a get returned, and a get recovers from an expired
watch.

Failure classes: every failure is a `ClusterError` with a CamelCase reason and an exit code.
Bad input (no kubeconfig or context, a resource the API server rejects, missing rights, the
CRD not installed) exits 2. While waiting, a transient failure is retried until the deadline:
the API server unreachable, or a 5xx or 429 response.

Like the controller, this module never imports torch, onnx or coremltools.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from .crd import PLURAL, VERSION
from .errors import EXIT_BAD_INPUT, EXIT_FAILED
from .spec import API_GROUP

# The manager name recorded in managedFields for the fields that `modelconv apply` sets.
FIELD_MANAGER = "modelconv"
RESOURCE = f"{PLURAL}.{API_GROUP}"
REQUIRED_VERBS = "get, create, patch and watch"
APPLY_PATCH = "application/apply-patch+yaml"
# Seconds to connect, and to wait for the response of a single request (not a watch).
REQUEST_TIMEOUT = (10, 60)
# Maximum seconds of one watch request. The server ends it sooner when the deadline is closer.
WATCH_SECONDS = 60
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# Reasons of the failures that this module raises. API failures use the Kubernetes
# StatusReason of the response (Invalid, Forbidden, NotFound, Conflict, ...).
KUBECONFIG_NOT_FOUND = "KubeconfigNotFound"
KUBECONFIG_INVALID = "KubeconfigInvalid"
CONTEXT_NOT_FOUND = "ContextNotFound"
API_UNREACHABLE = "ApiServerUnreachable"
DELETED = "Deleted"
TIMEOUT = "Timeout"


class ClusterError(Exception):
    """A failure to talk to the cluster, with a CamelCase reason and the exit code to use.

    `transient` marks failures that a waiting client may retry.
    """

    def __init__(self, reason: str, message: str, exit_code: int = EXIT_FAILED, *,
                 transient: bool = False, status: int = 0):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.exit_code = exit_code
        self.transient = transient
        self.status = status


# --- kubeconfig -----------------------------------------------------------------------------


def kubeconfig_paths(kubeconfig: Optional[str]) -> list[Path]:
    """Return the kubeconfig files kubectl would read: --kubeconfig, KUBECONFIG or the default."""
    if kubeconfig:
        return [Path(kubeconfig).expanduser()]
    listed = os.environ.get("KUBECONFIG", "")
    if listed:
        return [Path(item).expanduser() for item in listed.split(os.pathsep) if item]
    return [Path("~/.kube/config").expanduser()]


def _merged_contexts(paths: list[Path]) -> tuple[dict[str, dict], str]:
    """Return the contexts by name and the current context, merged as kubectl merges files.

    The first file that names a context or sets current-context wins.
    """
    contexts: dict[str, dict] = {}
    current = ""
    for path in paths:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError) as error:
            raise ClusterError(KUBECONFIG_INVALID, f"cannot read kubeconfig {path}: {error}",
                               EXIT_BAD_INPUT) from None
        except yaml.YAMLError as error:
            first_line = str(error).splitlines()[0]
            raise ClusterError(KUBECONFIG_INVALID, f"kubeconfig {path} is not valid YAML: "
                               f"{first_line}", EXIT_BAD_INPUT) from None
        if not isinstance(document, dict):
            raise ClusterError(KUBECONFIG_INVALID, f"kubeconfig {path} is not a YAML mapping",
                               EXIT_BAD_INPUT)
        for item in document.get("contexts") or []:
            if isinstance(item, dict) and item.get("name"):
                contexts.setdefault(item["name"], item.get("context") or {})
        current = current or document.get("current-context") or ""
    return contexts, current


class KubeTarget:
    """An API client for one kube context, and the namespace that context defaults to."""

    def __init__(self, api_client: Any, context: str, namespace: str):
        self.api_client = api_client
        self.context = context
        self.namespace = namespace


def connect(kubeconfig: Optional[str] = None, context: Optional[str] = None) -> KubeTarget:
    """Return a client for `context` (default: the current context) of the user's kubeconfig.

    Without any kubeconfig file, a process in a pod uses its ServiceAccount, as kubectl does.
    Raise `ClusterError` (exit 2) when there is no kubeconfig or the context is missing.
    """
    from kubernetes import client, config

    paths = kubeconfig_paths(kubeconfig)
    existing = [path for path in paths if path.is_file()]
    if not existing and not context and _in_cluster():
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        namespace = (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip() or "default"
        return KubeTarget(client.ApiClient(configuration), "in-cluster", namespace)
    if not existing:
        searched = ", ".join(str(path) for path in paths)
        raise ClusterError(KUBECONFIG_NOT_FOUND, (
            f"no kubeconfig at {searched}: pass --kubeconfig PATH or set KUBECONFIG to the "
            "cluster's kubeconfig"), EXIT_BAD_INPUT)

    contexts, current = _merged_contexts(existing)
    chosen = context or current
    files = ", ".join(str(path) for path in existing)
    if not chosen:
        raise ClusterError(CONTEXT_NOT_FOUND, (
            f"the kubeconfig ({files}) sets no current context: pass --context NAME (one of: "
            f"{', '.join(sorted(contexts)) or 'none defined'})"), EXIT_BAD_INPUT)
    if chosen not in contexts:
        raise ClusterError(CONTEXT_NOT_FOUND, (
            f"context {chosen!r} is not in the kubeconfig ({files}); defined contexts: "
            f"{', '.join(sorted(contexts)) or 'none'}"), EXIT_BAD_INPUT)

    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=os.pathsep.join(str(path) for path in existing),
                                context=chosen, client_configuration=configuration,
                                persist_config=False)
    except (config.ConfigException, OSError, ValueError) as error:
        raise ClusterError(KUBECONFIG_INVALID, f"context {chosen!r}: {error}",
                           EXIT_BAD_INPUT) from error
    namespace = contexts[chosen].get("namespace") or "default"
    return KubeTarget(client.ApiClient(configuration), chosen, namespace)


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (
        SERVICE_ACCOUNT_DIR / "token").is_file()


# --- requests -------------------------------------------------------------------------------


class ConversionClient:
    """Server-side apply, get and watch of ModelConversions through one kube context."""

    def __init__(self, target: KubeTarget):
        from kubernetes import client

        self.target = target
        self.api = client.CustomObjectsApi(target.api_client)

    def apply(self, namespace: str, document: dict, *, force: bool = False) -> dict:
        """Create or update the resource by server-side apply; return the stored object."""
        name = document["metadata"]["name"]
        with _translated("apply", namespace, name):
            # The raw response, because the generated client decodes only a 200 response and
            # apply returns 201 when it creates the resource.
            response = self.api.patch_namespaced_custom_object(
                API_GROUP, VERSION, namespace, PLURAL, name, document,
                field_manager=FIELD_MANAGER, force=force, field_validation="Strict",
                _content_type=APPLY_PATCH, _request_timeout=REQUEST_TIMEOUT,
                _preload_content=False)
            try:
                return json.loads(response.data)
            finally:
                response.release_conn()

    def get(self, namespace: str, name: str) -> dict:
        with _translated("get", namespace, name):
            return self.api.get_namespaced_custom_object(
                API_GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT)

    def watch(self, namespace: str, name: str, resource_version: str,
              seconds: int) -> Iterator[tuple[str, dict]]:
        """Yield (event type, object) for the one resource, for at most `seconds` seconds.

        Event types are ADDED, MODIFIED, DELETED and BOOKMARK. An expired resourceVersion
        raises `ClusterError` with status 410; the caller gets the object again.
        """
        from kubernetes.watch.watch import iter_resp_lines

        with _translated("watch", namespace, name):
            response = self.api.list_namespaced_custom_object(
                API_GROUP, VERSION, namespace, PLURAL, watch=True,
                field_selector=f"metadata.name={name}", resource_version=resource_version,
                allow_watch_bookmarks=True, timeout_seconds=seconds,
                _preload_content=False, _request_timeout=(REQUEST_TIMEOUT[0], seconds + 15))
        try:
            with _translated("watch", namespace, name):
                for line in iter_resp_lines(response):
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        raise _status_error(event.get("object") or {}, "watch", namespace, name)
                    yield event["type"], event.get("object") or {}
        finally:
            response.close()
            response.release_conn()


class _translated:
    """Turn the client library's exceptions inside the block into `ClusterError`."""

    def __init__(self, action: str, namespace: str, name: str):
        self.action, self.namespace, self.name = action, namespace, name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None or isinstance(error, ClusterError):
            return False
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        if isinstance(error, ApiException):
            raise _api_error(error, self.action, self.namespace, self.name) from error
        if isinstance(error, (HTTPError, OSError)):
            raise unreachable_error(
                f"{self.action} {RESOURCE} {self.namespace}/{self.name}", error) from error
        return False


def unreachable_error(action: str, error: BaseException) -> ClusterError:
    """Return the transient ApiServerUnreachable error for a connection failure.

    `action` completes "cannot reach the API server to ...", and the message ends with the
    first line of `error`, which names the server's host and port.
    """
    return ClusterError(API_UNREACHABLE,
                        f"cannot reach the API server to {action}: {_first_line(error)}",
                        transient=True)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _api_error(error: Any, action: str, namespace: str, name: str) -> ClusterError:
    try:
        status = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        status = {}
    if not isinstance(status, dict) or not status:
        status = {"code": error.status, "reason": error.reason or "", "message": error.reason}
    return _status_error(status, action, namespace, name)


def _status_error(status: dict, action: str, namespace: str, name: str) -> ClusterError:
    """Return the ClusterError of a Kubernetes Status object, with what to do about it."""
    code = int(status.get("code") or 0)
    reason = status.get("reason") or f"Http{code}"
    message = status.get("message") or reason
    subject = f"{RESOURCE} {namespace}/{name}"
    details = status.get("details") or {}
    if code in (400, 422):
        text = f"the API server rejected {subject}: {message}"
    elif code == 401:
        text = f"the API server did not accept the kubeconfig's credentials: {message}"
    elif code == 403:
        text = (f"{message}; the kube user needs {REQUIRED_VERBS} on {RESOURCE} in "
                f"namespace {namespace}")
    elif code == 404 and details.get("kind") == "namespaces":
        text = f"namespace {namespace} not found: create it or pass --namespace"
    elif code == 404 and action in ("apply", "watch"):
        text = (f"the API server does not serve {RESOURCE}: install the CRD "
                "(`modelconv crd | kubectl apply -f -`, or the Helm chart) and apply again")
    elif code == 409 and action == "apply":
        text = (f"{message}; another field manager owns these fields: change them with that "
                "tool, or pass --force-conflicts to take them over")
    else:
        text = f"{action} {subject}: {message}"
    transient = code == 410 or code == 429 or code >= 500
    exit_code = EXIT_BAD_INPUT if 400 <= code < 500 and not transient else EXIT_FAILED
    return ClusterError(reason, text, exit_code, transient=transient, status=code)


def seconds_left(deadline: float) -> float:
    """Return the seconds until `deadline` (a time.monotonic value), never below zero."""
    return max(0.0, deadline - time.monotonic())


# --- following one resource -----------------------------------------------------------------

# Seconds between attempts after a transient failure, doubled up to the maximum.
RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 10.0


def follow(client: ConversionClient, namespace: str, name: str,
           deadline: float) -> Iterator[dict]:
    """Yield the object now and after each change, until the caller stops or `deadline`.

    The stream is a get, then watches from its resourceVersion. An expired watch (410) is
    recovered with a new get, and transient failures are retried with growing delays until
    the deadline. Raise `ClusterError` with reason `Deleted` when the object is deleted, and
    other non-transient failures as they come.
    """
    delay = RETRY_DELAY
    while seconds_left(deadline) > 0:
        try:
            body = client.get(namespace, name)
        except ClusterError as error:
            if error.status == 404:
                raise deleted_error(namespace, name) from None
            if not error.transient:
                raise
            delay = _pause(delay, deadline)
            continue
        yield body
        version = body["metadata"]["resourceVersion"]
        try:
            for kind, item in _watch_until(client, namespace, name, version, deadline):
                if kind == "DELETED":
                    raise deleted_error(namespace, name)
                delay = RETRY_DELAY
                yield item
            return
        except ClusterError as error:
            if error.reason == DELETED or not error.transient:
                raise
            # An expired resourceVersion (410) is no failure: get the object again at once.
            if error.status != 410:
                delay = _pause(delay, deadline)


def _watch_until(client: ConversionClient, namespace: str, name: str, version: str,
                 deadline: float) -> Iterator[tuple[str, dict]]:
    """Yield watch events, opening a new watch whenever the server ends one, until deadline."""
    while seconds_left(deadline) > 0:
        seconds = max(1, min(WATCH_SECONDS, int(seconds_left(deadline) + 0.999)))
        for kind, item in client.watch(namespace, name, version, seconds):
            version = (item.get("metadata") or {}).get("resourceVersion") or version
            if kind != "BOOKMARK":
                yield kind, item


def _pause(delay: float, deadline: float) -> float:
    """Sleep for `delay` seconds or until the deadline; return the next delay."""
    time.sleep(min(delay, seconds_left(deadline)))
    return min(delay * 2, MAX_RETRY_DELAY)


def deleted_error(namespace: str, name: str) -> ClusterError:
    """Return the failure of a resource deleted while `modelconv apply --wait` follows it."""
    return ClusterError(DELETED, (
        f"{RESOURCE} {namespace}/{name} was deleted while waiting for it to become Ready"))
