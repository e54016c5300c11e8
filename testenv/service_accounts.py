"""Kubeconfigs that act as a ServiceAccount, for testing RBAC as the operator or a runner.

The token comes from the TokenRequest API (`serviceaccounts/<name>/token`), so it is the
same kind of bound, expiring token a pod gets, signed by the cluster's service-account key.
"""

from __future__ import annotations

from pathlib import Path

from testenv.api import ApiError, Credentials, KubeAPI, write_kubeconfig

DEFAULT_TOKEN_SECONDS = 3600


def ensure_service_account(api: KubeAPI, namespace: str, name: str) -> None:
    """Create the ServiceAccount unless it exists already."""
    body = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}
    try:
        api.post(f"/api/v1/namespaces/{namespace}/serviceaccounts", body)
    except ApiError as error:
        if error.status != 409:
            raise


def request_token(api: KubeAPI, namespace: str, name: str,
                  expiration_seconds: int = DEFAULT_TOKEN_SECONDS) -> str:
    """Return a new token for the ServiceAccount, valid for `expiration_seconds`."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": expiration_seconds},
    }
    response = api.post(f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body)
    return response["status"]["token"]


def issue_service_account_kubeconfig(
    api: KubeAPI,
    namespace: str,
    name: str,
    path: Path,
    *,
    expiration_seconds: int = DEFAULT_TOKEN_SECONDS,
) -> Path:
    """Write a kubeconfig at `path` that authenticates as ServiceAccount `namespace/name`.

    `api` must be allowed to create the ServiceAccount and request its token (the admin
    client is). The ServiceAccount is created when missing; its RBAC bindings are the
    caller's business. The kubeconfig's default namespace is `namespace`.
    """
    ensure_service_account(api, namespace, name)
    token = request_token(api, namespace, name, expiration_seconds)
    credentials = Credentials(api.credentials.server, api.credentials.ca_file, token=token)
    user = f"system:serviceaccount:{namespace}:{name}"
    return write_kubeconfig(path, credentials, user, namespace=namespace)
