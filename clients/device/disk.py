"""Files of the device folder: reading one bounded, writing one atomically, where a
sidecar and the folder itself are."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from clients.defaults import default_home as default_home  # defined here before
from clients.files import NotRegularFileError, read_bounded
from provenance.cli.atomicfile import write_atomically
from provenance.core.errors import ConfigError, MediaTooLargeError

SIDECAR_SUFFIX = ".prov"


#: Largest device file read (device.json, the key, the certificate chain), in bytes.
MAX_DEVICE_FILE_BYTES = 1 << 20


def read_device_file(path: Path) -> bytes:
    """The bytes of the device file ``path`` (device.json, device_key.pem, the
    certificate chain), read as `clients.files.read_bounded` reads: never waiting on a
    FIFO, never reading a device such as /dev/zero without end, at most
    MAX_DEVICE_FILE_BYTES. Raises ConfigError naming the file when it is not a regular
    file or is over that size, FileNotFoundError when it is missing, OSError."""
    try:
        return read_bounded(path, MAX_DEVICE_FILE_BYTES, "device file")
    except (NotRegularFileError, MediaTooLargeError) as e:
        raise ConfigError(f"{e}: the device folder is damaged") from e


def sidecar_path(path: Path) -> Path:
    """Where the sidecar of ``path`` lives: ``FILE.prov`` beside it."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` as `provenance.cli.atomicfile.write_atomically` does
    (a temporary file, fsync, rename, fsync the folder), created with ``mode`` less the
    umask (0o600 for a key).

    The temporary name is short (``.prov-tmp-PID-RANDOM``, `_TEMP_NAME`, which
    `clients.device.leftovers` removes) whatever the length of ``path``'s name, so any
    name the file system accepts can be written. Raises OSError naming ``path``
    (`provenance.core.files.naming`).
    """
    write_atomically(path, data, mode=mode, temp_name=_temp_name)


def _temp_name() -> str:
    return f".prov-tmp-{os.getpid()}-{secrets.token_hex(4)}"


#: The name `atomic_write` gives its temporary file, and nothing else does.
_TEMP_NAME = re.compile(r"\.prov-tmp-[0-9]+-[0-9a-f]{8}")
