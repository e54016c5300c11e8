"""A store in a local folder, with the same layout and rules as the S3 store.

Objects are written to a temporary file in the destination folder, flushed with fsync and
then linked to their final name with `os.link`, which fails when the name exists: creation
is atomic and never replaces an object. JSON documents updated by `update_json` are
replaced with `os.replace` under an exclusive `flock` on their folder, so readers never see
a partial document and concurrent writers (threads or processes) never lose an update.

NOTE: `flock` is only advisory between processes on one machine; on network file systems
(NFS, SMB) its semantics depend on the mount, so share a release folder between machines
through S3 instead.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import fcntl
import hashlib
import io
import os
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..errors import ACCESS_DENIED, INTEGRITY_FAILED, STORE_UNAVAILABLE, ConversionError
from . import (
    CHUNK_SIZE,
    Digest,
    JsonDocument,
    ObjectInfo,
    ObjectNotFound,
    PutResult,
    Store,
    check_key,
    decode_json,
    digest_file,
    encode_json,
)

# Temporary files carry this prefix, so `list` can skip writes in progress.
TEMP_PREFIX = ".modelconv-tmp-"


class FolderStore(Store):
    """Objects as files under `root`; keys map to relative paths."""

    def __init__(self, root: Path):
        self.root = Path(os.path.abspath(root))

    def describe(self) -> str:
        return self.root.as_uri()

    # --- writes -------------------------------------------------------------------------

    def put_file(
        self, key: str, path: Path, *, sha256: Optional[str] = None, if_absent: bool = True
    ) -> PutResult:
        target = self._path(key)
        with self.open_source(path) as source:
            try:
                with self._errors(key):
                    digest, written = self._write(target, _source_reader(source), sha256, if_absent)
            except SourceUnreadable as error:
                raise error.__cause__  # A fault of the local file, not of the store.
        return PutResult(key, written, digest, digest.sha256 if written else "")

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = True) -> PutResult:
        target = self._path(key)
        with self._errors(key):
            digest, written = self._write(target, io.BytesIO(data).read, None, if_absent)
        return PutResult(key, written, digest, digest.sha256 if written else "")

    def _write(
        self, target: Path, read: Callable[[int], bytes], sha256: Optional[str], if_absent: bool
    ) -> tuple[Digest, bool]:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            digest = _copy_to(read, temp)
            if sha256 is not None and digest.sha256 != sha256:
                raise ConversionError(
                    INTEGRITY_FAILED,
                    f"{target.name} changed while it was stored: read sha256 {digest.sha256}, "
                    f"expected {sha256}; nothing was written",
                )
            written = _link_or_replace(temp, target, if_absent)
            _fsync_dir(target.parent)
            return digest, written
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def update_json(
        self, key: str, mutate: Callable[[Optional[JsonDocument]], Optional[JsonDocument]]
    ) -> Optional[JsonDocument]:
        target = self._path(key)
        with self._errors(key):
            target.parent.mkdir(parents=True, exist_ok=True)
            with _folder_lock(target.parent):
                current = None
                if target.exists():
                    current = decode_json(self.url_of(key), target.read_bytes())
                updated = mutate(copy.deepcopy(current))
                if updated is None or updated == current:
                    return current
                self._write(target, io.BytesIO(encode_json(updated)).read, None, if_absent=False)
                return updated

    def check_writable(self, prefix: str = "") -> None:
        """Create the store folder if needed, then create and remove a temporary file in it.

        A real write catches what permission bits do not show: a read-only file system, an
        immutable folder, a full disk. The folder of `prefix` is probed too when it exists.
        """
        with self._errors("."):
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise ConversionError(
                    STORE_UNAVAILABLE,
                    f"{self.root} or one of its parents is a file, not a folder: give a folder"
                    " as the store",
                ) from None
            except OSError as error:  # e.g. under /proc, where no folder can be made
                raise ConversionError(
                    ACCESS_DENIED,
                    f"cannot create the store folder {self.root}: {error.strerror or error};"
                    " give a folder you can write to as --store",
                ) from None
            self._probe(self.root)
            folder = self._path(prefix) if prefix else None
            if folder is not None and folder.is_dir():
                self._probe(folder)

    def _probe(self, folder: Path) -> None:
        probe = folder / f"{TEMP_PREFIX}{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"")
        except OSError as error:
            raise ConversionError(
                ACCESS_DENIED,
                f"cannot write to the store folder {folder}: {error.strerror or error};"
                " give the user running modelconv write access, or choose another --store",
            ) from None
        probe.unlink()

    # --- reads --------------------------------------------------------------------------

    def get_file(self, key: str, dest: Path) -> Digest:
        source = self._path(key)
        with self._errors(key):
            try:
                handle = open(source, "rb")
            except (FileNotFoundError, NotADirectoryError):  # a parent is a file
                raise ObjectNotFound(self.describe(), key) from None
            with handle:
                return _copy_to(handle.read, Path(dest))

    def get_bytes(self, key: str) -> bytes:
        with self._errors(key):
            try:
                return self._path(key).read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise ObjectNotFound(self.describe(), key) from None

    def head(self, key: str) -> Optional[ObjectInfo]:
        path = self._path(key)
        with self._errors(key):
            if not path.is_file():
                return None
            digest = digest_file(path)
        # The content digest doubles as the ETag: it changes exactly when the bytes change.
        return ObjectInfo(key, digest.size, digest.sha256, digest.sha256)

    def list(self, prefix: str = "") -> list[str]:
        # Walk only the folder that contains every key with this prefix.
        folder = prefix.rpartition("/")[0]
        start = self._path(folder) if folder else self.root
        with self._errors(prefix or "."):
            if not start.is_dir():
                return []
            keys = [
                path.relative_to(self.root).as_posix()
                for path in start.rglob("*")
                if path.is_file() and not path.name.startswith(TEMP_PREFIX)
            ]
        return sorted(key for key in keys if key.startswith(prefix))

    def unfinished_writes(self, folder: str) -> list[str]:
        return sorted(key for key, _ in self._temp_files(folder))

    def remove_unfinished_writes(self, folder: str, older_than: float) -> list[str]:
        removed = []
        with self._errors(folder):
            for key, path in self._temp_files(folder):
                try:
                    if path.stat().st_mtime >= older_than:
                        continue
                    path.unlink()
                except FileNotFoundError:  # its writer finished or removed it meanwhile
                    continue
                removed.append(key)
        return sorted(removed)

    def _temp_files(self, folder: str) -> list[tuple[str, Path]]:
        """Return (key, path) of each temporary file under `folder`, subfolders included."""
        start = self._path(folder)
        with self._errors(folder):
            if not start.is_dir():
                return []
            return [
                (path.relative_to(self.root).as_posix(), path)
                for path in start.rglob(f"{TEMP_PREFIX}*")
                if path.is_file()
            ]

    # --- paths and errors ---------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Translate OS errors into classified failures that name the path."""
        try:
            yield
        except PermissionError as error:
            # A temporary file's name means nothing to the user: name the key instead.
            path = error.filename
            if not path or Path(path).name.startswith(TEMP_PREFIX):
                path = self.url_of(key)
            raise ConversionError(
                ACCESS_DENIED,
                f"permission denied writing or reading {path}: "
                "give the user running modelconv access to the release folder",
            ) from None
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ConversionError(
                    STORE_UNAVAILABLE,
                    f"no space left in {self.describe()}: free disk space and retry",
                    permanent=False,
                ) from None
            if isinstance(error, (FileNotFoundError, NotADirectoryError)):
                raise  # Callers map a missing key to ObjectNotFound; anything else is a bug.
            raise ConversionError(
                STORE_UNAVAILABLE, f"cannot access {self.url_of(key)}: {error.strerror or error}"
            ) from None


