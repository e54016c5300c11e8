"""Store error messages name the release file a user sees, not the store's internals."""

from __future__ import annotations

import errno

import pytest

from modelconv.errors import ConversionError
from modelconv.store import open_store
from modelconv.store.folder import TEMP_PREFIX


def test_temporary_file_error_names_key(tmp_path):
    store = open_store(str(tmp_path))
    temporary = tmp_path / "linear" / f"{TEMP_PREFIX}0123abcd"

    with pytest.raises(ConversionError) as raised:
        with store._errors("linear/index.json"):
            raise PermissionError(errno.EPERM, "Operation not permitted", str(temporary))

    assert raised.value.reason == "AccessDenied"
    assert TEMP_PREFIX not in raised.value.message
    assert store.url_of("linear/index.json") in raised.value.message


def test_release_file_error_names_file(tmp_path):
    store = open_store(str(tmp_path))
    release_file = tmp_path / "linear" / "1.0.0" / "model.onnx"

    with pytest.raises(ConversionError) as raised:
        with store._errors("linear/1.0.0/model.onnx"):
            raise PermissionError(errno.EACCES, "Permission denied", str(release_file))

    assert str(release_file) in raised.value.message
