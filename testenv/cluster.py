"""A local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager.

Everything listens on 127.0.0.1 at free ports and lives in one temporary folder, which is
removed when the cluster stops. The API server authorizes with Node and RBAC, signs
ServiceAccount tokens with its own key pair and accepts one admin identity (a client
certificate in the group system:masters). There is no kubelet and no scheduler: the node
agent (testenv.node_agent) binds and runs pods.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import requests

from testenv import binaries
from testenv.api import Credentials, KubeAPI, write_kubeconfig
from testenv.pki import ClusterPKI, issue_cluster_pki
from testenv.processes import ManagedProcess, free_port, remove_dir_at_exit, wait_until

log = logging.getLogger(__name__)

# Controllers the test cluster runs. The list is explicit so that a controller the tests do
# not need costs no CPU; node-lifecycle is left out because the node agent is the only node
# and its pods must not be evicted while the agent restarts.
DEFAULT_CONTROLLERS = (
    "job-controller",
    "cronjob-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "replicaset-controller",
    "deployment-controller",
    "ttl-after-finished-controller",
    "pod-garbage-collector-controller",
)

# Only a range to allocate Service IPs from; nothing in the test cluster routes to them.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
START_TIMEOUT = 90.0


class Cluster:
    """A running control plane; use `start()` and `stop()`, or `with Cluster() as cluster`."""

    def __init__(self, controllers: tuple[str, ...] = DEFAULT_CONTROLLERS) -> None:
        self.controllers = controllers
        self.workdir: Path | None = None
        self.processes: list[ManagedProcess] = []
        self.startup_seconds: dict[str, float] = {}
        self._remove_workdir = None

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user `testenv-admin`, group system:masters)."""
        return self._path("admin.kubeconfig")

    @property
    def ca_file(self) -> Path:
        return self._path("pki/ca.crt")

    @property
    def log_dir(self) -> Path:
        return self._path("logs")

    def api(self) -> KubeAPI:
        """Return a new client authenticated as the admin; the caller closes it."""
        return KubeAPI(self.credentials)

    def _path(self, relative: str) -> Path:
        if self.workdir is None:
            raise RuntimeError("the cluster is not started")
        return self.workdir / relative

    def start(self) -> Cluster:
        """Start etcd, the API server and the controller manager; wait until each is healthy.

        Raises MissingBinaryError when hack/build-k8s.sh has not been run, and
        RuntimeError or TimeoutError (with the end of the failing process's log) when a
        component does not come up.
        """
        tools = binaries.control_plane_binaries()
        began = time.monotonic()
        self.workdir = Path(tempfile.mkdtemp(prefix="modelconv-testenv-"))
        self._remove_workdir = remove_dir_at_exit(self.workdir)
        self.log_dir.mkdir()
        try:
            self.pki = issue_cluster_pki(self.workdir / "pki")
            self._start_etcd(tools["etcd"])
            self._start_apiserver(tools["kube-apiserver"])
            self._start_controller_manager(tools["kube-controller-manager"])
        except BaseException:
            self.stop()
            raise
        self.startup_seconds["total"] = time.monotonic() - began
        log.info("cluster up at %s in %.1f s", self.server, self.startup_seconds["total"])
        return self

    def stop(self) -> None:
        """Stop every process, newest first, and remove the temporary folder."""
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self._remove_workdir is not None:
            self._remove_workdir()
            self._remove_workdir = None

    def _start(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.log_dir / f"{name}.log")
        self.processes.append(process)
        return process

    def _start_etcd(self, etcd: Path) -> None:
        began = time.monotonic()
        client_url = f"http://127.0.0.1:{free_port()}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        self.etcd_url = client_url
        process = self._start("etcd", [
            str(etcd),
            "--name=testenv",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=testenv={peer_url}",
            # The data is thrown away with the cluster, so durability buys nothing here.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ])
        wait_until(lambda: _http_ok(f"{client_url}/health"), START_TIMEOUT, "etcd /health",
                   process=process)
        self.startup_seconds["etcd"] = time.monotonic() - began

    def _start_apiserver(self, apiserver: Path) -> None:
        began = time.monotonic()
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        pki: ClusterPKI = self.pki
        process = self._start("kube-apiserver", [
            str(apiserver),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # The endpoint reconciler rejects a loopback address; nothing in this cluster
            # routes through the `kubernetes` Service, so it gets no endpoints.
            "--endpoint-reconciler-type=none",
            f"--secure-port={port}",
            f"--tls-cert-file={pki.apiserver.cert}",
            f"--tls-private-key-file={pki.apiserver.key}",
            f"--client-ca-file={pki.ca.cert}",
            # Front-proxy settings published for delegated authentication (the controller
            # manager reads them at start). No front-proxy certificate is ever issued.
            f"--requestheader-client-ca-file={pki.ca.cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_public_key}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            "--profiling=false",
        ])
        self.credentials = Credentials(self.server, pki.ca.cert, pki.admin.cert, pki.admin.key)
        write_kubeconfig(self.kubeconfig, self.credentials, "testenv-admin")
        api = self.api()
        try:
            wait_until(lambda: api.healthy("/readyz"), START_TIMEOUT, "kube-apiserver /readyz",
                       process=process)
        finally:
            api.close()
        self.startup_seconds["kube-apiserver"] = time.monotonic() - began

    def _start_controller_manager(self, controller_manager: Path) -> None:
        began = time.monotonic()
        pki: ClusterPKI = self.pki
        kubeconfig = write_kubeconfig(
            self._path("controller-manager.kubeconfig"),
            Credentials(self.server, pki.ca.cert, pki.controller_manager.cert,
                        pki.controller_manager.key),
            "system:kube-controller-manager",
        )
        port = free_port()
        process = self._start("kube-controller-manager", [
            str(controller_manager),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={pki.controller_manager_serving.cert}",
            f"--tls-private-key-file={pki.controller_manager_serving.key}",
            f"--controllers={','.join(self.controllers)}",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca.cert}",
            # Each controller acts as its own ServiceAccount, bound by the bootstrap policy to
            # its system:controller:* role, as in kubeadm clusters. The controller manager's own
            # identity is not allowed to do the controllers' work.
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            "--profiling=false",
        ])
        wait_until(lambda: _http_ok(f"https://127.0.0.1:{port}/healthz", pki.ca.cert),
                   START_TIMEOUT, "kube-controller-manager /healthz", process=process)
        self.startup_seconds["kube-controller-manager"] = time.monotonic() - began


def _http_ok(url: str, ca_file: Path | None = None) -> bool:
    try:
        with requests.Session() as session:
            session.trust_env = False
            verify = str(ca_file) if ca_file else True
            return session.get(url, timeout=5, verify=verify).status_code == 200
    except requests.RequestException:
        return False
