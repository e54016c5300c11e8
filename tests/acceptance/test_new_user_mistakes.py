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
    text = conversion.read_text().replace("version: 1.0.0", "version: 1.0")
    assert "version: 1.0\n" in text
    conversion.write_text(text)

    result = run_modelconv("run", conversion, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "spec.publish.version" in result.stderr
    assert 'quote the value as you wrote it, e.g. "1.0"' in result.stderr


def test_invalid_names_are_described_in_words(tmp_path):
    document = linear_document(publish={"model": "My/Model", "version": "1.0.0"})
    conversion = write_document(tmp_path / "conversion.yaml", document)

    result = run_modelconv("run", conversion, cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert "lowercase letters, digits" in result.stderr
    assert "pattern" not in result.stderr
    assert "^[" not in result.stderr
