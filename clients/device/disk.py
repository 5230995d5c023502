"""Files of the device folder: reading one bounded, writing one atomically, where a
sidecar and the folder itself are."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from clients.files import NotRegularFileError, read_bounded
from provenance.core.errors import ConfigError, MediaTooLargeError
from provenance.core.files import naming

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


def default_home() -> Path:
    """PROV_HOME, else ~/.prov."""
    return Path(os.environ.get("PROV_HOME") or Path.home() / ".prov")


def sidecar_path(path: Path) -> Path:
    """Where the sidecar of ``path`` lives: ``FILE.prov`` beside it."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync, rename, fsync the folder.

    The temporary name is short (``.prov-tmp-PID-RANDOM``) whatever the length of
    ``path``'s name, so any name the file system accepts can be written. Raises OSError
    naming ``path`` (`provenance.core.files.naming`).
    """
    with naming(path):  # a full disk's write() names no file; the temporary name is no help
        _write_then_rename(path, data, mode)


def _write_then_rename(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".prov-tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


#: The name `atomic_write` gives its temporary file, and nothing else does.
_TEMP_NAME = re.compile(r"\.prov-tmp-[0-9]+-[0-9a-f]{8}")


def _fsync_dir(path: Path) -> None:
    """fsync the folder ``path`` (its entries' renames made durable). Raises OSError."""
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
