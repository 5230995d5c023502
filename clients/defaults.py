"""Where a client looks by default: the server (``PROV_SERVER``) and the device folder
(``PROV_HOME``). Standard library only, so a command module can name these defaults in
its options without loading gRPC (`clients.api`) or the device's media code
(`clients.device`), which re-export them."""

from __future__ import annotations

import os
from pathlib import Path

#: The server a client calls when neither --server nor PROV_SERVER names one.
DEFAULT_SERVER = "127.0.0.1:50051"


def default_server() -> str:
    """The server address from PROV_SERVER, else 127.0.0.1:50051."""
    return os.environ.get("PROV_SERVER") or DEFAULT_SERVER


def default_home() -> Path:
    """PROV_HOME, else ~/.prov."""
    return Path(os.environ.get("PROV_HOME") or Path.home() / ".prov")
