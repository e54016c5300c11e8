"""Classification of S3 client errors into the failures a user or a retry loop can act on.

- AccessDenied (permanent): missing, unknown or mismatched credentials, or a policy that
  denies the request. The message names the permission to grant or the setting to fix.
- StoreUnavailable, permanent: the bucket does not exist, or the server rejected the
  request for a reason that retrying cannot change.
- StoreUnavailable, transient: the endpoint cannot be reached, the connection broke, or the
  server responded with a 5xx or throttling error after botocore's own bounded retries.

Messages never quote server error texts for authentication failures (some echo the access
key id) and never include request URLs, which could carry presigned query strings.
"""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from ..errors import ACCESS_DENIED, STORE_UNAVAILABLE, ConversionError

# Error codes that S3 returns for a request it authenticated but did not allow, or could not
# authenticate. HEAD requests carry no body, so their code is the bare status.
DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "403"})
CREDENTIAL_CODES = {
    "InvalidAccessKeyId": (
        "the S3 server does not know the access key id in use: check AWS_ACCESS_KEY_ID or "
        "the profile in AWS_PROFILE"
    ),
    "SignatureDoesNotMatch": (
        "the secret access key does not match the access key id: check "
        "AWS_SECRET_ACCESS_KEY or the profile in AWS_PROFILE"
    ),
    "ExpiredToken": "the session token has expired: refresh the credentials",
    "TokenRefreshRequired": "the session token has expired: refresh the credentials",
    "InvalidToken": "the session token is invalid: check AWS_SESSION_TOKEN",
    "RequestTimeTooSkewed": "this machine's clock is too far off: synchronize it (NTP)",
}
MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
TRANSIENT_CODES = frozenset(
    {
        "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout",
        "ConditionalRequestConflict",
    }
)
# The permission that each store operation needs, for AccessDenied messages.
PERMISSIONS = {
    "put": "s3:PutObject",
    "get": "s3:GetObject",
    "head": "s3:GetObject",
    "list": "s3:ListBucket",
}


def error_code(error: ClientError) -> str:
    """Return the S3 error code of a ClientError, e.g. NoSuchKey or PreconditionFailed."""
    return str(error.response.get("Error", {}).get("Code", ""))


def status_code(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def classify(
    error: BotoCoreError | ClientError, *, operation: str, location: str, bucket: str, endpoint: str
) -> ConversionError:
    """Return the classified failure for an S3 error raised by `operation` on `location`.

    `operation` is one of put, get, head, list; `location` is the s3:// URL of the key.
    Errors that are neither network, credential nor server failures (a malformed request,
    which is a bug) are re-raised unchanged.
    """
    where = f"{location} (endpoint {endpoint})"
    if isinstance(error, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
        return ConversionError(
            ACCESS_DENIED,
            f"no usable AWS credentials for {where}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, a profile (AWS_PROFILE) or a workload identity",
        )
    if isinstance(error, (BotoConnectionError, HTTPClientError)):
        return ConversionError(
            STORE_UNAVAILABLE,
            f"cannot reach the S3 endpoint for {where}: {type(error).__name__}; check the "
            "endpoint (MODELCONV_S3_ENDPOINT) and the network, then retry",
            permanent=False,
        )
    if not isinstance(error, ClientError):
        raise error
    return _classify_response(error, operation=operation, where=where, bucket=bucket,
                              endpoint=endpoint)


def _classify_response(
    error: ClientError, *, operation: str, where: str, bucket: str, endpoint: str
) -> ConversionError:
    code = error_code(error)
    status = status_code(error)
    if code in CREDENTIAL_CODES:
        return ConversionError(ACCESS_DENIED, f"{CREDENTIAL_CODES[code]} ({where})")
    if code in DENIED_CODES or status == 403:
        permission = PERMISSIONS.get(operation, "access")
        return ConversionError(
            ACCESS_DENIED,
            f"{operation} on {where} was denied: grant {permission} on this bucket and prefix "
            "to the identity in use, or use credentials that have it",
        )
    if code in MISSING_BUCKET_CODES:
        return ConversionError(
            STORE_UNAVAILABLE,
            f"bucket {bucket!r} does not exist at endpoint {endpoint}: create it or fix the "
            "store URL",
        )
    if code in TRANSIENT_CODES or status >= 500:
        return ConversionError(
            STORE_UNAVAILABLE,
            f"the S3 server failed {operation} on {where}: {code or status}; retry later",
            permanent=False,
        )
    return ConversionError(
        STORE_UNAVAILABLE, f"the S3 server rejected {operation} on {where}: {code or status}"
    )
