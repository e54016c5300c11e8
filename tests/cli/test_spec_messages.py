"""Messages for spec values that YAML or the schema reads differently from what was meant.

Each case is a YAML line as a user would write it, read through `load_conversion` as
`modelconv run` reads a file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cli_runs import tiny_document
from modelconv.errors import ConversionError
from modelconv.spec import load_conversion


def conversion_text(replace: str, with_text: str) -> str:
    text = yaml.safe_dump(tiny_document(), sort_keys=False)
    assert replace in text
    return text.replace(replace, with_text)


def invalid_spec_message(tmp_path: Path, text: str) -> str:
    path = tmp_path / "conversion.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConversionError) as error:
        load_conversion(str(path))
    assert error.value.reason == "InvalidSpec"
    return error.value.message


@pytest.mark.parametrize(
    "written, reading",
    [
        ("1.10", "the number 1.1"),
        ("2026-01-01", "the date 2026-01-01"),
        ("yes", "the boolean true"),
        ("null", "null"),
    ],
)
def test_unquoted_version_gets_quoting_hint(tmp_path, written, reading):
    text = conversion_text("version: 1.0.0", f"version: {written}")

    message = invalid_spec_message(tmp_path, text)

    assert message.startswith("spec.publish.version: ")
    assert f"YAML read the unquoted value as {reading};" in message
    assert "put the value in quotes exactly as you wrote it" in message
    assert "valid string" not in message


def test_float_version_hint_guesses_no_text(tmp_path):
    message = invalid_spec_message(tmp_path, conversion_text("version: 1.0.0", "version: 1.10"))

    assert '"1.1"' not in message


@pytest.mark.parametrize("value, word", [(".nan", "NaN"), (".inf", "infinity")])
def test_non_finite_tolerance_is_named(tmp_path, value, word):
    text = conversion_text("  validation:\n", f"  validation:\n    atol: {value}\n")

    message = invalid_spec_message(tmp_path, text)

    assert message == f"spec.validation.atol: {word} is not allowed: give a finite number"


def test_bare_samples_file_path_names_mapping(tmp_path):
    text = conversion_text("  validation:\n", "  validation:\n    samplesFile: /x.npz\n")

    message = invalid_spec_message(tmp_path, text)

    assert message.startswith("spec.validation.samplesFile: '/x.npz' is invalid")
    assert "{uri: /x.npz}" in message
    assert "FileSource" not in message


def test_boolean_dimension_is_rejected(tmp_path):
    text = conversion_text("  - 2\n    - 8\n", "  - 1\n    - true\n")

    message = invalid_spec_message(tmp_path, text)

    assert message.startswith("spec.inputs[0].shape[1]: ")
    assert "boolean true" in message


def test_boolean_sample_count_is_rejected(tmp_path):
    text = conversion_text("      count: 2\n", "      count: true\n")

    message = invalid_spec_message(tmp_path, text)

    assert message.startswith("spec.validation.samples.count: ")



def test_snake_case_field_names_the_camel_case_one(tmp_path):
    document = tiny_document()
    document["spec"]["validation"] = {"min_cosine": 0.99}

    message = invalid_spec_message(tmp_path, yaml.safe_dump(document, sort_keys=False))

    assert message == (
        "spec.validation.min_cosine: unknown field; field names are camelCase, e.g. minCosine"
    )


def test_nested_factory_kwarg_asks_for_a_scalar(tmp_path):
    document = tiny_document()
    document["spec"]["source"]["factory"]["kwargs"] = {"width": {"nested": 1}}

    message = invalid_spec_message(tmp_path, yaml.safe_dump(document, sort_keys=False))

    assert message.startswith("spec.source.factory.kwargs.width: ")
    assert message.endswith("is invalid: use a string, number or boolean")
    assert ".str" not in message


@pytest.mark.parametrize("field, name", [("inputs", "input"), ("outputs", "output")])
def test_repeated_name_message_is_singular(tmp_path, field, name):
    entry = {"name": "x", "shape": [2, 8]} if field == "inputs" else {"name": "y"}
    document = tiny_document(**{field: [entry, entry]})

    message = invalid_spec_message(tmp_path, yaml.safe_dump(document, sort_keys=False))

    assert message.startswith(f"spec: {name} names must be unique (repeated: ")


def test_bare_output_name_asks_for_mapping(tmp_path):
    document = tiny_document(outputs=["y"])

    message = invalid_spec_message(tmp_path, yaml.safe_dump(document, sort_keys=False))

    assert message == (
        "spec.outputs[0]: 'y' is invalid: each output is a mapping with a name, e.g. `- name: y`"
    )
    assert "TensorOutput" not in message


def test_bare_input_name_asks_for_mapping(tmp_path):
    document = tiny_document(inputs=["x"])

    message = invalid_spec_message(tmp_path, yaml.safe_dump(document, sort_keys=False))

    assert message.startswith(
        "spec.inputs[0]: 'x' is invalid: each input is a mapping with a name and a shape"
    )
    assert "TensorInput" not in message


def test_malformed_range_names_range_form(tmp_path):
    text = conversion_text("  - 2\n    - 8\n", "  - 1\n    - 1-8\n")

    message = invalid_spec_message(tmp_path, text)

    assert message == (
        "spec.inputs[0].shape[1]: '1-8' is invalid: use a whole number or a range MIN..MAX,"
        " e.g. 1..512"
    )


def test_malformed_quantity_names_quantity_form(tmp_path):
    document = tiny_document(resources={"limits": {"cpu": "2 cores"}})

    message = invalid_spec_message(tmp_path, yaml.safe_dump(document, sort_keys=False))

    assert message.startswith("spec.resources.limits.cpu: '2 cores' is invalid: use a Kubernetes")


def test_output_named_like_input_is_rejected(tmp_path):
    document = tiny_document(outputs=[{"name": "x"}])

    message = invalid_spec_message(tmp_path, yaml.safe_dump(document, sort_keys=False))

    assert message == (
        "spec: outputs[0].name 'x' is also the name of an input; names of inputs and outputs"
        " must all be distinct, so rename the output, e.g. to x_out"
    )


def test_duplicate_key_names_key_and_lines(tmp_path):
    coreml = "  coreml:\n    precision: float16\n    precision: float32\n"
    text = conversion_text("  validation:\n", f"{coreml}  validation:\n")
    first_line = text.splitlines().index("    precision: float16") + 1

    message = invalid_spec_message(tmp_path, text)

    assert message == (
        f"{tmp_path / 'conversion.yaml'}, line {first_line + 1}: duplicate key 'precision',"
        f" first set on line {first_line}; keep one of the two because YAML allows each key"
        " once per mapping"
    )


def test_duplicate_key_in_flow_mapping_is_rejected(tmp_path):
    coreml = "  coreml: {precision: float16, precision: auto}\n"
    text = conversion_text("  validation:\n", f"{coreml}  validation:\n")

    message = invalid_spec_message(tmp_path, text)

    assert "duplicate key 'precision'" in message


def test_merge_key_may_be_overridden(tmp_path):
    coreml = "  coreml:\n    <<: {precision: float16}\n    precision: float32\n"
    path = tmp_path / "conversion.yaml"
    path.write_text(conversion_text("  validation:\n", f"{coreml}  validation:\n"))

    conversion = load_conversion(str(path))

    assert conversion.spec.coreml.precision == "float32"
