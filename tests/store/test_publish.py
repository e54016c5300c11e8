"""publish_release on S3 and in a folder: immutability, manifest last, retries, concurrency."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import jsonschema
import pytest
from release_fixtures import RequestCounter, release_files, write_random_file

from modelconv.errors import INTEGRITY_FAILED, INVALID_SPEC, VERSION_EXISTS, ConversionError
from modelconv.release import (
    RELEASE_NOT_FOUND,
    ReleaseIntegrityError,
    complete_release,
    list_releases,
    promote,
    publish_release,
    publish_state,
    read_manifest,
    verify_release,
)
from modelconv.release.catalog import CHANNELS_FOLDER, INDEX_FILE
from modelconv.spec import RESERVED_VERSIONS, parse_conversion
from modelconv.store import open_store
from modelconv.store.folder import TEMP_PREFIX, FolderStore
from modelconv.store.s3 import S3Store

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFEST_SCHEMA = json.loads((REPO_ROOT / "docs" / "manifest.schema.json").read_text())
MIB = 1024 * 1024


def manifest_fields() -> dict:
    """Manifest fields as the publish stage passes them."""
    return {
        "source": {"kind": "onnx", "sha256": "ab" * 32, "uri": "s3://models-in/vad.onnx"},
        "specSha256": "cd" * 32,
        "tools": {"modelconv": "0.1.0", "torch": "2.13.0", "coremltools": "9.0"},
        "inputs": [{"name": "audio", "shape": [1, "512..4096"], "dtype": "float32"}],
        "outputs": [{"name": "probability", "shape": [1, 1], "dtype": "float32"}],
        "conversion": {
            "path": "export", "precision": "float16", "minimumDeploymentTarget": "iOS16",
        },
        "validation": {
            "source": "mil-reference",
            "tolerances": {"atol": 0.001, "rtol": 0.01, "minCosine": 0.999, "minPsnr": None},
            "outputs": [{"runtime": "coreml", "output": "probability", "maxAbsError": 2e-4,
                         "maxRelError": 1e-3, "cosine": 0.99999, "psnrDb": 71.2, "passed": True}],
        },
    }


def publish(store, files, version="1.0.0", **options):
    options.setdefault("manifest", manifest_fields())
    return publish_release(store, model="mobilenet", version=version, files=files, **options)


def object_bytes(store, prefix: str) -> dict[str, bytes]:
    return {key: store.get_bytes(key) for key in store.list(prefix)}


# --- immutability -----------------------------------------------------------------------


def test_publish_writes_files_manifest_index_and_channels(store, tmp_path: Path) -> None:
    files = release_files(tmp_path / "files", seed=1)

    release = publish(store, files, channels=["stable"])

    assert release.created
    assert store.list("mobilenet/") == [
        "mobilenet/1.0.0/manifest.json",
        "mobilenet/1.0.0/model.mlpackage.zip",
        "mobilenet/1.0.0/model.onnx",
        "mobilenet/1.0.0/report.json",
        "mobilenet/channels/stable.json",
        "mobilenet/index.json",
    ]
    for name, path in files.items():
        assert store.get_bytes(f"mobilenet/1.0.0/{name}") == path.read_bytes()
    catalog = list_releases(store, "mobilenet")
    assert [entry.version for entry in catalog.versions] == ["1.0.0"]
    assert catalog.versions[0].manifest_sha256 == release.manifest_sha256
    assert catalog.channels["stable"].version == "1.0.0"


def test_manifest_lists_every_file_and_matches_schema(store, tmp_path: Path) -> None:
    files = release_files(tmp_path / "files", seed=2)

    release = publish(store, files)

    stored = json.loads(store.get_bytes("mobilenet/1.0.0/manifest.json"))
    jsonschema.validate(stored, MANIFEST_SCHEMA)
    assert stored == release.manifest
    assert stored["apiVersion"] == "modelconv.io/manifest/v1"
    assert sorted(stored["files"]) == sorted(files)
    for name, path in files.items():
        assert stored["files"][name]["size"] == path.stat().st_size


def test_minimal_manifest_matches_schema(folder_store, tmp_path: Path) -> None:
    release = publish(folder_store, release_files(tmp_path / "files", seed=3), manifest={})

    jsonschema.validate(release.manifest, MANIFEST_SCHEMA)
    assert release.manifest["tools"]["modelconv"]


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.pop("files"),
        lambda m: m["files"].update({"../up": {"sha256": "0" * 64, "size": 1}}),
        lambda m: m["files"]["model.onnx"].update(sha256="XYZ"),
        lambda m: m["source"].update(uri="https://user:pw@models.example/vad.onnx"),
        lambda m: m["source"].update(uri="https://h/x?X-Amz-Signature=abc"),
        lambda m: m.update(version="../1"),
    ],
)
def test_schema_rejects_broken_manifests(folder_store, tmp_path: Path, change) -> None:
    manifest = publish(folder_store, release_files(tmp_path / "files", seed=4)).manifest
    change(manifest)

    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, MANIFEST_SCHEMA)


def test_credentials_in_manifest_urls_are_removed(folder_store, tmp_path: Path) -> None:
    fields = manifest_fields()
    fields["source"]["uri"] = (
        "https://reader:hunter2@models.example/vad.onnx?X-Amz-Signature=f00&v=3"
    )

    release = publish(folder_store, release_files(tmp_path / "files", seed=5), manifest=fields)

    stored = folder_store.get_bytes("mobilenet/1.0.0/manifest.json").decode()
    assert release.manifest["source"]["uri"] == "https://models.example/vad.onnx?v=3"
    assert "hunter2" not in stored
    assert "f00" not in stored


def test_same_bytes_again_succeed_without_writing_on_s3(s3_store, tmp_path: Path) -> None:
    files = release_files(tmp_path / "files", seed=6)
    first = publish(s3_store, files, channels=["stable"])
    counter = RequestCounter(s3_store.client)

    again = publish(s3_store, files, channels=["stable"], manifest={"other": "fields"})

    assert not again.created
    assert again.manifest_sha256 == first.manifest_sha256
    assert counter.counts["PutObject"] == 0
    assert counter.counts["CreateMultipartUpload"] == 0


def test_same_bytes_again_succeed_without_writing_in_folder(folder_store, tmp_path: Path) -> None:
    files = release_files(tmp_path / "files", seed=7)
    publish(folder_store, files, channels=["stable"])
    before = {path: (path.stat().st_ino, path.stat().st_mtime_ns)
              for path in folder_store.root.rglob("*") if path.is_file()}

    again = publish(folder_store, files, channels=["stable"])

    after = {path: (path.stat().st_ino, path.stat().st_mtime_ns)
             for path in folder_store.root.rglob("*") if path.is_file()}
    assert not again.created
    assert after == before


def test_other_bytes_under_a_published_version_fail(store, tmp_path: Path) -> None:
    publish(store, release_files(tmp_path / "first", seed=8))
    before = object_bytes(store, "mobilenet/")

    with pytest.raises(ConversionError) as failure:
        publish(store, release_files(tmp_path / "second", seed=9))

    assert failure.value.reason == VERSION_EXISTS
    assert "model.mlpackage.zip differs (published sha256 " in failure.value.message
    assert "new version" in failure.value.message
    assert "more" in failure.value.message
    assert len(failure.value.message) < 400
    assert object_bytes(store, "mobilenet/") == before


def test_extra_file_in_published_version_fails(store, tmp_path: Path) -> None:
    files = release_files(tmp_path / "files", seed=10)
    publish(store, files)
    files["extra.txt"] = write_random_file(tmp_path / "extra.txt", 10, seed=11)

    with pytest.raises(ConversionError) as failure:
        publish(store, files)

    assert failure.value.reason == VERSION_EXISTS
    assert "extra.txt is not in the published release" in failure.value.message
    assert store.head("mobilenet/1.0.0/extra.txt") is None


@pytest.mark.parametrize(
    "fields", [{"files": {}}, {"model": "other"}, {"version": "9"}, {"apiVersion": "v0"}]
)
def test_reserved_manifest_fields_cannot_be_overridden(folder_store, tmp_path, fields) -> None:
    with pytest.raises(ValueError, match="set by publish_release"):
        publish(folder_store, release_files(tmp_path / "files", seed=12), manifest=fields)
    assert folder_store.list() == []


# --- interrupted publishes --------------------------------------------------------------


class ReadFailsAfter:
    """A binary file that raises OSError once more than `limit` bytes were read."""

    def __init__(self, handle, limit: int) -> None:
        self.handle = handle
        self.remaining = limit

    def read(self, size: int = -1) -> bytes:
        chunk = self.handle.read(size)
        self.remaining -= len(chunk)
        if self.remaining < 0:
            raise OSError("simulated read failure in the middle of the upload")
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.close()


class InterruptedPublish:
    """Store mixin: reads of `fail_file` fail after `fail_after` bytes, and before each
    write the view of a reader (objects, manifest, index, verify) is recorded."""

    fail_file = ""
    fail_after = 0
    fail_index_update = False

    def start_observing(self, model: str, version: str) -> None:
        self.model, self.version = model, version
        self.views: list[dict] = []

    def open_source(self, path):
        handle = super().open_source(path)
        if Path(path).name == self.fail_file:
            return ReadFailsAfter(handle, self.fail_after)
        return handle

    def put_file(self, key, path, **options):
        self.views.append(self.reader_view())
        return super().put_file(key, path, **options)

    def put_bytes(self, key, data, **options):
        self.views.append(self.reader_view())
        return super().put_bytes(key, data, **options)

    def update_json(self, key, mutate):
        self.views.append(self.reader_view())
        if self.fail_index_update:
            raise OSError("simulated stop before the index update")
        return super().update_json(key, mutate)

    def reader_view(self) -> dict:
        try:
            verify_release(self, self.model, self.version)
            verified = "ok"
        except ConversionError as error:
            verified = error.reason
        catalog = list_releases(self, self.model)
        return {
            "objects": {key: self.get_bytes(key) for key in self.list(f"{self.model}/")},
            "manifest": read_manifest(self, self.model, self.version),
            "listed": [entry.version for entry in catalog.versions],
            "verified": verified,
        }


def interrupted_store(kind: str, s3_url_or_root):
    if kind == "s3":
        cls = type("InterruptedS3Store", (InterruptedPublish, S3Store), {})
        return cls.from_url(s3_url_or_root)
    cls = type("InterruptedFolderStore", (InterruptedPublish, FolderStore), {})
    return cls(s3_url_or_root)


@pytest.fixture(params=["s3", "folder"])
def store_location(request, tmp_path: Path):
    if request.param == "s3":
        return "s3", request.getfixturevalue("s3_url")
    return "folder", tmp_path / "releases"


@pytest.mark.parametrize(
    ("fail_file", "fail_after"),
    [("model.mlpackage.zip", 7 * MIB), ("model.onnx", 1000)],
    ids=["multipart-package", "second-file"],
)
def test_interrupted_publish_is_never_visible_and_retry_completes(
    store_location, tmp_path: Path, fail_file: str, fail_after: int
) -> None:
    kind, location = store_location
    files = release_files(tmp_path / "files", seed=13, package_size=12 * MIB)
    interrupted = interrupted_store(kind, location)
    interrupted.fail_file, interrupted.fail_after = fail_file, fail_after
    interrupted.start_observing("mobilenet", "1.0.0")

    with pytest.raises(OSError, match="simulated read failure"):
        publish(interrupted, files)

    views = interrupted.views + [interrupted.reader_view()]
    assert len(views) >= 2
    for view in views:
        assert view["manifest"] is None
        assert view["listed"] == []
        assert view["verified"] == RELEASE_NOT_FOUND
        for key, data in view["objects"].items():  # whatever exists is complete
            assert data == files[key.rpartition("/")[2]].read_bytes()

    retried = publish(open_store(str(location)), files)

    assert retried.created
    assert verify_release(open_store(str(location)), "mobilenet", "1.0.0").ok


def test_manifest_is_written_after_every_file(store_location, tmp_path: Path) -> None:
    kind, location = store_location
    files = release_files(tmp_path / "files", seed=14)
    observed = interrupted_store(kind, location)
    observed.start_observing("mobilenet", "1.0.0")

    publish(observed, files)

    views = observed.views
    # One view before each file, one before the manifest, one before the index update.
    assert len(views) == len(files) + 2
    before_manifest = views[len(files)]
    assert sorted(key.rpartition("/")[2] for key in before_manifest["objects"]) == sorted(files)
    assert before_manifest["manifest"] is None
    assert views[-1]["manifest"] is not None
    assert views[-1]["verified"] == "ok"


def test_stop_before_index_update_is_repaired_by_retry(store_location, tmp_path: Path) -> None:
    kind, location = store_location
    files = release_files(tmp_path / "files", seed=15)
    interrupted = interrupted_store(kind, location)
    interrupted.fail_index_update = True
    interrupted.start_observing("mobilenet", "1.0.0")

    with pytest.raises(ConversionError, match="before the index update") as raised:
        publish(interrupted, files, channels=["stable"])
    # The version is visible, and the message says so and how to finish it.
    assert "is published (its manifest.json is written)" in raised.value.message
    assert raised.value.metrics["published"] is True
    store = open_store(str(location))
    assert verify_release(store, "mobilenet", "1.0.0").ok
    assert list_releases(store, "mobilenet").versions == ()

    retried = publish(store, files, channels=["stable"])

    catalog = list_releases(store, "mobilenet")
    assert not retried.created
    assert [entry.version for entry in catalog.versions] == ["1.0.0"]
    assert catalog.channels["stable"].version == "1.0.0"


def test_leftover_file_with_other_bytes_is_taken_over(store, tmp_path: Path) -> None:
    files = release_files(tmp_path / "files", seed=16)
    leftover = write_random_file(tmp_path / "old.onnx", 2048, seed=99)
    store.put_file("mobilenet/1.0.0/model.onnx", leftover)
    onnx_sha256 = hashlib.sha256(files["model.onnx"].read_bytes()).hexdigest()

    release = publish(store, files)

    entry = release.files["model.onnx"]
    assert release.created
    assert entry["sha256"] == onnx_sha256
    assert entry["key"] == f"objects/sha256-{onnx_sha256}/model.onnx"
    assert "key" not in release.files["model.mlpackage.zip"]
    stored = store.get_bytes(f"mobilenet/1.0.0/{entry['key']}")
    assert stored == files["model.onnx"].read_bytes()
    # Once the manifest exists, the plain name contains the published bytes as well.
    assert store.get_bytes("mobilenet/1.0.0/model.onnx") == files["model.onnx"].read_bytes()
    jsonschema.validate(release.manifest, MANIFEST_SCHEMA)
    assert verify_release(store, "mobilenet", "1.0.0").unlisted == ()


def test_interrupted_takeover_is_never_visible_and_retry_completes(
    store_location, tmp_path: Path
) -> None:
    kind, location = store_location
    leftovers = release_files(tmp_path / "leftovers", seed=40)
    files = release_files(tmp_path / "files", seed=41)
    store = open_store(str(location))
    store.put_file("mobilenet/1.0.0/model.mlpackage.zip", leftovers["model.mlpackage.zip"])
    store.put_file("mobilenet/1.0.0/model.onnx", leftovers["model.onnx"])
    interrupted = interrupted_store(kind, location)
    interrupted.fail_file, interrupted.fail_after = "model.onnx", 1000
    interrupted.start_observing("mobilenet", "1.0.0")

    with pytest.raises(OSError, match="simulated read failure"):
        publish(interrupted, files)

    for view in interrupted.views + [interrupted.reader_view()]:
        assert view["manifest"] is None
        assert view["verified"] == RELEASE_NOT_FOUND
    # A third attempt with yet other bytes takes the version over again and completes it.
    final = release_files(tmp_path / "final", seed=42)
    release = publish(store, final)
    assert release.created
    assert verify_release(store, "mobilenet", "1.0.0").ok
    for name, path in final.items():
        assert store.get_bytes(f"mobilenet/1.0.0/{name}") == path.read_bytes()


class ManifestRaceMixin:
    """Store mixin: right before this publisher writes its manifest, `rival` publishes the
    same version with other files, so the rival takes over the files this one stored."""

    rival = None

    def put_bytes(self, key, data, **options):
        if key.endswith("/manifest.json") and self.rival is not None:
            rival, self.rival = self.rival, None
            rival()
        return super().put_bytes(key, data, **options)


def test_publisher_that_loses_the_manifest_race_lists_nothing(
    store_location, tmp_path: Path
) -> None:
    kind, location = store_location
    mine = release_files(tmp_path / "mine", seed=50)
    theirs = release_files(tmp_path / "theirs", seed=51)
    if kind == "s3":
        raced = type("RacedS3Store", (ManifestRaceMixin, S3Store), {}).from_url(location)
    else:
        raced = type("RacedFolder", (ManifestRaceMixin, FolderStore), {})(location)
    rival_store = open_store(str(location))
    rival_releases = []
    raced.rival = lambda: rival_releases.append(publish(rival_store, theirs))

    with pytest.raises(ConversionError) as failure:
        publish(raced, mine)

    assert failure.value.reason == VERSION_EXISTS
    assert len(rival_releases) == 1
    manifest = read_manifest(rival_store, "mobilenet", "1.0.0").document
    for name, path in theirs.items():
        assert manifest["files"][name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert manifest["files"][name]["key"].startswith("objects/sha256-")
        assert rival_store.get_bytes(f"mobilenet/1.0.0/{name}") == path.read_bytes()
    assert verify_release(rival_store, "mobilenet", "1.0.0").ok


def test_manifest_key_outside_objects_is_rejected(folder_store, tmp_path: Path) -> None:
    publish(folder_store, release_files(tmp_path / "files", seed=52))
    manifest_path = folder_store.root / "mobilenet" / "1.0.0" / "manifest.json"
    document = json.loads(manifest_path.read_text())
    document["files"]["model.onnx"]["key"] = "../../other/1.0.0/model.onnx"
    manifest_path.write_text(json.dumps(document))

    with pytest.raises(ConversionError) as failure:
        read_manifest(folder_store, "mobilenet", "1.0.0")

    assert failure.value.reason == INTEGRITY_FAILED
    assert "optional key under objects/" in failure.value.message


def test_leftover_file_with_same_bytes_is_kept(store, tmp_path: Path) -> None:
    files = release_files(tmp_path / "files", seed=17)
    store.put_file("mobilenet/1.0.0/model.onnx", files["model.onnx"])
    etag = store.head("mobilenet/1.0.0/model.onnx").etag

    release = publish(store, files)

    assert release.created
    assert store.head("mobilenet/1.0.0/model.onnx").etag == etag
    assert verify_release(store, "mobilenet", "1.0.0").ok


class RacedFolderStore(FolderStore):
    """A folder store where another writer replaces `model.onnx` right after it is stored,
    as happens on servers whose create-if-absent is not atomic."""

    def put_file(self, key, path, **options):
        result = super().put_file(key, path, **options)
        if key.endswith("/model.onnx"):
            (self.root / key).write_bytes(b"bytes of a concurrent publisher")
        return result


def test_object_replaced_during_publish_blocks_the_manifest(tmp_path: Path) -> None:
    store = RacedFolderStore(tmp_path / "releases")

    with pytest.raises(ConversionError) as failure:
        publish(store, release_files(tmp_path / "files", seed=30))

    assert failure.value.reason == VERSION_EXISTS
    assert "model.onnx was replaced while this publish ran" in failure.value.message
    assert read_manifest(store, "mobilenet", "1.0.0") is None


# --- concurrency ------------------------------------------------------------------------


def test_concurrent_publishes_of_versions_all_land(store, tmp_path: Path) -> None:
    versions = [f"1.{minor}.0" for minor in range(6)]
    failures: list[BaseException] = []

    def work(version: str, seed: int) -> None:
        try:
            publish(store, release_files(tmp_path / version, seed=seed), version=version,
                    channels=["canary"])
        except BaseException as error:  # noqa: BLE001 - reported by the assert below
            failures.append(error)

    threads = [threading.Thread(target=work, args=(version, 100 + index))
               for index, version in enumerate(versions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    catalog = list_releases(store, "mobilenet")
    assert sorted(entry.version for entry in catalog.versions) == versions
    assert catalog.channels["canary"].version in versions
    for version in versions:
        assert verify_release(store, "mobilenet", version).ok


PUBLISH_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from modelconv.release import publish_release
    from modelconv.store import open_store

    store, version, folder = open_store(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    files = {path.name: path for path in folder.iterdir()}
    publish_release(store, model="mobilenet", version=version, files=files, manifest={},
                    channels=["canary"])
    """
)


