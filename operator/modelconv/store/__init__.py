"""Release and artifact stores: an S3 bucket prefix or a local folder, behind one small API.

`open_store(url)` returns a `Store` for `s3://bucket/prefix`, `file:///dir` or a plain
directory path. Keys are relative, slash-separated paths under the store's root; the same
keys give the same layout in both kinds of store.

Both kinds follow the same rules:
- `put_file` and `put_bytes` create an object only if it is absent (`if_absent=True`), so a
  written object is never replaced behind a reader's back;
- `update_json` is a compare-and-swap loop (S3: ETag preconditions, folder: a lock), so
  concurrent writers of an index never lose each other's changes;
- failures are `ConversionError`s: AccessDenied (permanent: fix credentials or policy),
  StoreUnavailable (permanent for a missing bucket or an unusable folder, transient for
  network faults and a full disk);
- `describe()` and every message name the store without credentials or query strings.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import BinaryIO, Callable, Optional
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from ..errors import INTEGRITY_FAILED, INVALID_ARGUMENT, ConversionError

# S3 allows 1024 bytes per key; the store root is part of it.
MAX_KEY_LENGTH = 900
# S3 bucket names: 3 to 63 lowercase letters, digits, dots and hyphens.
BUCKET_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Read size for hashing and copying files.
CHUNK_SIZE = 1024 * 1024
# Query parameters that carry credentials in presigned or token-bearing URLs.
SECRET_QUERY_PARAMETERS = re.compile(
    r"^(x-amz-.*|signature|awsaccesskeyid|sig|se|sp|sv|token|.*secret.*|.*password.*|"
    r"access_token|x-goog-.*)$",
    re.IGNORECASE,
)

# A JSON document as `update_json` passes it around.
JsonDocument = dict


class ObjectNotFound(LookupError):
    """No object exists under the key; `key` is relative to the store root."""

    def __init__(self, location: str, key: str):
        super().__init__(f"{location}/{key} does not exist")
        self.key = key


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    """Metadata of a stored object; `sha256` is None when the store does not record it."""

    key: str
    size: int
    etag: str
    sha256: Optional[str]


@dataclasses.dataclass(frozen=True)
class Digest:
    """Size in bytes and lowercase hex SHA-256 of a byte stream."""

    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class PutResult:
    """Outcome of a put: `written` is False when `if_absent` found the key taken.

    `etag` is the ETag of the object this put created (empty when nothing was written), so
    a caller can later check with `head` that the object is still the one it wrote.
    """

    key: str
    written: bool
    digest: Digest
    etag: str = ""


class Store(abc.ABC):
    """A store of immutable objects and a few JSON documents updated by compare-and-swap."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Return the store URL without credentials, safe to log and to show to users."""

    @abc.abstractmethod
    def put_file(
        self, key: str, path: Path, *, sha256: Optional[str] = None, if_absent: bool = True
    ) -> PutResult:
        """Upload a local file.

        When `sha256` is given, the bytes read must have that digest, or nothing is created
        and `ConversionError(IntegrityFailed)` is raised. With `if_absent`, an existing
        object is left as it is and the result has `written=False`.
        """

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = True) -> PutResult:
        """Store `data` under `key`, with the same `if_absent` rule as `put_file`."""

    @abc.abstractmethod
    def get_file(self, key: str, dest: Path) -> Digest:
        """Download an object to `dest` and return the digest of the bytes written.

        Raises `ObjectNotFound` when no object exists under the key.
        """

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Return an object's bytes; raise `ObjectNotFound` when no object exists under the key."""

    @abc.abstractmethod
    def head(self, key: str) -> Optional[ObjectInfo]:
        """Return the object's metadata, or None when no object exists under the key."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Return the sorted keys that start with `prefix`."""

    @abc.abstractmethod
    def update_json(
        self, key: str, mutate: Callable[[Optional[JsonDocument]], Optional[JsonDocument]]
    ) -> Optional[JsonDocument]:
        """Replace a JSON document by `mutate(current)` without losing concurrent updates.

        `mutate` receives the current document (None when absent) and returns the new one,
        or None when the document needs no change. It must be idempotent and free of side
        effects: it runs again after every write, until the stored document needs no
        change. This read-back also repairs an update lost to a server whose conditional
        writes are not atomic. Returns the document as stored afterwards.
        """

    def check_writable(self, prefix: str = "") -> None:
        """Raise `ConversionError` (AccessDenied, StoreUnavailable) when writes will fail.

        `prefix` (a model name) is where the release will go; stores that keep folders
        check it too when it exists.

        Runs before a conversion, so an unusable store fails in seconds rather than after
        the conversion. The default checks nothing: an S3 store's write permission shows
        only on the first write, because a probe object could not be deleted again with
        the permissions a publisher needs.
        """

    def unfinished_writes(self, folder: str) -> list[str]:
        """Return the sorted keys of temporary files that stopped writes left under `folder`.

        `list` leaves them out. The default returns none, because an S3 object exists only
        once its upload is complete.
        """
        return []

    def remove_unfinished_writes(self, folder: str, older_than: float) -> list[str]:
        """Remove the temporary files of `unfinished_writes` last modified before
        `older_than` (seconds since the epoch) and return their keys.

        A newer one may belong to a write still in progress, so it is kept.
        """
        return []

    def open_source(self, path: Path) -> BinaryIO:
        """Open a local file for upload. Tests override this to make reads fail midway."""
        return open(path, "rb")

    def url_of(self, key: str) -> str:
        """Return the location of `key` for messages."""
        return f"{self.describe()}/{key}"


