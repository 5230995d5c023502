"""Reading a file an operator names (a token, a bundle of trust anchors) at most up to a
limit, so that a device or a file named by mistake (``/dev/zero``, a disk image) is
refused after ``limit + 1`` bytes instead of being read into memory without end.

Unlike ``clients.files.read_bounded`` (for untrusted paths), a FIFO is read as a file:
a shell's process substitution (``--admin-token-file <(vault read ...)``) hands one over.
"""

from __future__ import annotations

from pathlib import Path

from provenance.core.errors import ConfigError


def read_capped(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path`` (a file, FIFO or device; a FIFO blocks until its writer
    writes), at most ``limit`` of them. Reads no more than ``limit + 1`` bytes. Raises
    ConfigError naming ``what`` and the path when it cannot be read or holds more than
    ``limit`` bytes."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from e
    if len(data) > limit:
        raise ConfigError(
            f"{what} {path} is over the {limit:,}-byte limit for such a file: name the file"
            " that holds it alone"
        )
    return data
