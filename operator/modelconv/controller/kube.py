"""The operator's Kubernetes API client: JSON over aiohttp, one session per process.

Kopf watches and posts events with its own client; every other request of the operator
(Jobs, ConfigMaps, status, the leader Lease) goes through `KubeClient`. Credentials come
from the same places as Kopf's: the pod's ServiceAccount when running in a cluster, else
the kubeconfig named by `--kubeconfig` or KUBECONFIG. A 401 answer re-reads them once,
because a ServiceAccount token file is rotated while the operator runs.

Failure classes: `ApiError` carries the HTTP status; 404 and 409 are ordinary answers that
callers check (`not_found`, `conflict`); anything else propagates to Kopf's retry backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from typing import Any, Callable, Optional

import aiohttp
import kopf

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_SECONDS = 30
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str, method: str, path: str):
        super().__init__(f"{method} {path}: {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def login(kubeconfig: Optional[str] = None) -> kopf.ConnectionInfo:
    """Return connection info: the pod's ServiceAccount, else the kubeconfig.

    `kubeconfig` (a path) takes precedence over both when given.
    """
    settings = kopf.OperatorSettings()
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    elif (info := kopf.login_with_service_account(settings=settings)) is not None:
        return _in_cluster_server(info)
    info = kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise kopf.LoginError(
            "no Kubernetes credentials: run inside a pod with a ServiceAccount, pass "
            "--kubeconfig, or set KUBECONFIG"
        )
    return info


def _in_cluster_server(info: kopf.ConnectionInfo) -> kopf.ConnectionInfo:
    """Return `info` with the API server address from KUBERNETES_SERVICE_HOST and _PORT.

    Kopf's service account login names https://kubernetes.default.svc, which needs cluster
    DNS. The kubelet sets these two variables in every container, and client-go's in-cluster
    configuration reads them instead, so the address works without DNS too.
    """
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return info
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return dataclasses.replace(info, server=f"https://{host}:{port}")


class KubeClient:
    """Requests to one API server; `writes` counts POST, PUT, PATCH and DELETE by verb."""

    def __init__(self, login_fn: Callable[[], kopf.ConnectionInfo]):
        self._login = login_fn
        self._info: Optional[kopf.ConnectionInfo] = None
        self._session: Optional[aiohttp.ClientSession] = None
        self._lock = asyncio.Lock()
        self.writes: dict[str, int] = {verb: 0 for verb in WRITE_VERBS}
        self.on_write: Callable[[str], None] = lambda verb: None

    async def _open(self, renew: bool = False) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is not None and not renew:
                return self._session
            if self._session is not None:
                await self._session.close()
            self._info = self._login()
            connector = aiohttp.TCPConnector(ssl=self._info.as_ssl_context(), limit=32)
            self._session = aiohttp.ClientSession(
                base_url=self._info.server.rstrip("/") + "/",
                connector=connector,
                headers=self._info.as_http_headers(),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
                # Proxy variables of the environment must not reroute API traffic.
                trust_env=False,
            )
            return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, body: Any = None, *,
                      content_type: str = JSON, params: Optional[dict] = None) -> dict:
        """Send a request; return the decoded JSON answer; raise ApiError on 4xx and 5xx."""
        data = None if body is None else json.dumps(body)
        for attempt in (1, 2):
            session = await self._open(renew=attempt == 2)
            async with session.request(
                method, path.lstrip("/"), data=data, params=params,
                headers={"Content-Type": content_type, "Accept": JSON},
            ) as response:
                text = await response.text()
                # A rotated token answers 401 once; re-read the credentials and try again.
                if response.status == 401 and attempt == 1:
                    continue
                if method in self.writes:
                    self.writes[method] += 1
                    self.on_write(method)
                if response.status >= 400:
                    raise _api_error(response.status, text, method, path)
                return json.loads(text) if text else {}
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def get(self, path: str, **params: Any) -> dict:
        return await self.request("GET", path, params=params or None)

    async def create(self, path: str, body: dict) -> dict:
        return await self.request("POST", path, body)

    async def replace(self, path: str, body: dict) -> dict:
        return await self.request("PUT", path, body)

    async def merge_patch(self, path: str, body: dict) -> dict:
        return await self.request("PATCH", path, body, content_type=MERGE_PATCH)

    async def json_patch(self, path: str, operations: list) -> dict:
        return await self.request("PATCH", path, operations, content_type=JSON_PATCH)

    async def delete(self, path: str, *, propagation: str = "Background") -> dict:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        return await self.request("DELETE", path, body)


def _api_error(status: int, text: str, method: str, path: str) -> ApiError:
    try:
        answer = json.loads(text)
        reason, message = answer.get("reason") or "", answer.get("message") or text
    except ValueError:
        reason, message = "", text[:500]
    return ApiError(status, reason, message, method, path)


# --- paths ------------------------------------------------------------------------------


def jobs_path(namespace: str, name: str = "") -> str:
    return f"/apis/batch/v1/namespaces/{namespace}/jobs" + (f"/{name}" if name else "")


def config_maps_path(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps" + (f"/{name}" if name else "")


def conversion_path(namespace: str, name: str) -> str:
    return f"/apis/modelconv.io/v1alpha1/namespaces/{namespace}/modelconversions/{name}"


def lease_path(namespace: str, name: str = "") -> str:
    return (f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
            + (f"/{name}" if name else ""))
