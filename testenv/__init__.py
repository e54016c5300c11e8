"""A real, local test environment for modelconv: a Kubernetes control plane (etcd,
kube-apiserver, kube-controller-manager) built from the Go module proxy, a node agent that
runs pods as local processes, an S3 server (moto) and helm, all on loopback.

It lives at the repository root and is not installed: run `python -m testenv up` from
there, or import it from tests (the root conftest puts the root on sys.path).
See docs/test-environment.md.
"""

from testenv.binaries import MissingBinaryError, binary
from testenv.cluster import Cluster
from testenv.node_agent_process import NodeAgentProcess
from testenv.s3 import S3Server
from testenv.service_accounts import issue_service_account_kubeconfig

__all__ = [
    "Cluster",
    "MissingBinaryError",
    "NodeAgentProcess",
    "S3Server",
    "binary",
    "issue_service_account_kubeconfig",
]
