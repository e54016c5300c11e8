"""Stage results and source versions, read from the store on behalf of the controller.

The store client is synchronous (boto3), so every read runs in a worker thread. A
successful `result.json` never changes under its key, so successful results are kept in a
bounded in-memory table. Absent or failed results are read again next time.

Failure classes: a missing object is an ordinary result (None). An unreachable store raises
`ConversionError(StoreUnavailable)`, which propagates, and the controller retries later.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Optional

from ..errors import ConversionError
from ..redaction import redact_url
from ..spec import ConversionSpec

log = logging.getLogger(__name__)

MAX_REMEMBERED = 4096

class ResultReader:
    """Reads `<store>/.cache/<stage>/<key>/result.json` and the version of S3 sources."""

    def __init__(self) -> None:
        self._stores: dict[str, object] = {}
        self._succeeded: collections.OrderedDict[tuple, dict] = collections.OrderedDict()
        self.reads = 0

    def store(self, url: str):
        """Return the store of `url`, opened once per process."""
        return self._store(url)

    def _store(self, url: str):
        from ..store import open_store  # boto3 loads with the first S3 store.

        if url not in self._stores:
            self._stores[url] = open_store(url)
        return self._stores[url]

    async def result(self, store_url: str, stage: str, key: str) -> Optional[dict]:
        """Return the stage's result document, or None when the store has none."""
        remembered = self._succeeded.get((store_url, stage, key))
        if remembered is not None:
            self._succeeded.move_to_end((store_url, stage, key))
            return remembered
        document = await asyncio.to_thread(self._read_result, store_url, stage, key)
        if document is not None and document.get("succeeded"):
            self._succeeded[(store_url, stage, key)] = document
            while len(self._succeeded) > MAX_REMEMBERED:
                self._succeeded.popitem(last=False)
        return document

    async def write_result(self, store_url: str, stage: str, key: str, document: dict) -> None:
        """Write a stage's result document that the controller itself produced (device)."""
        await asyncio.to_thread(self._write_result, store_url, stage, key, document)
        if document.get("succeeded"):
            self._succeeded[(store_url, stage, key)] = document

    def _write_result(self, store_url: str, stage: str, key: str, document: dict) -> None:
        from ..pipeline.stage_job import write_result_document

        write_result_document(self._store(store_url), stage, key, document)

    def _read_result(self, store_url: str, stage: str, key: str) -> Optional[dict]:
        from ..pipeline.stage_job import read_result

        self.reads += 1
        return read_result(self._store(store_url), stage, key)

    async def source_version(self, spec: ConversionSpec) -> str:
        """Return the ETag of an S3 source file without a sha256, else an empty string.

        A sha256 in the spec already pins the bytes, and a local path or a factory has no
        version the operator can see. An ETag changes when the object is replaced, so a new
        upload at the same URI is not mistaken for a cache hit.
        """
        if spec.train is not None or spec.source.kind == "factory":
            return ""
        source = getattr(spec.source, spec.source.kind)
        if source.sha256 or not source.uri.startswith("s3://"):
            return ""
        bucket, _, key = source.uri[len("s3://"):].partition("/")
        try:
            info = await asyncio.to_thread(self._store(f"s3://{bucket}").head, key)
        except ConversionError as error:
            # The stage Jobs may be allowed to read a bucket that the operator may not. The URI
            # alone then identifies the source, and the export stage reports a missing file.
            log.warning(
                "cannot read the version of source %s: %s", redact_url(source.uri), error
            )
            return ""
        return info.etag if info is not None else ""
