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

`collect_cycles_rarely` does the same for CPython's cyclic garbage collector once the
server has started: each `SubmitCapture` leaves a few dozen container objects alive
until its batch is durable, so at CPython's default threshold (a young collection per
700 new objects) a server under load collected its young objects every 30 calls and
all of its heap (about 10^5 objects after start, 50-90 ms) every 2 s, about 70 µs of
event-loop time per call in all (gc callbacks, 64 callers, 2 December). Source: the
`gc` module's documentation (``gc.freeze``, ``gc.set_threshold``).
"""

from __future__ import annotations

import ctypes
import gc
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
#: New container objects (allocations less deallocations) between two collections of
#: the collector's young generation in `prov serve` (CPython's default: 700).
GC_YOUNG_THRESHOLD = 10_000


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


def collect_cycles_rarely() -> None:
    """Collect garbage cycles once, move every object alive then (the loaded service, its
    indexes, the imported modules) out of the collector's view (``gc.freeze``: later
    full collections do not walk them again), and collect the young generation every
    `GC_YOUNG_THRESHOLD` new container objects instead of every 700; the older
    generations keep their thresholds. Cycles made later are still collected, only less
    often (a few thousand objects more held meanwhile); an object frozen here that later
    becomes part of an unreachable cycle is never freed (its memory stays bounded by the
    heap at start). Process-wide: call once, when ``prov serve`` has started."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
