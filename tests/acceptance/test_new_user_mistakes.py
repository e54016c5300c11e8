"""Mistakes a new user makes on the command line, each of which must get a classified error.

A classified error is one line `modelconv: <Reason>: <what to fix>` with the documented exit
code (2 for invalid input), never `internal error` and never a traceback.
"""

from __future__ import annotations

import os
import subprocess

from new_user_runs import MODELCONV, linear_document, run_modelconv, write_document


def assert_no_internal_error(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    assert "internal error" not in output, output
    assert "Traceback" not in output, output


def test_misspelled_field_is_named_in_error(tmp_path):
    document = linear_document()
    factory = document["spec"]["source"]["factory"]
    factory["entrypoin"] = factory.pop("entrypoint")
    conversion = write_document(tmp_path / "conversion.yaml", document)

    result = run_modelconv("run", conversion, cwd=tmp_path)

    assert result.returncode == 2
    assert "InvalidSpec" in result.stderr
    assert "entrypoin:" in result.stderr or "'entrypoin'" in result.stderr, result.stderr


def test_huge_input_shape_is_invalid_spec(tmp_path):
    # 4e10 float elements: no machine has the memory for the validation samples.
    spec = linear_document(inputs=[{"name": "x", "shape": [100000, 100000, 4]}])
    conversion = write_document(tmp_path / "conversion.yaml", spec)

    result = run_modelconv("run", conversion, "--store", tmp_path / "releases", cwd=tmp_path)

    assert_no_internal_error(result)
    assert result.returncode == 2
    assert "InvalidSpec" in result.stderr


def test_store_path_that_is_a_file_is_classified(tmp_path):
    not_a_folder = tmp_path / "releases.txt"
    not_a_folder.write_text("a file, not a folder\n")
    conversion = write_document(tmp_path / "conversion.yaml", linear_document())

    result = run_modelconv("run", conversion, "--store", not_a_folder, cwd=tmp_path)

    assert_no_internal_error(result)
    assert result.returncode == 2
    assert "InvalidArgument: --store" in result.stderr


def test_empty_store_option_is_rejected(tmp_path):
    # `--store "$STORE"` with STORE unset must not publish to ./modelconv-releases.
    conversion = write_document(tmp_path / "conversion.yaml", linear_document())

    result = run_modelconv("run", conversion, "--store", "", cwd=tmp_path)

    assert not (tmp_path / "modelconv-releases").exists(), "published to the default store"
    assert result.returncode == 2, result.stdout


def test_releases_of_a_file_location_is_classified(tmp_path):
    model_folder = tmp_path / "releases" / "linear"
    model_folder.mkdir(parents=True)
    (model_folder / "notes.txt").write_text("not a model\n")

    result = run_modelconv("releases", model_folder / "notes.txt", cwd=tmp_path)

    assert_no_internal_error(result)
    assert result.returncode in (1, 2)


def test_schema_piped_into_head_prints_no_traceback(tmp_path):
    # `modelconv schema | head` where head exits before the schema is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    process = subprocess.Popen(
        [MODELCONV, "schema"], stdout=write_end, stderr=subprocess.PIPE, cwd=tmp_path
    )
    os.close(write_end)
    stderr = process.communicate()[1].decode()

    assert "Traceback" not in stderr, stderr


def test_workdir_that_is_a_file_is_classified(tmp_path):
    not_a_folder = tmp_path / "work.txt"
    not_a_folder.write_text("a file, not a folder\n")
    conversion = write_document(tmp_path / "conversion.yaml", linear_document())

    result = run_modelconv(
        "run", conversion, "--store", tmp_path / "releases", "--workdir", not_a_folder,
        cwd=tmp_path,
    )

    assert_no_internal_error(result)
    assert result.returncode == 2


def test_junit_path_that_is_a_folder_is_classified(tmp_path):
    # The JUnit path is checked before any stage runs, so the mistake costs no conversion.
    spec = linear_document(source={"onnx": {"uri": str(tmp_path / "missing.onnx")}})
    conversion = write_document(tmp_path / "conversion.yaml", spec)

    result = run_modelconv(
        "run", conversion, "--store", tmp_path / "releases", "--junit", tmp_path, cwd=tmp_path
    )

    assert_no_internal_error(result)
    assert result.returncode == 2
    assert "InvalidArgument: --junit" in result.stderr



def test_unsupported_store_scheme_is_a_usage_error(tmp_path):
    conversion = write_document(tmp_path / "conversion.yaml", linear_document())

    result = run_modelconv("run", conversion, "--store", "ftp://example.invalid/models",
                           cwd=tmp_path)

    assert_no_internal_error(result)
    assert result.returncode == 2, result.stderr
    output = result.stdout + result.stderr
    assert "InvalidArgument" in output
    assert "s3://bucket/prefix" in output