class SourceUnreadable(Exception):
    """Carries an OSError from reading the local source file past the store's error mapping."""


def _source_reader(source) -> Callable[[int], bytes]:
    def read(size: int) -> bytes:
        try:
            return source.read(size)
        except OSError as error:
            raise SourceUnreadable() from error

    return read


def _copy_to(read: Callable[[int], bytes], dest: Path) -> Digest:
    """Copy a stream into a new file at `dest`, fsync it and return its digest."""
    hasher = hashlib.sha256()
    size = 0
    with open(dest, "wb") as out:
        while chunk := read(CHUNK_SIZE):
            hasher.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return Digest(size, hasher.hexdigest())


def _link_or_replace(temp: Path, target: Path, if_absent: bool) -> bool:
    """Give `temp` the name `target`; with `if_absent`, only when `target` does not exist."""
    if not if_absent:
        os.replace(temp, target)
        return True
    try:
        os.link(temp, target)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # Without hard links there is no atomic create-if-absent, and a reader could see a
        # partial file: such a folder cannot hold releases.
        raise ConversionError(
            STORE_UNAVAILABLE,
            f"the file system of {target.parent} does not support hard links, which the "
            "release folder needs for atomic writes: use a local disk folder or S3",
        ) from None
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _folder_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive flock on `directory` itself, so no lock file enters the layout."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