def test_concurrent_publishes_from_processes_all_land(store_location, tmp_path: Path) -> None:
    kind, location = store_location
    versions = ["2.0.0", "2.1.0", "2.2.0", "2.3.0"]
    processes = []
    for index, version in enumerate(versions):
        folder = tmp_path / version
        release_files(folder, seed=200 + index)
        processes.append(subprocess.Popen(
            [sys.executable, "-c", PUBLISH_SCRIPT, str(location), version, str(folder)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = [process.communicate(timeout=300) for process in processes]

    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    catalog = list_releases(open_store(str(location)), "mobilenet")
    assert sorted(entry.version for entry in catalog.versions) == versions


def test_concurrent_publishes_of_one_version_have_one_winner(store, tmp_path: Path) -> None:
    results: list[object] = []
    lock = threading.Lock()

    def work(seed: int) -> None:
        try:
            outcome = publish(store, release_files(tmp_path / str(seed), seed=seed))
        except ConversionError as error:
            outcome = error.reason
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=work, args=(300 + index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [result for result in results if not isinstance(result, str)]
    assert len(winners) == 1
    assert sorted(result for result in results if isinstance(result, str)) == [VERSION_EXISTS] * 3
    assert verify_release(store, "mobilenet", "1.0.0").ok


# --- names ------------------------------------------------------------------------------

BAD_MODELS = ["..", "../escape", "a/b", "", "UPPER", "x" * 200, "-lead", "a\\b"]
BAD_VERSIONS = ["..", "1/../../x", "1/2", "", "1..2", "v" * 200, ".hidden", "channels",
                "index.json", "Index.JSON"]


def test_reserved_versions_match_store_entries() -> None:
    assert RESERVED_VERSIONS == {INDEX_FILE, CHANNELS_FOLDER}


def conversion_document(model: str, version: str) -> dict:
    return {
        "apiVersion": "modelconv.io/v1alpha1",
        "kind": "ModelConversion",
        "metadata": {"name": "example"},
        "spec": {
            "source": {"onnx": {"uri": "model.onnx"}},
            "inputs": [{"name": "x", "shape": [1, 3]}],
            "outputs": [{"name": "y"}],
            "publish": {"model": model, "version": version},
        },
    }


@pytest.mark.parametrize("model", BAD_MODELS)
def test_spec_rejects_model_names_that_escape(model: str) -> None:
    with pytest.raises(ConversionError) as failure:
        parse_conversion(conversion_document(model, "1.0.0"))
    assert failure.value.reason == INVALID_SPEC
    assert "publish.model" in failure.value.message


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_spec_rejects_versions_that_escape(version: str) -> None:
    with pytest.raises(ConversionError) as failure:
        parse_conversion(conversion_document("mobilenet", version))
    assert failure.value.reason == INVALID_SPEC
    assert "publish.version" in failure.value.message


@pytest.mark.parametrize(("model", "version"),
                         [(model, "1.0.0") for model in BAD_MODELS]
                         + [("mobilenet", version) for version in BAD_VERSIONS])
def test_publish_rejects_names_that_escape(store, tmp_path: Path, model: str, version: str) -> None:
    files = release_files(tmp_path / "files", seed=18)

    with pytest.raises(ConversionError) as failure:
        publish_release(store, model=model, version=version, files=files, manifest={})

    assert failure.value.reason == INVALID_SPEC
    assert store.list() == []


def test_publish_rejects_a_missing_file(folder_store, tmp_path: Path) -> None:
    files = release_files(tmp_path / "files", seed=29)
    files["model.onnx"] = tmp_path / "not-there.onnx"

    with pytest.raises(ValueError, match="not-there.onnx is not a file"):
        publish(folder_store, files)
    assert folder_store.list() == []


@pytest.mark.parametrize("name", ["../x", "a/b", "manifest.json", "", ".hidden", "a..b"])
def test_publish_rejects_unsafe_file_names(folder_store, tmp_path: Path, name: str) -> None:
    path = write_random_file(tmp_path / "file", 10, seed=19)

    with pytest.raises(ValueError, match="invalid release file name"):
        publish(folder_store, {name: path})
    assert folder_store.list() == []


def test_bad_channel_name_is_rejected(folder_store, tmp_path: Path) -> None:
    with pytest.raises(ConversionError) as failure:
        publish(folder_store, release_files(tmp_path / "files", seed=20), channels=["../x"])
    assert failure.value.reason == INVALID_SPEC
    assert folder_store.list() == []


# --- the same release in both stores ----------------------------------------------------


def test_folder_and_s3_hold_identical_releases(s3_store, folder_store, tmp_path: Path) -> None:
    files = release_files(tmp_path / "files", seed=21, package_size=6 * MIB)
    fields = dict(manifest_fields(), createdAt="2026-01-31T12:00:00Z")

    on_s3 = publish(s3_store, files, manifest=fields, channels=["stable"])
    in_folder = publish(folder_store, files, manifest=fields, channels=["stable"])

    assert on_s3.manifest["files"] == in_folder.manifest["files"]
    assert on_s3.manifest_sha256 == in_folder.manifest_sha256
    assert s3_store.list() == folder_store.list()
    for key in s3_store.list("mobilenet/1.0.0/"):
        assert s3_store.get_bytes(key) == folder_store.get_bytes(key)


# --- promote and verify -----------------------------------------------------------------


def test_promote_records_previous_version(store, tmp_path) -> None:
    publish(store, release_files(tmp_path / "a", seed=22), version="1.0.0", channels=["stable"])
    publish(store, release_files(tmp_path / "b", seed=23), version="1.1.0")

    pointer = promote(store, "mobilenet", "1.1.0", "stable")

    assert pointer.version == "1.1.0"
    assert pointer.previous_version == "1.0.0"
    assert list_releases(store, "mobilenet").channels["stable"].version == "1.1.0"


def test_promote_rejects_a_version_without_manifest(store, tmp_path: Path) -> None:
    files = release_files(tmp_path / "files", seed=24)
    store.put_file("mobilenet/2.0.0/model.onnx", files["model.onnx"])

    with pytest.raises(ConversionError) as failure:
        promote(store, "mobilenet", "2.0.0", "stable")

    assert failure.value.reason == RELEASE_NOT_FOUND
    assert "no manifest.json" in failure.value.message
    assert store.list("mobilenet/channels/") == []


def test_verify_names_a_changed_file(folder_store, tmp_path: Path) -> None:
    publish(folder_store, release_files(tmp_path / "files", seed=25))
    target = folder_store.root / "mobilenet" / "1.0.0" / "model.onnx"
    target.chmod(0o644)
    target.write_bytes(b"tampered")

    with pytest.raises(ReleaseIntegrityError) as failure:
        verify_release(folder_store, "mobilenet", "1.0.0")

    assert failure.value.reason == INTEGRITY_FAILED
    assert "model.onnx" in failure.value.message
    problems = {check.name: check.problem for check in failure.value.report.files}
    assert "size 8 differs" in problems["model.onnx"]
    assert problems["report.json"] == ""


def test_verify_names_a_replaced_object_on_s3(s3_store, s3_server, s3_bucket, tmp_path) -> None:
    files = release_files(tmp_path / "files", seed=26)
    publish(s3_store, files)
    # Same size, other bytes: only the digest can tell.
    s3_server.client().put_object(Bucket=s3_bucket, Key="releases/mobilenet/1.0.0/model.onnx",
                                  Body=bytes(2048))

    with pytest.raises(ReleaseIntegrityError) as failure:
        verify_release(s3_store, "mobilenet", "1.0.0")

    assert "model.onnx: sha256" in failure.value.message


def test_verify_reports_a_missing_file(folder_store, tmp_path: Path) -> None:
    publish(folder_store, release_files(tmp_path / "files", seed=27))
    (folder_store.root / "mobilenet" / "1.0.0" / "report.json").unlink()

    with pytest.raises(ReleaseIntegrityError) as failure:
        verify_release(folder_store, "mobilenet", "1.0.0")

    assert "report.json: missing" in failure.value.message


def test_verify_detects_a_manifest_changed_after_publishing(folder_store, tmp_path) -> None:
    publish(folder_store, release_files(tmp_path / "files", seed=28))
    manifest = folder_store.root / "mobilenet" / "1.0.0" / "manifest.json"
    document = json.loads(manifest.read_text())
    document["specSha256"] = "ee" * 32
    manifest.write_text(json.dumps(document))

    with pytest.raises(ReleaseIntegrityError) as failure:
        verify_release(folder_store, "mobilenet", "1.0.0")

    assert "index.json records" in failure.value.message


def test_verify_of_an_unknown_version_is_not_found(store) -> None:
    with pytest.raises(ConversionError) as failure:
        verify_release(store, "mobilenet", "9.9.9")
    assert failure.value.reason == RELEASE_NOT_FOUND


# --- the state a stopped run leaves -------------------------------------------------------


def test_publish_state_without_manifest_names_the_rerun(folder_store) -> None:
    state = publish_state(folder_store, "mobilenet", "1.0.0", ())
    assert state.summary.startswith("nothing was published")
    assert "has no manifest.json" in state.summary
    assert state.next_step == (
        "Run the same `modelconv run` command again to convert and publish version 1.0.0"
    )


def test_publish_state_of_complete_release(folder_store, tmp_path) -> None:
    # Nothing is left to do, so the state has no next step.
    publish(folder_store, release_files(tmp_path / "files", seed=50))
    state = publish_state(folder_store, "mobilenet", "1.0.0", ())
    assert state.summary.endswith("is published, with its index entry and channels")
    assert state.next_step == ""
    assert state.message() == state.summary


# --- temporary files of killed writes -----------------------------------------------------


def test_publish_removes_stale_temporary_files(folder_store, tmp_path) -> None:
    version_folder = folder_store.root / "mobilenet" / "1.0.0"
    version_folder.mkdir(parents=True)
    stale = version_folder / f"{TEMP_PREFIX}killed"
    stale.write_bytes(b"part of a file")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    # A newer one may be a concurrent writer's, so it stays.
    hour_ahead = time.time() + 3600
    current = version_folder / f"{TEMP_PREFIX}writing"
    current.write_bytes(b"")
    os.utime(current, (hour_ahead, hour_ahead))

    publish(folder_store, release_files(tmp_path / "files", seed=60))

    assert not stale.exists()
    assert current.exists()


def test_verify_lists_temporary_files(folder_store, tmp_path) -> None:
    publish(folder_store, release_files(tmp_path / "files", seed=61))
    leftover = folder_store.root / "mobilenet" / "1.0.0" / f"{TEMP_PREFIX}killed"
    leftover.write_bytes(b"part of a file")

    report = verify_release(folder_store, "mobilenet", "1.0.0")

    assert report.ok
    assert report.unlisted == (f"{TEMP_PREFIX}killed",)


def test_rerun_of_stopped_publish_removes_temporary_files(folder_store, tmp_path) -> None:
    # A publish stopped after its manifest is finished by complete_release.
    files = release_files(tmp_path / "files", seed=62)
    publish(folder_store, files)
    index = folder_store.root / "mobilenet" / "index.json"
    index.unlink()
    stale = folder_store.root / "mobilenet" / "1.0.0" / f"{TEMP_PREFIX}killed"
    stale.write_bytes(b"")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))

    completed = complete_release(folder_store, "mobilenet", "1.0.0", (), "cd" * 32)

    assert completed is not None
    assert not stale.exists()
