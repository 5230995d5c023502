"""Process-wide C allocator settings for `prov serve`: freed upload buffers are reused,
not handed back to the kernel and faulted in again.

An upload arrives as 1 MiB messages: gRPC's core reads each into fresh buffers and
grpcio copies it into a Python ``bytes``. glibc's malloc serves blocks of this size
with ``mmap`` until its adaptive threshold has risen, and gives the top of a heap back
to the kernel once more than twice that threshold lies free there: on a busy upload
path both happen again and again, so every message costs page faults and zeroed pages
(measured on the 2-core bench machine: about 1 ms of kernel time per MiB received, in
gRPC's reading threads and on the event loop, against 0.4 ms of kernel time per MiB
with the settings below: 1.5x the MiB per server CPU-second for VerifyFile).

`keep_freed_memory` pins glibc's thresholds at the values its own adaptive scheme tops
out at (``DEFAULT_MMAP_THRESHOLD_MAX``: 32 MiB on 64-bit; trim at twice that), from the
start: blocks under 32 MiB come from the heaps, and up to 64 MiB freed at the top of a
heap stays mapped for the next message. The memory a process holds is still bounded by
its peak use; only its return to the kernel waits. Source: mallopt(3), glibc
``malloc/malloc.c`` (``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``).
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

#: mallopt(3) parameter numbers (glibc <malloc.h>).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Blocks below this many bytes come from malloc's heaps, not from their own mmap.
MMAP_THRESHOLD_BYTES = 32 << 20
#: Free bytes at the top of a heap kept mapped before they are returned to the kernel.
TRIM_THRESHOLD_BYTES = 64 << 20
#: Environment variables through which glibc takes these settings from an operator.
_OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (module docstring) for this process.

    Returns True when set; False, changing nothing, when the C library is not glibc
    (no ``mallopt``), refuses a value, or the operator configured malloc through the
    environment (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES), whose
    choice stands. Call once at process start, before the server allocates much.
    """
    if any(name in os.environ for name in _OPERATOR_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # the mmap threshold first: setting either turns glibc's adaptive threshold off
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1:
        log.warning("malloc refused an mmap threshold of %d bytes", MMAP_THRESHOLD_BYTES)
        return False
    if mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) != 1:
        log.warning("malloc refused a trim threshold of %d bytes", TRIM_THRESHOLD_BYTES)
        return False
    return True