def test_onnx_source_that_is_a_directory_says_so(tmp_path):
    folder = tmp_path / "exported"
    folder.mkdir()
    document = linear_document(source={"onnx": {"uri": str(folder)}})
    conversion = write_document(tmp_path / "conversion.yaml", document)

    result = run_modelconv("run", conversion, "--store", tmp_path / "releases", cwd=tmp_path)

    assert_no_internal_error(result)
    assert result.returncode == 2, result.stderr
    output = result.stdout + result.stderr
    assert f"{folder} is a directory" in output
    assert "file not found" not in output


def test_unquoted_version_gets_a_hint_to_quote_it(tmp_path):
    conversion = write_document(tmp_path / "conversion.yaml", linear_document())
    text = conversion.read_text().replace("version: 1.0.0", "version: 1.10")
    assert "version: 1.10\n" in text
    conversion.write_text(text)

    result = run_modelconv("run", conversion, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "spec.publish.version" in result.stderr
    # YAML turned 1.10 into 1.1, so the message must not claim to know the text.
    assert "YAML read the unquoted value as the number 1.1;" in result.stderr
    assert "put the value in quotes exactly as you wrote it" in result.stderr
    assert '"1.1"' not in result.stderr


def test_invalid_names_are_described_in_words(tmp_path):
    document = linear_document(publish={"model": "My/Model", "version": "1.0.0"})
    conversion = write_document(tmp_path / "conversion.yaml", document)

    result = run_modelconv("run", conversion, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "lowercase letters, digits" in result.stderr
    assert "pattern" not in result.stderr
    assert "^[" not in result.stderr


def test_unwritable_junit_and_workdir_rejected_early(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    conversion = write_document(tmp_path / "conversion.yaml", linear_document())
    cases = [
        ("--junit", "/proc/modelconv-junit.xml"),
        ("--junit", tmp_path / "afile" / "junit.xml"),
        ("--workdir", "/proc/modelconv-workdir"),
        ("--workdir", tmp_path / "afile" / "workdir"),
    ]
    for option, path in cases:
        result = run_modelconv(
            "run", conversion, "--store", tmp_path / "releases", option, path, cwd=tmp_path
        )

        assert_no_internal_error(result)
        assert result.returncode == 2, (option, path, result.stderr)
        assert f"InvalidArgument: {option} {path}" in result.stderr
        assert not (tmp_path / "releases" / "linear").exists(), (option, path)


def test_store_that_cannot_be_created_is_classified(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    conversion = write_document(tmp_path / "conversion.yaml", linear_document())
    for store, reason, exit_code in (
        ("/proc/modelconv-store", "AccessDenied", 1),
        (tmp_path / "afile" / "sub", "InvalidArgument", 2),
    ):
        result = run_modelconv("run", conversion, "--store", store, cwd=tmp_path)

        assert_no_internal_error(result)
        assert result.returncode == exit_code, (store, result.stderr)
        assert reason in result.stdout + result.stderr, store


def test_invalid_s3_settings_are_invalid_arguments(tmp_path):
    cases = [
        ({"MODELCONV_S3_ENDPOINT": "notaurl"}, "MODELCONV_S3_ENDPOINT='notaurl'"),
        (
            {"MODELCONV_S3_ENDPOINT": "http://127.0.0.1:9", "MODELCONV_S3_MAX_ATTEMPTS": "abc"},
            "MODELCONV_S3_MAX_ATTEMPTS='abc'",
        ),
        (
            {"MODELCONV_S3_ENDPOINT": "http://127.0.0.1:9", "MODELCONV_S3_PART_SIZE_MIB": "1"},
            "MODELCONV_S3_PART_SIZE_MIB='1' is invalid: use a whole number of at least 5",
        ),
        (
            {"MODELCONV_S3_ENDPOINT": "http://127.0.0.1:9/?X-Amz-Signature=secret"},
            "MODELCONV_S3_ENDPOINT='http://127.0.0.1:9/' has credentials, a query or a fragment",
        ),
    ]
    for settings, named in cases:
        environment = dict(os.environ, AWS_EC2_METADATA_DISABLED="true", **settings)
        result = subprocess.run(
            [MODELCONV, "releases", "s3://modelconv-bucket/m"],
            capture_output=True, text=True, env=environment, cwd=tmp_path,
        )

        assert_no_internal_error(result)
        assert result.returncode == 2, result.stderr
        assert f"InvalidArgument: {named}" in result.stderr
        assert "secret" not in result.stderr


def test_store_url_without_bucket_says_so(tmp_path):
    conversion = write_document(tmp_path / "conversion.yaml", linear_document())

    result = run_modelconv("run", conversion, "--store", "s3://", "--output", "json",
                           "--workdir", tmp_path / "work", cwd=tmp_path)

    assert_no_internal_error(result)
    assert result.returncode == 2
    assert "'s3://' names no bucket" in result.stderr
    assert "s3::" not in result.stdout + result.stderr
