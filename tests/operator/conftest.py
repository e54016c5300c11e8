"""Fixtures of the operator tests on the real control plane (see tests/conftest.py).

`operators` gives each test its own namespace, S3 bucket, store Secret and a ServiceAccount
bound to exactly the operator's RBAC rules; it starts `modelconv operator` processes with
that ServiceAccount's kubeconfig (never the admin's) and kills them at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import operator_harness as harness  # noqa: E402


@pytest.fixture(scope="session")
def modelconv_crd(kube_api):
    harness.install_crd(kube_api)
    # The device stage creates CoreMLChecks in the pool namespace.
    harness.install_crd(kube_api, harness.CHECK_CRD_FILE)


@pytest.fixture
def operators(kube_api, modelconv_crd, node_agent, namespace, sa_kubeconfig, s3_server,
              s3_bucket, tmp_path):
    lease_name = "modelconv-operator"
    harness.grant_operator_rbac(kube_api, namespace, lease_name)
    harness.create_store_secret(kube_api, namespace, s3_server.client_env())
    kubeconfig = sa_kubeconfig(namespace, harness.OPERATOR_ACCOUNT)
    started = harness.OperatorHarness(namespace, kubeconfig, s3_bucket, s3_server.client_env(),
                                      tmp_path, lease_name)
    try:
        yield started
    finally:
        started.stop_all()
        harness.release_finalizers(kube_api, namespace)
