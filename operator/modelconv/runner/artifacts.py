"""Moving a check's files over presigned URLs, and reading them safely.

The runner has no S3 credentials: it GETs the package, inputs and expected outputs and PUTs
the report and the compiled model through the presigned URLs in the check's spec. Messages
and logs name the object key only. Exceptions of the HTTP library are never passed on as
text, because their messages contain the URL with its signature.

Downloaded files are untrusted: zips are unpacked only when every member stays inside the
target folder and the total size is bounded, and `.npz` files are read without pickle.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Optional

import requests

from .resource import (
    DOWNLOAD_FAILED,
    INVALID_CHECK_DATA,
    UPLOAD_FAILED,
    URL_EXPIRED,
    PresignedObject,
    utc_now,
)

CHUNK_SIZE = 1024 * 1024
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
# Bounds for untrusted downloads: the largest Core ML packages shipped in apps are a few GiB.
MAX_DOWNLOAD_BYTES = 8 * 1024**3
MAX_UNPACKED_BYTES = 16 * 1024**3
MAX_ZIP_MEMBERS = 100_000
UPLOAD_ATTEMPTS = 3


class CheckDataError(Exception):
    """A check's file could not be fetched, stored or read; `reason` is CamelCase."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def http_session() -> requests.Session:
    """Return a session for presigned URLs; proxy settings of the environment still apply."""
    session = requests.Session()
    session.headers["User-Agent"] = "modelconv-agent"
    return session


def ensure_not_expired(objects: dict[str, PresignedObject], now: Optional[datetime.datetime] = None):
    """Raise CheckDataError(UrlExpired) naming every URL whose expiry time has passed."""
    now = now or utc_now()
    expired = [f"{role} ({item.key})" for role, item in objects.items() if item.expires_at <= now]
    if expired:
        raise CheckDataError(
            URL_EXPIRED,
            f"presigned URLs expired before the runner used them: {', '.join(expired)}; the "
            "controller must create the check again with fresh URLs",
        )


def download(session: requests.Session, item: PresignedObject, dest: Path) -> Path:
    """GET `item` into `dest`, verifying its size bound and SHA-256 when the spec gives one."""
    try:
        with session.get(item.url, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)) as response:
            if response.status_code != 200:
                raise _http_failure("download", item, response)
            digest = _stream_to(response, dest, item)
    except requests.RequestException as error:
        # The exception text contains the presigned URL: report its type only.
        raise CheckDataError(
            DOWNLOAD_FAILED, f"download of {item.key} failed: {type(error).__name__}"
        ) from None
    if item.sha256 and digest != item.sha256:
        raise CheckDataError(
            DOWNLOAD_FAILED,
            f"download of {item.key} has SHA-256 {digest}, expected {item.sha256}",
        )
    return dest


def _stream_to(response: requests.Response, dest: Path, item: PresignedObject) -> str:
    hasher = hashlib.sha256()
    size = 0
    with open(dest, "wb") as handle:
        for chunk in response.iter_content(CHUNK_SIZE):
            size += len(chunk)
            if size > MAX_DOWNLOAD_BYTES:
                raise CheckDataError(
                    DOWNLOAD_FAILED,
                    f"download of {item.key} exceeds {MAX_DOWNLOAD_BYTES} bytes; refusing it",
                )
            hasher.update(chunk)
            handle.write(chunk)
    return hasher.hexdigest()


def upload(session: requests.Session, item: PresignedObject, data: bytes,
           content_type: str) -> None:
    """PUT `data` to `item`, retrying network faults and 5xx responses a few times."""
    ensure_not_expired({"upload": item})
    last = "no attempt"
    for _ in range(UPLOAD_ATTEMPTS):
        try:
            response = session.put(
                item.url, data=data, headers={"Content-Type": content_type},
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            )
        except requests.RequestException as error:
            last = type(error).__name__
            continue
        if 200 <= response.status_code < 300:
            return
        failure = _http_failure("upload", item, response)
        if response.status_code < 500:
            raise failure
        last = failure.message
    raise CheckDataError(UPLOAD_FAILED, f"upload of {item.key} failed {UPLOAD_ATTEMPTS} times: {last}")


def _http_failure(action: str, item: PresignedObject, response: requests.Response) -> CheckDataError:
    """Classify an S3 error response; its body is S3's XML error, which contains no signature."""
    body = response.text[:2000] if response.content else ""
    if response.status_code == 403 and "expired" in body.lower():
        return CheckDataError(
            URL_EXPIRED, f"{action} of {item.key} was rejected: the presigned URL has expired"
        )
    reason = DOWNLOAD_FAILED if action == "download" else UPLOAD_FAILED
    code = _s3_error_code(body)
    detail = f" ({code})" if code else ""
    return CheckDataError(
        reason, f"{action} of {item.key} failed with HTTP {response.status_code}{detail}"
    )


def _s3_error_code(body: str) -> str:
    start = body.find("<Code>")
    end = body.find("</Code>", start)
    if start < 0 or end < 0:
        return ""
    return body[start + len("<Code>"):end][:64]


