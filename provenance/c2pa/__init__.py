"""C2PA Content Credentials: read them on incoming files, write them for our captures.

Reading (`read_c2pa`) runs the native reader in worker processes with limits and no
network access; `content_sha256` defines what our hard binding covers in a file that
carries a manifest store; `authority` certifies device keys for C2PA signing. The
writer lives in `provenance.c2pa.writer` and is imported from there, so that reading
never loads the native library into the calling process.
"""

from provenance.c2pa.container import STRIPPABLE_TYPES, content_sha256, strip_manifest_store
from provenance.c2pa.pool import ReaderPool
from provenance.c2pa.reader import (
    DEFAULT_LIMITS,
    C2paLimits,
    C2paTrust,
    read_c2pa,
    reader_settings,
)
from provenance.c2pa.result import (
    PROVENANCE_ASSERTION_LABEL,
    C2paAction,
    C2paIngredient,
    C2paResult,
)

__all__ = [
    "DEFAULT_LIMITS",
    "PROVENANCE_ASSERTION_LABEL",
    "STRIPPABLE_TYPES",
    "C2paAction",
    "C2paIngredient",
    "C2paLimits",
    "C2paResult",
    "C2paTrust",
    "ReaderPool",
    "content_sha256",
    "read_c2pa",
    "reader_settings",
    "strip_manifest_store",
]
