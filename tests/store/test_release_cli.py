"""`modelconv verify`, `releases` and `promote`, and credentials that never leak into output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from release_fixtures import release_files

from modelconv.cli import main
from modelconv.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from modelconv.release import publish_release
from modelconv.store import open_store
from testenv.processes import free_port


# The `modelconv` console script's code path, without depending on where pip put the script.
CLI = [sys.executable, "-c", "import sys; from modelconv.cli import main; sys.exit(main())"]


def publish(location: str, tmp_path: Path, version: str, seed: int, channels=()) -> None:
    publish_release(open_store(location), model="mobilenet", version=version,
                    files=release_files(tmp_path / version, seed=seed), manifest={},
                    channels=channels)


@pytest.fixture(params=["s3", "folder"])
def location(request, tmp_path: Path) -> str:
    """A store URL with releases 1.0.0 (channel stable) and 1.1.0 of mobilenet."""
    if request.param == "s3":
        url = request.getfixturevalue("s3_url")
    else:
        url = str(tmp_path / "releases")
    publish(url, tmp_path, "1.0.0", seed=1, channels=["stable"])
    publish(url, tmp_path, "1.1.0", seed=2)
    return url


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_verify_prints_every_file(location: str, capsys) -> None:
    code, out, err = run_cli(capsys, "verify", f"{location}/mobilenet/1.0.0")

    assert code == EXIT_OK
    assert out.startswith("verified ")
    for name in ("model.mlpackage.zip", "model.onnx", "report.json"):
        assert name in out
    assert err == ""


def test_verify_json_output(location: str, capsys) -> None:
    code, out, _ = run_cli(capsys, "verify", f"{location}/mobilenet/1.0.0/", "--output", "json")

    document = json.loads(out)
    assert code == EXIT_OK
    assert document["succeeded"] is True
    assert [item["name"] for item in document["files"]] == [
        "model.mlpackage.zip", "model.onnx", "report.json"]


def test_verify_changed_file_prints_one_error_line(tmp_path: Path, capsys) -> None:
    url = str(tmp_path / "releases")
    publish(url, tmp_path, "1.0.0", seed=3)
    (tmp_path / "releases" / "mobilenet" / "1.0.0" / "model.onnx").write_bytes(b"changed")

    code, out, err = run_cli(capsys, "verify", f"{url}/mobilenet/1.0.0")

    assert code == EXIT_FAILED
    assert out.startswith("FAILED ")
    assert err.startswith("modelconv: IntegrityFailed: ")
    assert "model.onnx" in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_releases_lists_versions_and_channels(location: str, capsys) -> None:
    code, out, _ = run_cli(capsys, "releases", f"{location}/mobilenet")

    lines = out.strip().splitlines()
    assert code == EXIT_OK
    assert lines[0].endswith("mobilenet: 2 versions")
    assert lines[1].split() == ["VERSION", "CREATED", "CHANNELS", "MANIFEST", "SHA256"]
    assert lines[2].split()[0] == "1.0.0"
    assert lines[2].split()[2] == "stable"
    assert lines[3].split()[0] == "1.1.0"
    assert lines[3].split()[2] == "-"


def test_releases_json_output(location: str, capsys) -> None:
    code, out, _ = run_cli(capsys, "releases", f"{location}/mobilenet", "--output", "json")

    document = json.loads(out)
    assert code == EXIT_OK
    assert [entry["version"] for entry in document["versions"]] == ["1.0.0", "1.1.0"]
    assert document["channels"]["stable"]["version"] == "1.0.0"
    assert document["versions"][1]["location"].endswith("/mobilenet/1.1.0")


def test_promote_moves_the_channel(location: str, capsys) -> None:
    code, out, _ = run_cli(capsys, "promote", f"{location}/mobilenet/1.1.0", "stable")

    assert code == EXIT_OK
    assert out.strip() == "mobilenet: channel stable -> 1.1.0 (was 1.0.0)"
    _, listing, _ = run_cli(capsys, "releases", f"{location}/mobilenet", "--output", "json")
    assert json.loads(listing)["channels"]["stable"]["version"] == "1.1.0"


def test_promote_to_an_invalid_channel_names_the_argument(location: str, capsys) -> None:
    code, out, err = run_cli(capsys, "promote", f"{location}/mobilenet/1.1.0", "Stable")

    assert code == EXIT_BAD_INPUT
    assert out == ""
    assert err.startswith("modelconv: InvalidSpec: CHANNEL: 'Stable' is invalid: ")
    assert "publish.channels" not in err


def test_promote_of_an_unpublished_version_fails(location: str, capsys) -> None:
    code, out, err = run_cli(capsys, "promote", f"{location}/mobilenet/3.0.0", "stable")

    assert code == EXIT_FAILED
    assert out == ""
    assert err.startswith("modelconv: ReleaseNotFound: ")
    assert "no manifest.json" in err


@pytest.mark.parametrize(
    "argv",
    [
        ("verify", "mobilenet"),
        ("verify", "s3://only-a-bucket"),
        ("verify", "{root}/Mobilenet/1.0.0"),
        ("verify", "{root}/mobilenet/..."),
        ("promote", "{root}/mobilenet/1.0.0", "Not_A_Channel"),
        ("releases", "{root}/.."),
    ],
)
def test_invalid_locations_and_names_exit_2(tmp_path: Path, capsys, argv) -> None:
    argv = [part.format(root=tmp_path) for part in argv]

    code, _, err = run_cli(capsys, *argv)

    assert code == EXIT_BAD_INPUT
    assert err.startswith("modelconv: InvalidSpec: ")
    assert "Traceback" not in err


def test_verify_of_the_manifest_file_names_the_folder(location: str, capsys) -> None:
    code, _, err = run_cli(capsys, "verify", f"{location}/mobilenet/1.0.0/manifest.json")

    assert code == EXIT_BAD_INPUT
    assert "is the manifest file" in err
    assert f"Give the release folder, '{location}/mobilenet/1.0.0'" in err


def test_releases_of_an_unknown_model_fails(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "releases", f"{tmp_path}/nothing")

    assert code == EXIT_FAILED
    assert "has no releases" in err


def test_debug_flag_shows_the_stack_trace(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "--debug", "verify", f"{tmp_path}/mobilenet/9.9.9")

    assert code == EXIT_FAILED
    assert "Traceback" in err
    assert "modelconv: ReleaseNotFound" in err


def test_cli_runs_as_a_separate_process(location: str) -> None:
    result = subprocess.run(
        [*CLI, "releases", f"{location}/mobilenet"],
        capture_output=True, text=True, timeout=120,
    )

    assert result.returncode == EXIT_OK, result.stderr
    assert "1.0.0" in result.stdout


# --- credentials never leak -------------------------------------------------------------

CANARY_KEY_ID = "AKIACANARY0KEY0ID000"
CANARY_SECRET = "canary-secret-9f1c2e7d-must-not-leak"
PUBLISH_WITH_DEBUG_LOGS = textwrap.dedent(
    """
    import logging, sys
    from pathlib import Path
    from modelconv.release import publish_release
    from modelconv.store import open_store

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    folder = Path(sys.argv[2])
    publish_release(open_store(sys.argv[1]), model="mobilenet", version="5.0.0",
                    files={path.name: path for path in folder.iterdir()},
                    manifest={"source": {
                        "kind": "onnx",
                        "uri": "https://user:" + sys.argv[3] + "@models.example/m.onnx",
                    }},
                    channels=["stable"])
    """
)


def test_credentials_appear_in_no_output_or_file(s3_url, s3_server, s3_bucket, tmp_path,
                                                 monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CANARY_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY_SECRET)
    env = dict(os.environ)
    folder = tmp_path / "files"
    release_files(folder, seed=4, package_size=12 * 1024 * 1024)

    # Everything a user or a log collector would see, debug logs of all libraries included.
    published = subprocess.run(
        [sys.executable, "-c", PUBLISH_WITH_DEBUG_LOGS, s3_url, str(folder), CANARY_SECRET],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert published.returncode == 0, published.stderr[-2000:]
    outputs = {"publish (debug logs)": published.stdout + published.stderr}
    commands = {
        "verify": ["verify", f"{s3_url}/mobilenet/5.0.0"],
        "verify json": ["verify", f"{s3_url}/mobilenet/5.0.0", "--output", "json"],
        "releases": ["releases", f"{s3_url}/mobilenet", "--output", "json"],
        "promote": ["promote", f"{s3_url}/mobilenet/5.0.0", "canary"],
        "missing bucket": ["verify", "s3://no-such-bucket-canary/x/mobilenet/5.0.0"],
        "debug failure": ["--debug", "verify", "s3://no-such-bucket-canary/x/mobilenet/5.0.0"],
    }
    for name, argv in commands.items():
        result = subprocess.run([*CLI, *argv],
                                capture_output=True, text=True, env=env, timeout=120)
        outputs[name] = result.stdout + result.stderr
    refused_env = dict(env, MODELCONV_S3_ENDPOINT=f"http://127.0.0.1:{free_port()}",
                       MODELCONV_S3_MAX_ATTEMPTS="1")
    refused = subprocess.run(
        [*CLI, "releases", f"{s3_url}/mobilenet"],
        capture_output=True, text=True, env=refused_env, timeout=120,
    )
    outputs["unreachable endpoint"] = refused.stdout + refused.stderr

    assert "botocore" in outputs["publish (debug logs)"]  # the debug logs were captured
    assert "StoreUnavailable" in outputs["missing bucket"]
    assert "StoreUnavailable" in outputs["unreachable endpoint"]
    for name, text in outputs.items():
        assert CANARY_SECRET not in text, name
        assert "X-Amz-Signature" not in text, name
        if name != "publish (debug logs)":  # botocore's debug log shows the key id
            assert CANARY_KEY_ID not in text, name
    client = s3_server.client()
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=s3_bucket)["Contents"]]
    assert "releases/mobilenet/5.0.0/manifest.json" in keys
    for key in keys:
        data = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        assert CANARY_SECRET.encode() not in data, key
        assert CANARY_KEY_ID.encode() not in data, key
