"""The chart rendered by the real helm: lint, the objects of each value set, values schema."""

from __future__ import annotations

import pytest

from chart_rendering import CHART, ChartRenderError, find, operator_deployment, operator_rules
from value_sets import VALUE_SETS

RELEASE_NAMESPACE = "modelconv-system"  # render_chart's default


def operator_container(documents):
    return operator_deployment(documents)["spec"]["template"]["spec"]["containers"][0]


def operator_args(documents) -> list[str]:
    return operator_container(documents)["args"]


def kinds(documents) -> list[str]:
    return sorted(document["kind"] for document in documents)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_passes_strictly(helm_without_cluster, name):
    import json

    args = ["lint", "--strict", str(CHART)]
    for key, value in VALUE_SETS[name].items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    result = helm_without_cluster.run(*args)
    assert "0 chart(s) failed" in result.stdout


def test_default_install_has_both_crds_kept_on_uninstall(rendered_sets):
    crds = find(rendered_sets["default"], "CustomResourceDefinition")
    names = sorted(crd["metadata"]["name"] for crd in crds)
    assert names == ["coremlchecks.modelconv.io", "modelconversions.modelconv.io"]
    for crd in crds:
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_crds_disabled_renders_no_crd(rendered_sets):
    assert find(rendered_sets["without-crds"], "CustomResourceDefinition") == []