def unpack_zip(archive: Path, dest: Path) -> Path:
    """Unpack an untrusted zip into `dest`; raise CheckDataError for unsafe or broken archives."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = bundle.infolist()
            _check_members(archive.name, members, dest)
            bundle.extractall(dest)
    except zipfile.BadZipFile:
        raise CheckDataError(INVALID_CHECK_DATA, f"{archive.name} is not a valid zip file") from None
    return dest


def _check_members(name: str, members: list[zipfile.ZipInfo], dest: Path) -> None:
    if len(members) > MAX_ZIP_MEMBERS:
        raise CheckDataError(INVALID_CHECK_DATA, f"{name} has more than {MAX_ZIP_MEMBERS} entries")
    if sum(member.file_size for member in members) > MAX_UNPACKED_BYTES:
        raise CheckDataError(INVALID_CHECK_DATA, f"{name} unpacks to more than {MAX_UNPACKED_BYTES} bytes")
    root = dest.resolve()
    for member in members:
        target = (dest / member.filename).resolve()
        if target != root and root not in target.parents:
            raise CheckDataError(
                INVALID_CHECK_DATA, f"{name} has an entry outside its folder: {member.filename!r}"
            )
        # Mode bits in the upper half of external_attr; 0o120000 marks a symbolic link.
        if (member.external_attr >> 16) & 0o170000 == 0o120000:
            raise CheckDataError(
                INVALID_CHECK_DATA, f"{name} has a symbolic link entry: {member.filename!r}"
            )


def locate_package(folder: Path) -> Path:
    """Return the .mlpackage inside an unpacked package zip.

    The zip contains either the package's contents at its root (`Manifest.json` first level),
    or one `*.mlpackage` folder. Core ML wants the folder name to end in `.mlpackage`, so
    contents at the root are moved into `model.mlpackage`.
    """
    if (folder / "Manifest.json").is_file():
        package = folder.parent / "model.mlpackage"
        folder.rename(package)
        return package
    packages = [path for path in folder.iterdir() if path.suffix == ".mlpackage" and path.is_dir()]
    if len(packages) != 1:
        raise CheckDataError(
            INVALID_CHECK_DATA,
            f"the package zip must hold one .mlpackage folder or a package's Manifest.json at "
            f"its root; found {len(packages)} .mlpackage folders",
        )
    return packages[0]


INPUTS = "inputs"
OUTPUTS = "outputs"
# Groups of the pipeline's samples.safetensors that make up each role. Image inputs are
# stored twice: as the model's tensor (`input`) and as the pixels Core ML takes (`pixels`),
# and the runner feeds Core ML, so pixels win.
SAFETENSORS_GROUPS = {INPUTS: ("input", "pixels"), OUTPUTS: ("output",)}


def read_samples(path: Path, key: str, role: str) -> list[dict]:
    """Read the `role` tensors (INPUTS or OUTPUTS) of every sample, without pickle.

    Two formats are accepted: the validate stage's `samples.safetensors` (keys
    `sample<i>/input/<name>`, `sample<i>/output/<name>`, `sample<i>/pixels/<name>`), which
    contains both roles in one object, or an `.npz` per role with arrays named
    `<i>/<name>`. Returns one dict per sample in index order; raise CheckDataError naming the
    object key for anything else.
    """
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"PK":
        return group_samples(_npz_arrays(path, key), key)
    return group_samples(_safetensors_arrays(path, key, role), key)


def _npz_arrays(path: Path, key: str) -> dict:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise CheckDataError(
            INVALID_CHECK_DATA, f"{key} is not a readable .npz file without pickled objects: {error}"
        ) from None


def _safetensors_arrays(path: Path, key: str, role: str) -> dict:
    try:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
    except ImportError:
        raise CheckDataError(
            INVALID_CHECK_DATA,
            f"{key} is not an .npz file, and reading it as safetensors needs the safetensors "
            "package: pip install 'modelconv[agent]'",
        ) from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckDataError(
            INVALID_CHECK_DATA, f"{key} is neither an .npz nor a safetensors file: {error}"
        ) from None
    arrays: dict = {}
    for group in SAFETENSORS_GROUPS[role]:
        for name, array in tensors.items():
            head, _, rest = name.partition("/")
            found_group, _, tensor = rest.partition("/")
            if found_group == group and head.startswith("sample"):
                arrays[f"{head.removeprefix('sample')}/{tensor}"] = array
    return arrays


def group_samples(arrays: dict, key: str) -> list[dict]:
    """Group arrays named `<index>/<name>` into a list of per-sample dicts."""
    samples: dict[int, dict] = {}
    for name, array in arrays.items():
        index, separator, tensor = name.partition("/")
        if not separator or not index.isdigit() or not tensor:
            raise CheckDataError(
                INVALID_CHECK_DATA,
                f"{key}: array {name!r} must be named '<sample index>/<tensor name>', e.g. 0/x",
            )
        samples.setdefault(int(index), {})[tensor] = array
    if not samples:
        raise CheckDataError(INVALID_CHECK_DATA, f"{key} contains no arrays for this role")
    if sorted(samples) != list(range(len(samples))):
        raise CheckDataError(INVALID_CHECK_DATA, f"{key}: sample indexes must be 0..{len(samples) - 1}")
    return [samples[index] for index in range(len(samples))]


def write_samples(samples: list[dict]) -> bytes:
    """Return the `.npz` bytes that `read_samples` reads back into `samples`."""
    import numpy as np

    buffer = io.BytesIO()
    arrays = {f"{index}/{name}": value for index, sample in enumerate(samples)
              for name, value in sample.items()}
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def zip_folder(folder: Path) -> bytes:
    """Return a deterministic zip of `folder` with the folder's name as top-level entry."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                arcname = f"{folder.name}/{path.relative_to(folder).as_posix()}"
                info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                bundle.writestr(info, path.read_bytes())
    return buffer.getvalue()
