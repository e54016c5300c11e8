"""Immutable, versioned Core ML releases in a store (S3 or a local folder).

- `zip_package`: a deterministic zip of an `.mlpackage` folder;
- `publish_release`: files first, `manifest.json` last, then the index and channels;
- `promote`: move a channel to a published version;
- `verify_release`: download every file and check it against the manifest;
- `list_releases`: the versions and channels of a model.

The layout, per model under the store root:

```
<model>/<version>/<files...>, manifest.json
<model>/index.json
<model>/channels/<channel>.json
```
"""

from .catalog import (
    RELEASE_NOT_FOUND,
    ChannelPointer,
    ReleaseCatalog,
    ReleaseEntry,
    list_releases,
    promote,
)
from .manifest import (
    MANIFEST_API_VERSION,
    MANIFEST_FILE,
    check_release_names,
    read_manifest,
    tool_versions,
)
from .package import zip_package
from .publish import (
    PublishedRelease, PublishState, complete_release, publish_release, publish_state,
)
from .verify import FileCheck, ReleaseIntegrityError, VerifyReport, verify_release

__all__ = [
    "MANIFEST_API_VERSION",
    "MANIFEST_FILE",
    "RELEASE_NOT_FOUND",
    "ChannelPointer",
    "FileCheck",
    "PublishedRelease",
    "PublishState",
    "ReleaseCatalog",
    "ReleaseEntry",
    "ReleaseIntegrityError",
    "VerifyReport",
    "check_release_names",
    "list_releases",
    "promote",
    "publish_release",
    "complete_release",
    "publish_state",
    "read_manifest",
    "tool_versions",
    "verify_release",
    "zip_package",
]