def open_store(url: str) -> Store:
    """Return the store for `s3://bucket/prefix`, `file:///dir` or a local directory path.

    Raises `ConversionError(InvalidArgument)`, a usage error, for a URL of another scheme,
    a file:// URL with a host, or an invalid bucket name or prefix.
    """
    if url.startswith("s3://"):
        from .s3 import S3Store  # boto3 loads only when an S3 store is used.

        return S3Store.from_url(url)
    from .folder import FolderStore

    return FolderStore(Path(local_store_path(url)))


def check_store_url(url: str) -> None:
    """Raise `ConversionError(InvalidArgument)` when `open_store` would reject `url`.

    Unlike `open_store`, it reads no environment variable and imports no S3 client, so
    command line checks can call it before anything starts.
    """
    if url.startswith("s3://"):
        split_s3_url(url)
    else:
        local_store_path(url)


def split_s3_url(url: str) -> tuple[str, str]:
    """Return the bucket and the prefix (without outer slashes) of an `s3://` store URL.

    Raises `ConversionError(InvalidArgument)` for a missing or invalid bucket name or an
    unsafe prefix.
    """
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    if not bucket:
        raise ConversionError(
            INVALID_ARGUMENT,
            f"{url!r} names no bucket: give s3://BUCKET or s3://BUCKET/PREFIX",
        )
    if not BUCKET_PATTERN.match(bucket):
        raise ConversionError(
            INVALID_ARGUMENT,
            f"invalid bucket name {bucket!r} in {redact_url(url)}: S3 bucket names have 3 "
            "to 63 lowercase letters, digits, dots and hyphens",
        )
    if prefix:
        try:
            check_key(prefix)
        except ValueError as error:
            raise ConversionError(
                INVALID_ARGUMENT, f"invalid prefix in {redact_url(url)}: {error}"
            ) from None
    return bucket, prefix


def local_store_path(url: str) -> str:
    """Return the folder path of a `file://` URL or a plain path.

    Raises `ConversionError(InvalidArgument)` for a file:// URL with a host, a URL of
    another scheme, or an empty location.
    """
    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConversionError(
                INVALID_ARGUMENT,
                f"store URL {redact_url(url)} names host {parts.netloc!r}; a file:// store must "
                "be local: write file:///absolute/path",
            )
        path = unquote(parts.path)
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
        raise ConversionError(
            INVALID_ARGUMENT,
            f"unsupported store URL {redact_url(url)}: use s3://bucket/prefix, file:///dir or a "
            "local directory",
        )
    else:
        path = url
    if not path:
        raise ConversionError(INVALID_ARGUMENT, "the store location is empty")
    return path


def endpoint_url_problem(url: str) -> Optional[str]:
    """Return why `url` cannot be an S3 endpoint URL, or None when it can.

    A usable endpoint is http(s)://HOST[:PORT][/PATH]. The text returned follows the name
    of the setting, as in "MODELCONV_S3_ENDPOINT='x' is not a valid endpoint URL: ...".
    """
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not a valid endpoint URL: give http://HOST:PORT or https://HOST"
    if parts.query or parts.fragment or parts.username or parts.password:
        return ("has credentials, a query or a fragment: give only"
                " http(s)://HOST[:PORT][/PATH], and credentials in AWS_ACCESS_KEY_ID and"
                " AWS_SECRET_ACCESS_KEY")
    return None


def check_key(key: str) -> str:
    """Return `key` when it is a safe relative key; raise ValueError otherwise.

    A safe key has non-empty segments separated by single slashes, none of them `.` or `..`,
    no backslashes or control characters, and at most MAX_KEY_LENGTH characters, so it can
    never address anything outside the store root.
    """
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError(
            f"invalid store key {key[:80]!r}: must have 1 to {MAX_KEY_LENGTH} characters"
        )
    if key.startswith("/") or "\\" in key or any(ord(char) < 32 for char in key):
        raise ValueError(f"invalid store key {key!r}: must be relative, without backslashes")
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        raise ValueError(f"invalid store key {key!r}: empty, '.' or '..' segment")
    return key


def redact_url(url: str) -> str:
    """Return `url` without user info and without query parameters that carry credentials."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    netloc = parts.netloc.rpartition("@")[2]
    query = parts.query
    if query:
        kept_parameters = [
            (name, value)
            for name, value in parse_qsl(query, keep_blank_values=True)
            if not SECRET_QUERY_PARAMETERS.match(name)
        ]
        query = urlencode(kept_parameters)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def digest_file(path: Path) -> Digest:
    """Return the size and SHA-256 of a local file, read in chunks."""
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            hasher.update(chunk)
            size += len(chunk)
    return Digest(size, hasher.hexdigest())


def digest_bytes(data: bytes) -> Digest:
    """Return the size and SHA-256 of `data`."""
    return Digest(len(data), hashlib.sha256(data).hexdigest())


def encode_json(document: JsonDocument) -> bytes:
    """Return the canonical bytes of a stored JSON document (sorted keys, two-space indent)."""
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def decode_json(location: str, data: bytes) -> JsonDocument:
    """Parse a stored JSON object; raise `ConversionError(IntegrityFailed)` when it is not one."""
    try:
        document = json.loads(data)
    except ValueError as error:
        raise ConversionError(INTEGRITY_FAILED, f"{location} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise ConversionError(INTEGRITY_FAILED, f"{location} does not contain a JSON object")
    return document
