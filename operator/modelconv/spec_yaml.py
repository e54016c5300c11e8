"""Reading ModelConversion YAML files with PyYAML's safe loader, rejecting duplicate keys.

YAML requires the keys of a mapping to be unique, but PyYAML 6.0 keeps the last value of a
repeated key without a warning, so `precision: float16` followed by `precision: float32` would
silently run in float32.
"""

from __future__ import annotations

from typing import IO, Union

import yaml

MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key that appears twice in one YAML mapping, with both 1-based line numbers."""

    def __init__(self, key: object, mark, first_mark):
        self.key = key
        self.line = mark.line + 1
        self.first_line = first_mark.line + 1
        super().__init__(
            None, None, f"duplicate key {key!r} (first at line {self.first_line})", mark
        )


class UniqueKeySafeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that raises `DuplicateKeyError` for a key repeated in one mapping.

    Keys brought in by a merge key (`<<: *anchor`) may still be overridden, as YAML allows.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self._reject_duplicate_keys(node)
        return super().construct_mapping(node, deep=deep)

    def _reject_duplicate_keys(self, node: yaml.MappingNode) -> None:
        # This runs before SafeLoader.flatten_mapping copies merged keys into node.value.
        first_marks: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first_mark = first_marks.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # an unhashable key, which SafeLoader rejects itself
            if first_mark is not key_node.start_mark:
                raise DuplicateKeyError(key, key_node.start_mark, first_mark)


def load_all(stream: Union[str, IO]) -> list:
    """Return the documents of a YAML stream, read with `UniqueKeySafeLoader`."""
    return list(yaml.load_all(stream, Loader=UniqueKeySafeLoader))
