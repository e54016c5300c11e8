"""Environment variables of the operator and stage containers.

The chart rejects an extraEnv or stages.env name that it or the operator sets already, with
the value to set instead, before anything reaches the cluster.
"""

from __future__ import annotations

import pytest

from chart_rendering import ChartRenderError, operator_deployment


def operator_env(documents) -> dict[str, dict]:
    container = operator_deployment(documents)["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item for item in container["env"]}


def render_error(render, values) -> str:
    with pytest.raises(ChartRenderError) as raised:
        render(values, check=False)
    return str(raised.value)


@pytest.mark.parametrize(("values", "message"), [
    ({"extraEnv": [{"name": "POD_NAME", "value": "operator-0"}]},
     "extraEnv[0]: the chart sets POD_NAME from the pod's metadata.name, which the operator "
     "reads. Remove the extraEnv entry."),
    ({"extraEnv": [{"name": "HTTPS_PROXY", "value": "http://127.0.0.1:3128"},
                   {"name": "POD_NAMESPACE", "value": "modelconv-system"}]},
     "extraEnv[1]: the chart sets POD_NAMESPACE from the pod's metadata.namespace"),
    ({"store": {"region": "eu-west-1"},
      "extraEnv": [{"name": "AWS_REGION", "value": "us-east-1"}]},
     "extraEnv[0]: the chart sets AWS_REGION from store.region. Set store.region instead and "
     "remove the extraEnv entry."),
    ({"store": {"credentialsSecret": "modelconv-s3"},
      "extraEnv": [{"name": "AWS_EC2_METADATA_DISABLED", "value": "false"}]},
     'extraEnv[0]: the chart sets AWS_EC2_METADATA_DISABLED to "true" because '
     "store.credentialsSecret is set. Remove the extraEnv entry."),
    ({"extraEnv": [{"name": "HTTPS_PROXY", "value": "http://127.0.0.1:3128"},
                   {"name": "NO_PROXY", "value": "127.0.0.1"},
                   {"name": "HTTPS_PROXY", "valueFrom": {"configMapKeyRef": {
                       "name": "proxy", "key": "url"}}}]},
     "extraEnv[2]: HTTPS_PROXY is also the name of extraEnv[0]. Keep one of the two entries."),
])
def test_extra_env_rejects_taken_names(render, values, message):
    assert message in render_error(render, values)


def test_extra_env_rejects_every_chart_variable(render):
    # Every variable the chart can set, so a variable added to the template is covered too.
    store = {"region": "eu-west-1", "credentialsSecret": "modelconv-s3"}
    names = sorted(operator_env(render({"store": store})))
    assert names == ["AWS_EC2_METADATA_DISABLED", "AWS_REGION", "POD_NAME", "POD_NAMESPACE"]
    for name in names:
        message = render_error(render, {"store": store,
                                        "extraEnv": [{"name": name, "value": "1"}]})
        assert f"extraEnv[0]: the chart sets {name} " in message


def test_extra_env_sets_variables_the_chart_leaves_out(render):
    # Without store.region and store.credentialsSecret the chart sets neither variable.
    documents = render({"extraEnv": [
        {"name": "AWS_REGION", "value": "us-east-1"},
        {"name": "AWS_EC2_METADATA_DISABLED", "value": "true"},
    ]})
    env = operator_env(documents)
    assert env["AWS_REGION"] == {"name": "AWS_REGION", "value": "us-east-1"}
    assert env["AWS_EC2_METADATA_DISABLED"] == {"name": "AWS_EC2_METADATA_DISABLED",
                                                "value": "true"}


def operator_stage_variables() -> set[str]:
    """Return the variables that the operator sets on stage and training containers."""
    from modelconv.controller import jobs
    from modelconv.controller.config import OperatorConfig
    from modelconv.plan import plan_run
    from modelconv.spec import ConversionSpec

    spec = ConversionSpec.model_validate({
        "source": {"torchscript": {"uri": "s3://models/source/model.pt"}},
        "inputs": [{"name": "x", "shape": [1, 4]}],
        "outputs": [{"name": "logits"}],
        "train": {"image": "registry.test/trainer:1",
                  "output": {"uri": "s3://models/trained/model.pt"},
                  "outputKind": "torchscript"},
        "publish": {"model": "mlp", "version": "1.0.0"},
    })
    # An S3 endpoint adds MODELCONV_S3_ENDPOINT and AWS_ENDPOINT_URL_S3.
    config = OperatorConfig(s3_endpoint="http://127.0.0.1:9000")
    conversion = jobs.ConversionRef("mlp", "team-a", "0d9f2c1e-1111-2222-3333-444455556666")
    plan = plan_run(spec)
    built_jobs = [jobs.stage_job(conversion, plan, plan.stage("export"), spec, config),
             jobs.train_job(conversion, plan, plan.stage("train"), spec, config)]
    return {item["name"] for job in built_jobs
            for item in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_stage_env_rejects_every_operator_variable(render):
    names = operator_stage_variables()
    assert "MODELCONV_S3_ENDPOINT" in names
    assert "MODELCONV_TRAIN_OUTPUT" in names
    for name in sorted(names):
        message = render_error(render, {"stages": {"env": {name: "1"}}})
        assert f"stages.env.{name}: the operator sets {name} on " in message
        assert "the stages.env key." in message


def test_stage_env_endpoint_names_point_to_store_endpoint(render):
    for name in ("MODELCONV_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3"):
        message = render_error(render, {"stages": {"env": {name: "http://127.0.0.1:9000"}}})
        assert "Set store.endpoint instead" in message
