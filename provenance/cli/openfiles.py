"""The open-file limit of the serving commands (`prov serve`, `prov web`, `prov witness
serve`): raised from the soft to the hard limit at start. Here, below the web, witness
and server layers, so that all three import it.

A server holds a descriptor per client connection. The gRPC server's grpc core has no
cap per client, so a soft limit of 1,024 (systemd's default for a service, LimitNOFILE=
1024:524288; many shells' too) let one client shut every other out with 1,024 idle
connections: grpc core logged "File descriptor limit reached. Retrying." every second
and accepted nothing more (another address's call DEADLINE_EXCEEDED, measured here with
1,100 connections holding the HTTP/2 preface). The HTTP servers cap connections
(--max-connections, --connections-per-client; `provenance.web.guard`), but a cap set
above the soft limit let one client allowed that many take every descriptor: asyncio's
accept failed with EMFILE and another address's request was reset (300 idle connections
against a soft limit of 256, --max-connections 1000). An idle connection costs the gRPC
server about 6 KB (900 such: 159 -> 164 MB resident), so the hard limit (524,288 under
systemd) bounds descriptors, not memory, and a client of one IPv4 address can open at
most its ephemeral ports' worth (about 28,000 on Linux's default range) to one port. Go's
runtime does the same at start since Go 1.19; nginx has ``worker_rlimit_nofile``.
Source: getrlimit(2), setrlimit(2) (an unprivileged process may raise its soft limit up
to its hard limit).
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (module docstring).

    Returns (soft limit before, soft limit now), the same when nothing changed: already
    at the hard limit, or a system that refuses (logged as a warning, never raised: the
    server runs under the limit it has). ``resource.RLIM_INFINITY`` stands for no limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as e:  # macOS refuses RLIM_INFINITY, for one
        log.warning("open files limit stays %d (the hard limit %d was refused: %s)", soft, hard, e)
        return soft, soft
    log.info("open files limit raised from %d to the hard limit %d", soft, hard)
    return soft, hard
