"""Fixtures of the runner pool tests.

- `tiny_model`, `slow_model`: real Core ML packages converted once per session from small
  PyTorch models, with samples (inputs and PyTorch reference outputs) as the validate stage
  writes them.
- `s3_store`: an S3Store on the shared moto server, so presigned URLs are real URLs of a
  real S3 server on loopback. moto does not reject expired presigned URLs, so expiry is
  exercised through the runner's own check of `expiresAt`.
- `pool`: the CoreMLCheck CRD installed, a fresh pool namespace, the agent Role of
  examples/macos/agent-rbac.yaml bound to a ServiceAccount, and its kubeconfig.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runner_fixtures import (
    Pool,
    TinyModel,
    apply_agent_rbac,
    build_tiny_model,
    install_coremlcheck_crd,
)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A wider, deeper MLP: thousands of predictions of it take seconds, not milliseconds."""
    return build_tiny_model(tmp_path_factory.mktemp("slow-model"), width=512, depth=6)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake static credentials for the moto server and no AWS config files."""
    from testenv.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture
def s3_store(aws_env, s3_server, s3_bucket):
    from modelconv.store.s3 import S3Settings, S3Store

    settings = S3Settings(endpoint_url=s3_server.endpoint_url, region="us-east-1")
    return S3Store(s3_bucket, "pool", settings)


@pytest.fixture(scope="session")
def coremlcheck_crd(kube_client) -> None:
    install_coremlcheck_crd(kube_client)


@pytest.fixture
def pool(cluster, kube_client, coremlcheck_crd, namespace, sa_kubeconfig) -> Pool:
    apply_agent_rbac(kube_client, namespace)
    return Pool(namespace, sa_kubeconfig(namespace, "modelconv-agent"), cluster.kubeconfig,
                kube_client)
