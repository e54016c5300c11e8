"""Redaction of credentials in URLs before they reach a message, log line, report or status.

A user-given URL may carry credentials: a password in its userinfo
(`https://user:password@host/...`) or a presigned query string (`?X-Amz-Signature=...`).
`redact_url` keeps the scheme, host, path and query parameter names, so the URL still
identifies the file, and replaces every query value and the userinfo password with
`<redacted>`. `redact_urls` does the same for every URL inside a longer text.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit, urlunsplit

REDACTED = "<redacted>"

# A URL inside free text: a scheme, "://", then everything up to whitespace, a quote or a
# bracket that a message puts around it. Punctuation that ends a sentence is left out.
# An earlier `<redacted>` counts as part of the URL, so redacting twice changes nothing.
URL_PATTERN = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://(?:<redacted>|[^\s'\"<>`])+?"
    r"(?=[.,:;)\]]*(?:[\s'\"`>]|<(?!redacted>)|$))"
)


def redact_url(url: str) -> str:
    """Return `url` with its query values and userinfo password replaced by `<redacted>`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        # Unparseable (e.g. an invalid IPv6 host): keep only the scheme.
        return f"{url.partition('://')[0]}://{REDACTED}"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{host}" if ":" in userinfo else f"{REDACTED}@{host}"
    query = parts.query
    if query:
        names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
        query = "&".join(f"{name}={REDACTED}" for name in names) if names else REDACTED
    fragment = REDACTED if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_urls(text: str) -> str:
    """Return `text` with every URL in it passed through `redact_url`."""
    if "://" not in text:
        return text
    return URL_PATTERN.sub(lambda match: redact_url(match.group(0)), text)


def redact_document(value: object) -> object:
    """Return a copy of a JSON-like value with `redact_urls` applied to every string in it."""
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, dict):
        return {key: redact_document(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_document(item) for item in value]
    return value
