"""Multipart upload of one large file with parallel parts, SHA-256 checksums and create-if-absent.

boto3's managed transfer (s3transfer) cannot send `IfNoneMatch` on CompleteMultipartUpload,
so this module drives the multipart API itself:

1. CreateMultipartUpload with ChecksumAlgorithm=SHA256 and the file's digest as metadata;
2. one thread reads the file in order, feeding the whole-file SHA-256, while a pool uploads
   the parts, each with its own SHA-256 checksum, which S3 verifies on receipt;
3. when the whole-file digest differs from the expected one (the file changed after it was
   hashed), the upload is aborted and nothing is created;
4. CompleteMultipartUpload with `IfNoneMatch: *`, so an existing object is never replaced.

At most `concurrency` parts are in memory at once. Any failure aborts the upload, so no
object ever appears with partial content. An abort that fails too (the server is gone)
leaves an incomplete upload, which uses storage but is no object. A bucket lifecycle rule
(AbortIncompleteMultipartUpload) cleans those up.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, Optional

from botocore.exceptions import BotoCoreError, ClientError

from ..errors import INTEGRITY_FAILED, ConversionError
from . import Digest
from .s3_failures import error_code

log = logging.getLogger(__name__)

# S3 allows at most 10,000 parts per upload, each at least 5 MiB (except the last).
MAX_PARTS = 10_000
MIN_PART_SIZE = 5 * 1024 * 1024


def part_size_for(file_size: int, preferred: int) -> int:
    """Return a part size of at least `preferred` that keeps the upload within MAX_PARTS."""
    needed = -(-file_size // MAX_PARTS)
    return max(preferred, needed, MIN_PART_SIZE)


def upload_multipart(
    client: Any,
    *,
    bucket: str,
    key: str,
    source: BinaryIO,
    file_size: int,
    part_size: int,
    concurrency: int,
    sha256: Optional[str],
    if_absent: bool,
) -> tuple[Digest, str]:
    """Upload `source` as `key`; return the digest of the bytes read and the new ETag.

    With `if_absent`, an existing key is left as it is and the ETag returned is empty.
    Raises `ConversionError(IntegrityFailed)` when the bytes do not match `sha256`, and
    botocore errors for the caller to classify. Every failure aborts the multipart upload.
    """
    metadata = {"sha256": sha256} if sha256 else {}
    upload_id = client.create_multipart_upload(
        Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", Metadata=metadata
    )["UploadId"]
    try:
        parts, digest = _send_parts(
            client, bucket, key, upload_id, source,
            part_size_for(file_size, part_size), concurrency,
        )
        if sha256 is not None and digest.sha256 != sha256:
            raise ConversionError(
                INTEGRITY_FAILED,
                f"s3://{bucket}/{key}: the file changed while it was uploaded (read sha256 "
                f"{digest.sha256}, expected {sha256}); the upload was aborted",
            )
        etag = _complete(client, bucket, key, upload_id, parts, if_absent)
    except BaseException:
        _abort(client, bucket, key, upload_id)
        raise
    if not etag:
        _abort(client, bucket, key, upload_id)
    return digest, etag


def _send_parts(
    client: Any,
    bucket: str,
    key: str,
    upload_id: str,
    source: BinaryIO,
    part_size: int,
    concurrency: int,
) -> tuple[list[dict], Digest]:
    """Read `source` in order and upload its parts in parallel; return parts and digest."""
    hasher = hashlib.sha256()
    size = 0
    # Bounds the parts read but not yet uploaded, and so the memory held.
    slots = threading.BoundedSemaphore(concurrency)
    futures: list[Future] = []
    with ThreadPoolExecutor(concurrency, thread_name_prefix="modelconv-upload") as pool:
        try:
            for number in range(1, MAX_PARTS + 1):
                slots.acquire()
                if any(future.done() and future.exception() for future in futures):
                    slots.release()
                    break  # A part failed: stop reading; the error is raised below.
                chunk = source.read(part_size)
                if not chunk:
                    slots.release()
                    break
                hasher.update(chunk)
                size += len(chunk)
                future = pool.submit(_upload_part, client, bucket, key, upload_id, number, chunk)
                future.add_done_callback(lambda _: slots.release())
                futures.append(future)
                del chunk  # The worker holds the only reference now.
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        parts = [future.result() for future in futures]
    return parts, Digest(size, hasher.hexdigest())


def _upload_part(
    client: Any, bucket: str, key: str, upload_id: str, number: int, chunk: bytes
) -> dict:
    checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode("ascii")
    response = client.upload_part(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        PartNumber=number,
        Body=chunk,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=checksum,
    )
    return {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}


def _complete(
    client: Any, bucket: str, key: str, upload_id: str, parts: list[dict], if_absent: bool
) -> str:
    """Complete the upload and return the ETag; return "" when `if_absent` found the key taken."""
    conditions = {"IfNoneMatch": "*"} if if_absent else {}
    try:
        response = client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            **conditions,
        )
    except ClientError as error:
        if error_code(error) == "PreconditionFailed":
            return ""
        raise
    return response["ETag"]


def _abort(client: Any, bucket: str, key: str, upload_id: str) -> None:
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except (BotoCoreError, ClientError) as error:
        # The original failure matters more; the incomplete upload is invisible to readers.
        log.warning(
            "could not abort the multipart upload of s3://%s/%s: %s", bucket, key,
            type(error).__name__,
        )
