"""A small Kubernetes REST client for the test environment itself, and kubeconfig files.

The environment's own code (health checks, the node agent, ServiceAccount kubeconfigs) talks
to the API server through this client, built on `requests`: it sends JSON, reads JSON as
plain dicts and streams watches. Tests are free to use the `kubernetes` package instead;
the kubeconfig files written here work with it, with kubectl and with helm.

Kubeconfigs written here refer to certificate files by absolute path, so they are valid for
as long as the cluster's temporary folder exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml


class ApiError(Exception):
    """The API server returned an error status for a request."""

    def __init__(self, status: int, reason: str, message: str, method: str, path: str):
        super().__init__(f"{method} {path} failed with {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Credentials:
    """Address of an API server and the credentials to authenticate to it."""

    server: str
    ca_file: Path
    client_cert: Path | None = None
    client_key: Path | None = None
    token: str | None = None


def write_kubeconfig(path: Path, credentials: Credentials, user: str,
                     namespace: str | None = None) -> Path:
    """Write a kubeconfig with one cluster, one user and one context named `testenv`."""
    user_entry: dict[str, str] = {}
    if credentials.client_cert and credentials.client_key:
        user_entry["client-certificate"] = str(credentials.client_cert)
        user_entry["client-key"] = str(credentials.client_key)
    if credentials.token:
        user_entry["token"] = credentials.token
    context: dict[str, str] = {"cluster": "testenv", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "testenv", "cluster": {
            "server": credentials.server,
            "certificate-authority": str(credentials.ca_file),
        }}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": "testenv", "context": context}],
        "current-context": "testenv",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def read_kubeconfig(path: Path) -> Credentials:
    """Read the current context of a kubeconfig that refers to its files by path."""
    config = yaml.safe_load(Path(path).read_text())
    context_name = config["current-context"]
    context = _named(config, "contexts", context_name)["context"]
    cluster = _named(config, "clusters", context["cluster"])["cluster"]
    user = _named(config, "users", context["user"])["user"]
    if "certificate-authority" not in cluster:
        raise ValueError(
            f"{path}: cluster {context['cluster']!r} has no certificate-authority file; "
            "this client reads only kubeconfigs that refer to files by path"
        )
    return Credentials(
        server=cluster["server"],
        ca_file=Path(cluster["certificate-authority"]),
        client_cert=Path(user["client-certificate"]) if "client-certificate" in user else None,
        client_key=Path(user["client-key"]) if "client-key" in user else None,
        token=user.get("token"),
    )


def _named(config: Mapping[str, Any], section: str, name: str) -> Mapping[str, Any]:
    for entry in config.get(section) or []:
        if entry["name"] == name:
            return entry
    raise ValueError(f"kubeconfig has no entry {name!r} in {section}")


class KubeAPI:
    """JSON requests to one API server, with a connection pool."""

    def __init__(self, credentials: Credentials, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self.session = requests.Session()
        self.session.verify = str(credentials.ca_file)
        # Proxy variables of the environment must never reroute loopback traffic.
        self.session.trust_env = False
        if credentials.client_cert and credentials.client_key:
            self.session.cert = (str(credentials.client_cert), str(credentials.client_key))
        if credentials.token:
            self.session.headers["Authorization"] = f"Bearer {credentials.token}"

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeAPI:
        return cls(read_kubeconfig(path))

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, path: str, body: Any = None, *,
                params: Mapping[str, Any] | None = None,
                content_type: str = "application/json",
                timeout: float | None = None) -> dict[str, Any]:
        """Send one request and return the decoded JSON body; raise ApiError on 4xx/5xx."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        response = self.session.request(
            method, self.credentials.server + path, data=data, params=params,
            headers=headers, timeout=timeout or self.timeout,
        )
        if response.status_code >= 400:
            raise _api_error(response, method, path)
        if not response.content:
            return {}
        return response.json()

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any) -> dict[str, Any]:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any) -> dict[str, Any]:
        return self.request("PUT", path, body)

    def merge_patch(self, path: str, body: Any) -> dict[str, Any]:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: Any = None) -> dict[str, Any]:
        return self.request("DELETE", path, body)

    def watch(self, path: str, resource_version: str, timeout_seconds: int,
              **params: Any) -> Iterator[dict[str, Any]]:
        """Yield watch events (`type`, `object`) until the server ends the watch."""
        query = {"watch": "true", "resourceVersion": resource_version,
                 "timeoutSeconds": timeout_seconds, "allowWatchBookmarks": "true", **params}
        with self.session.get(
            self.credentials.server + path, params=query, stream=True,
            headers={"Accept": "application/json"}, timeout=(10, timeout_seconds + 10),
        ) as response:
            if response.status_code >= 400:
                raise _api_error(response, "WATCH", path)
            for line in response.iter_lines():
                if line:
                    yield json.loads(line)

    def healthy(self, endpoint: str) -> bool:
        """Return whether GET `endpoint` (e.g. /readyz) returns 200 right now."""
        try:
            response = self.session.get(self.credentials.server + endpoint, timeout=5)
        except requests.RequestException:
            return False
        return response.status_code == 200


def _api_error(response: requests.Response, method: str, path: str) -> ApiError:
    try:
        status = response.json()
        reason = status.get("reason") or response.reason
        message = status.get("message") or response.text
    except ValueError:
        reason, message = response.reason, response.text
    return ApiError(response.status_code, reason, message, method, path)
