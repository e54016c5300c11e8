"""A store under an S3 bucket prefix, spoken to with boto3.

Credentials come from boto3's default chain (environment, profile, web identity, container
or instance role); this module never reads or logs them. Settings from the environment:

- MODELCONV_S3_ENDPOINT: endpoint URL of an S3-compatible server. Without it, boto3's own
  AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL apply, then AWS itself.
- MODELCONV_S3_ADDRESSING: `path`, `virtual` or `auto` (default) bucket addressing.
- AWS_REGION or AWS_DEFAULT_REGION: the region; us-east-1 when neither is set.
- MODELCONV_S3_MAX_ATTEMPTS: attempts per request, retries included (default 3), with
  botocore's standard retry mode and its exponential backoff.
- MODELCONV_S3_PART_SIZE_MIB and MODELCONV_S3_CONCURRENCY: multipart part size (default
  16 MiB) and parallel part uploads (default 4). Files up to one part go in one PUT.

Every upload carries a SHA-256 checksum (per part for multipart uploads), which S3 checks
against the bytes it receives. The file's SHA-256 is also stored as `sha256` user metadata,
which `head` returns: always for single-request uploads, and for multipart uploads when the
caller passes `sha256` (metadata must be set before the first part is read).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import hashlib
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import INTEGRITY_FAILED, INVALID_ARGUMENT, STORE_UNAVAILABLE, ConversionError
from . import (
    CHUNK_SIZE,
    Digest,
    JsonDocument,
    ObjectInfo,
    ObjectNotFound,
    PutResult,
    Store,
    check_key,
    digest_bytes,
    decode_json,
    encode_json,
    endpoint_url_problem,
    redact_url,
    split_s3_url,
)
from .s3_failures import classify, error_code, status_code
from .s3_multipart import upload_multipart

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Attempts of one compare-and-swap of a JSON document before giving up, and the first
# backoff in seconds (doubled per attempt, with full jitter, at most one second).
JSON_UPDATE_ATTEMPTS = 20
JSON_UPDATE_BACKOFF = 0.02
# Codes of a conditional write that lost against another writer.
LOST_RACE_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"})


@dataclasses.dataclass(frozen=True)
class S3Settings:
    """Client settings; `from_env` reads them from MODELCONV_S3_* variables."""

    endpoint_url: Optional[str] = None
    addressing_style: str = "auto"
    region: Optional[str] = None
    max_attempts: int = 3
    part_size: int = 16 * MIB
    concurrency: int = 4
    connect_timeout: float = 10.0
    read_timeout: float = 120.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "S3Settings":
        addressing = environ.get("MODELCONV_S3_ADDRESSING", "auto")
        if addressing not in ("auto", "path", "virtual"):
            raise ConversionError(
                INVALID_ARGUMENT,
                f"MODELCONV_S3_ADDRESSING={addressing!r} is invalid: use path, virtual or auto",
            )
        return cls(
            endpoint_url=_endpoint_url(environ),
            addressing_style=addressing,
            region=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None,
            max_attempts=_positive_int(environ, "MODELCONV_S3_MAX_ATTEMPTS", 3),
            # S3 rejects parts under 5 MiB, except the last one.
            part_size=_positive_int(environ, "MODELCONV_S3_PART_SIZE_MIB", 16, minimum=5) * MIB,
            concurrency=_positive_int(environ, "MODELCONV_S3_CONCURRENCY", 4),
        )


def _positive_int(environ: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    text = environ.get(name)
    if not text:
        return default
    if not text.isdigit() or int(text) < minimum:
        raise ConversionError(
            INVALID_ARGUMENT,
            f"{name}={text!r} is invalid: use a whole number of at least {minimum}",
        )
    return int(text)


def _endpoint_url(environ: Mapping[str, str]) -> Optional[str]:
    """Return MODELCONV_S3_ENDPOINT, checked to be an http(s) URL with a host, or None."""
    text = environ.get("MODELCONV_S3_ENDPOINT") or None
    if text is None:
        return None
    problem = endpoint_url_problem(text)
    if problem:
        raise ConversionError(
            INVALID_ARGUMENT, f"MODELCONV_S3_ENDPOINT={redact_url(text)!r} {problem}"
        )
    return text


class S3Store(Store):
    """Objects under `s3://bucket/prefix`; store keys are appended to the prefix."""

    def __init__(self, bucket: str, prefix: str = "", settings: Optional[S3Settings] = None):
        self.bucket = bucket
        self.prefix = prefix
        self.settings = settings or S3Settings.from_env()
        self._client: Any = None
        self._client_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, settings: Optional[S3Settings] = None) -> "S3Store":
        bucket, prefix = split_s3_url(url)
        return cls(bucket, prefix, settings)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def client(self) -> Any:
        """The boto3 client, created on first use (creating one is not thread-safe)."""
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def client_for_endpoint(self, endpoint_url: str) -> Any:
        """Return a new client with this store's settings and credentials for another endpoint.

        Presigned URLs name the endpoint of the client that signs them, so URLs for machines
        that reach the store under another address need a client of their own.
        """
        return self._make_client(endpoint_url)

    def _make_client(self, endpoint_url: Optional[str] = None) -> Any:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session()
        settings = self.settings
        config = Config(
            region_name=settings.region or session.region_name or "us-east-1",
            retries={"mode": "standard", "total_max_attempts": settings.max_attempts},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_pool_connections=max(10, 2 * settings.concurrency),
            s3={"addressing_style": settings.addressing_style},
        )
        return session.client("s3", endpoint_url=endpoint_url or settings.endpoint_url,
                              config=config)

    @property
    def endpoint(self) -> str:
        """The endpoint URL in use, without credentials."""
        return redact_url(self.client.meta.endpoint_url)

    # --- writes -------------------------------------------------------------------------

    def put_file(
        self, key: str, path: Path, *, sha256: Optional[str] = None, if_absent: bool = True
    ) -> PutResult:
        s3_key = self._key(key)
        size = os.stat(path).st_size
        with self._errors("put", key), self.open_source(path) as source:
            if size <= self.settings.part_size:
                data = source.read()
                _check_digest(self.url_of(key), digest_bytes(data), sha256)
                return self._put_object(key, data, if_absent)
            digest, etag = upload_multipart(
                self.client,
                bucket=self.bucket,
                key=s3_key,
                source=source,
                file_size=size,
                part_size=self.settings.part_size,
                concurrency=self.settings.concurrency,
                sha256=sha256,
                if_absent=if_absent,
            )
        return PutResult(key, bool(etag), digest, etag)

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = True) -> PutResult:
        self._key(key)
        with self._errors("put", key):
            return self._put_object(key, data, if_absent)

    def _put_object(self, key: str, data: bytes, if_absent: bool) -> PutResult:
        digest = digest_bytes(data)
        conditions = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            response = self.client.put_object(
                **self._put_arguments(key, data, digest), **conditions
            )
        except ClientError as error:
            if if_absent and error_code(error) == "PreconditionFailed":
                return PutResult(key, False, digest)
            raise
        return PutResult(key, True, digest, response["ETag"])

    def _put_arguments(self, key: str, data: bytes, digest: Digest) -> dict:
        checksum = base64.b64encode(bytes.fromhex(digest.sha256)).decode("ascii")
        return {
            "Bucket": self.bucket,
            "Key": self._key(key),
            "Body": data,
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": checksum,
            "Metadata": {"sha256": digest.sha256},
        }

    def update_json(
        self, key: str, mutate: Callable[[Optional[JsonDocument]], Optional[JsonDocument]]
    ) -> Optional[JsonDocument]:
        self._key(key)
        with self._errors("put", key):
            for attempt in range(JSON_UPDATE_ATTEMPTS):
                current, etag = self._read_json(key)
                updated = mutate(copy.deepcopy(current))
                if updated is None or updated == current:
                    return current
                if self._put_json_if_unchanged(key, updated, etag):
                    continue  # Read it back: the loop ends once no change is needed.
                # Another writer changed the document since it was read: read it again.
                log.debug("%s changed during an update; attempt %d", self.url_of(key), attempt + 1)
                time.sleep(random.uniform(0, min(1.0, JSON_UPDATE_BACKOFF * 2**attempt)))
        raise ConversionError(
            STORE_UNAVAILABLE,
            f"{self.url_of(key)} changed during each of {JSON_UPDATE_ATTEMPTS} attempts to "
            "update it; retry when fewer writers are active",
            permanent=False,
        )

    def _put_json_if_unchanged(self, key: str, document: JsonDocument, etag: Optional[str]) -> bool:
        """Write `document` unless the stored one changed since it had `etag` (None: absent)."""
        data = encode_json(document)
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            arguments = self._put_arguments(key, data, digest_bytes(data))
            self.client.put_object(**arguments, **condition)
        except ClientError as error:
            if error_code(error) in LOST_RACE_CODES:
                return False
            raise
        return True

    def _read_json(self, key: str) -> tuple[Optional[JsonDocument], Optional[str]]:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if error_code(error) == "NoSuchKey":
                return None, None
            raise
        data = response["Body"].read()
        return decode_json(self.url_of(key), data), response["ETag"]

    # --- reads --------------------------------------------------------------------------

    def get_file(self, key: str, dest: Path) -> Digest:
        with self._errors("get", key):
            body = self._get_body(key)
            hasher = hashlib.sha256()
            size = 0
            with open(dest, "wb") as out:
                for chunk in body.iter_chunks(CHUNK_SIZE):
                    hasher.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        return Digest(size, hasher.hexdigest())

    def get_bytes(self, key: str) -> bytes:
        with self._errors("get", key):
            return self._get_body(key).read()

    def _get_body(self, key: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as error:
            if error_code(error) == "NoSuchKey":
                raise ObjectNotFound(self.describe(), key) from None
            raise

    def head(self, key: str) -> Optional[ObjectInfo]:
        with self._errors("head", key):
            try:
                response = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as error:
                # HEAD responses have no body, so a missing key is only a 404 status. A
                # missing bucket looks the same; the next write reports it as NoSuchBucket.
                if status_code(error) == 404:
                    return None
                raise
        return ObjectInfo(
            key=key,
            size=int(response["ContentLength"]),
            etag=response["ETag"],
            sha256=response.get("Metadata", {}).get("sha256"),
        )

    def list(self, prefix: str = "") -> list[str]:
        root = f"{self.prefix}/" if self.prefix else ""
        keys = []
        with self._errors("list", prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=root + prefix
            )
            for page in pages:
                keys.extend(item["Key"].removeprefix(root) for item in page.get("Contents", ()))
        return sorted(keys)

    # --- keys and errors ----------------------------------------------------------------

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _errors(self, operation: str, key: str) -> Iterator[None]:
        try:
            yield
        except (BotoCoreError, ClientError) as error:
            raise classify(
                error,
                operation=operation,
                location=self.url_of(key),
                bucket=self.bucket,
                endpoint=self.endpoint,
            ) from None


def _check_digest(location: str, digest: Digest, expected: Optional[str]) -> None:
    if expected is not None and digest.sha256 != expected:
        raise ConversionError(
            INTEGRITY_FAILED,
            f"{location}: the file changed after it was hashed (read sha256 {digest.sha256}, "
            f"expected {expected}); nothing was uploaded",
        )