def test_crds_without_keep_carry_no_resource_policy(render):
    for crd in find(render({"crds": {"keep": False}}), "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})


def test_operator_pod_is_restricted_by_default(rendered_sets):
    pod = operator_deployment(rendered_sets["default"])["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_operator_logs_json_and_exposes_probes_and_metrics(rendered_sets):
    container = operator_container(rendered_sets["default"])
    args = container["args"]
    assert args[0] == "operator"
    assert "--log-format=json" in args
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--health-port=8080" in args
    assert "--metrics-port=9090" in args


def test_image_digest_replaces_the_tag(rendered_sets):
    image = operator_container(rendered_sets["store-and-runners"])["image"]
    assert image == "modelconv/modelconv-operator@sha256:" + "ab" * 32
    default_image = operator_container(rendered_sets["default"])["image"]
    assert default_image == "modelconv/modelconv-operator:0.1.0"


def test_all_namespaces_mode_binds_one_cluster_role(rendered_sets):
    roles = operator_rules(rendered_sets["default"])
    cluster_roles = [role for role in roles if role["kind"] == "ClusterRole"]
    assert len(cluster_roles) == 1
    assert not any(arg.startswith("--namespace=") for arg in operator_args(rendered_sets["default"]))


def test_namespaced_mode_has_no_cluster_wide_rights(rendered_sets):
    documents = rendered_sets["namespaced"]
    assert find(documents, "ClusterRole") == []
    assert find(documents, "ClusterRoleBinding") == []
    watched = [role for role in operator_rules(documents)
               if role["namespace"] in ("team-a", "team-b")]
    assert sorted(role["namespace"] for role in watched) == ["team-a", "team-b"]
    assert watched[0]["rules"] == watched[1]["rules"]
    args = operator_args(documents)
    assert "--namespace=team-a" in args
    assert "--namespace=team-b" in args


def test_namespaced_mode_creates_the_stage_service_account_in_each_namespace(rendered_sets):
    accounts = find(rendered_sets["namespaced"], "ServiceAccount", name="modelconv-stage")
    assert sorted(account["metadata"]["namespace"] for account in accounts) == ["team-a", "team-b"]


def test_stage_account_flag_when_namespaced(rendered_sets):
    # Only listed namespaces get the account. With all namespaces watched there is none, and
    # stage pods keep each namespace's default ServiceAccount.
    namespaced = operator_args(rendered_sets["namespaced"])
    assert "--stage-service-account=modelconv-stage" in namespaced
    default = operator_args(rendered_sets["default"])
    assert not [arg for arg in default if arg.startswith("--stage-service-account")]
    assert find(rendered_sets["default"], "ServiceAccount", name="modelconv-stage") == []


def test_stage_account_annotations(render):
    documents = render({"watch": {"namespaces": ["team-a"]}, "stages": {"serviceAccount": {
        "name": "modelconv-stage", "annotations": {"iam.example.com/role": "publisher"}}}})
    (account,) = find(documents, "ServiceAccount", name="modelconv-stage")
    assert account["metadata"]["annotations"] == {"iam.example.com/role": "publisher"}


def test_stage_service_account_mounts_no_token_and_has_no_rights(rendered_sets):
    from chart_rendering import bound_roles

    for name in ("default", "namespaced"):
        documents = rendered_sets[name]
        for account in find(documents, "ServiceAccount", name="modelconv-stage"):
            assert account["automountServiceAccountToken"] is False
            assert bound_roles(documents, account["metadata"]["namespace"], "modelconv-stage") == []


def test_runner_role_covers_only_checks_and_leases(rendered_sets):
    from chart_rendering import bound_roles

    documents = rendered_sets["store-and-runners"]
    roles = bound_roles(documents, "modelconv-runners", "modelconv-agent")
    assert [(role["kind"], role["namespace"]) for role in roles] == [("Role", "modelconv-runners")]
    resources = {(group, resource) for rule in roles[0]["rules"]
                 for group in rule["apiGroups"] for resource in rule["resources"]}
    assert resources == {("modelconv.io", "coremlchecks"), ("modelconv.io", "coremlchecks/status"),
                         ("coordination.k8s.io", "leases")}
    for rule in roles[0]["rules"]:
        assert "delete" not in rule["verbs"]
        assert "*" not in rule["verbs"]


def test_runner_token_secret_is_optional(rendered_sets):
    assert find(rendered_sets["default"], "Secret") == []
    (secret,) = find(rendered_sets["store-and-runners"], "Secret")
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": "modelconv-agent"}


def test_two_replicas_share_one_lease(rendered_sets):
    deployment = operator_deployment(rendered_sets["two-replicas"])
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    args = operator_args(rendered_sets["two-replicas"])
    assert any(arg.startswith("--lease-name=") for arg in args)


def test_monitoring_values_render_service_monitor_and_network_policy(rendered_sets):
    documents = rendered_sets["monitoring"]
    (service,) = find(documents, "Service")
    (monitor,) = find(documents, "ServiceMonitor")
    (policy,) = find(documents, "NetworkPolicy")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == \
        operator_deployment(documents)["spec"]["selector"]["matchLabels"]
    ingress_ports = [rule["ports"][0]["port"] for rule in policy["spec"]["ingress"]]
    assert ingress_ports == [8080, 9090]
    assert policy["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    for name in ("default", "namespaced"):
        assert "ServiceMonitor" not in kinds(rendered_sets[name])
        assert "NetworkPolicy" not in kinds(rendered_sets[name])


@pytest.mark.parametrize(("endpoint", "extra_port"), [
    ("http://minio.storage:9000", 9000),
    ("http://minio.storage", 80),
    ("https://s3.example.test:8443", 8443),
    ("https://s3.example.test", None),
])
def test_network_policy_allows_the_store_port(render, endpoint, extra_port):
    documents = render({"networkPolicy": {"enabled": True}, "store": {"endpoint": endpoint}})
    (policy,) = find(documents, "NetworkPolicy")
    ports = [port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]]
    assert ports[:4] == [53, 53, 443, 6443]
    assert ports[4:] == ([] if extra_port is None else [extra_port])


def test_store_settings_reach_the_operator(rendered_sets):
    container = operator_container(rendered_sets["store-and-runners"])
    args = container["args"]
    assert "--store=s3://models/releases" in args
    assert "--s3-endpoint=https://s3.example.test" in args
    assert "--store-secret=modelconv-s3" in args
    assert container["envFrom"] == [{"secretRef": {"name": "modelconv-s3"}}]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["AWS_REGION"] == "eu-west-1"
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"


@pytest.mark.parametrize(("values", "message"), [
    ({"replicas": 2}, "at '': additional properties 'replicas' not allowed"),
    ({"image": {"repo": "x"}}, "at '/image': additional properties 'repo' not allowed"),
    ({"stages": {"image": {"tag": "v1", "digets": "x"}}},
     "at '/stages/image': additional properties 'digets' not allowed"),
    ({"podSecurityContext": {"runAsNonroot": True}},
     "at '/podSecurityContext': additional properties 'runAsNonroot' not allowed"),
    ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
    ({"logging": {"format": "xml"}}, "at '/logging/format': value must be one of 'json', 'text'"),
    ({"watch": {"namespaces": ["Team_A"]}}, "at '/watch/namespaces/0': 'Team_A' does not match"),
    ({"image": {"digest": "sha256:abc"}}, "at '/image/digest': 'sha256:abc' does not match"),
    ({"store": {"uri": "gs://bucket"}}, "at '/store/uri': 'gs://bucket' does not match"),
    ({"crds": {"keep": "yes"}}, "at '/crds/keep': got string, want boolean"),
    ({"stages": {"env": {"bad-name": "1"}}},
     "at '/stages/env': additional properties 'bad-name' not allowed"),
    ({"stages": {"env": {"HF_HUB_OFFLINE": True}}},
     "at '/stages/env/HF_HUB_OFFLINE': got boolean, want string"),
    ({"stages": {"env": {"OMP_NUM_THREADS": 4}}},
     "at '/stages/env/OMP_NUM_THREADS': got number, want string"),
])
def test_schema_rejects_bad_values_with_their_path(render, values, message):
    with pytest.raises(ChartRenderError) as raised:
        render(values, check=False)
    assert "values don't meet the specifications of the schema" in str(raised.value)
    assert message in str(raised.value)


@pytest.mark.parametrize(("values", "message"), [
    ({"metrics": {"serviceMonitor": {"enabled": True}}},
     "metrics.serviceMonitor.enabled needs metrics.service.enabled"),
    ({"metrics": {"enabled": False, "service": {"enabled": True}}},
     "metrics.service.enabled needs metrics.enabled"),
    ({"metrics": {"port": 8080}, "health": {"port": 8080}},
     "metrics.port and health.port are both 8080"),
    ({"metrics": {"service": {"enabled": True},
                  "serviceMonitor": {"enabled": True, "interval": "10s", "scrapeTimeout": "1m"}}},
     "metrics.serviceMonitor.scrapeTimeout (1m) exceeds metrics.serviceMonitor.interval (10s)"),
])
def test_inconsistent_metrics_values_fail_with_the_fix(render, values, message):
    with pytest.raises(ChartRenderError) as raised:
        render(values, check=False)
    assert message in str(raised.value)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_operator_accepts_the_rendered_arguments(rendered_sets, name):
    from modelconv.cli import build_parser
    from modelconv.cli.cluster_commands import operator_config

    container = operator_container(rendered_sets[name])
    args = build_parser().parse_args(container["args"])
    config = operator_config(args)
    values = VALUE_SETS[name]
    assert config.namespaces == tuple(values.get("watch", {}).get("namespaces", ()))
    assert config.lease_namespace == RELEASE_NAMESPACE
    assert config.stage_image.startswith("modelconv/modelconv-stage")
    assert config.store == values.get("store", {}).get("uri")
    assert args.log_format == "json"


def test_stage_defaults_reach_the_operator_config(render):
    from modelconv.cli import build_parser
    from modelconv.cli.cluster_commands import operator_config

    documents = render({"stages": {"activeDeadlineSeconds": 600, "backoffLimit": 0,
                                   "ttlSecondsAfterFinished": 60, "env": {"HF_HUB_OFFLINE": "1"},
                                   "image": {"repository": "registry.test/stage", "tag": "v2"}},
                        "leaderElection": {"leaseDurationSeconds": 30}})
    config = operator_config(build_parser().parse_args(operator_container(documents)["args"]))
    assert config.active_deadline_seconds == 600
    assert config.backoff_limit == 0
    assert config.ttl_seconds_after_finished == 60
    assert config.stage_env == (("HF_HUB_OFFLINE", "1"),)
    assert config.stage_image == "registry.test/stage:v2"
    assert config.lease_duration_seconds == 30


def test_unordered_lease_timings_fail_with_the_rule(render):
    with pytest.raises(ChartRenderError) as raised:
        render({"leaderElection": {"renewDeadlineSeconds": 20}}, check=False)
    assert "expected retryPeriodSeconds (2) < renewDeadlineSeconds (20) < " \
           "leaseDurationSeconds (15)" in str(raised.value)
