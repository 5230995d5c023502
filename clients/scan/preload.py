"""What the scan workers' fork server does once so that no worker does it again.

`clients.scan.engines` lists this module in the fork server's preload: importing it loads
what a worker otherwise loads on its first file and first call, and every worker forked
from the server inherits it. Measured on the bench's 160x120 JPEGs, a fresh worker spent
about 23 ms on its first decode and PDQ hash (Pillow's format plugins, first calls into
NumPy) and 2-7 ms importing gRPC's channel module for its first channel; a pool of W
workers paid that W times per scan, and the fork server, reused by every pool of one
process, now pays it once. No gRPC channel or other thread is created here: the workers
are forked from this process.

Last, it moves every object the fork server holds (the modules, classes and functions of
all the preloaded imports: this module comes last in the preload list) into the garbage
collector's permanent generation (`gc.freeze`, as the Python documentation advises before
forking): a worker's full collections then walk only the objects it made itself, not the
~80,000 it inherited, and no longer write into (and so copy) every inherited page. A
worker's rows, kept for a whole batch, brought on a full collection about every 2,000
files, each about 50 ms of CPU on this machine (about 25 us per file). The youngest
generation is collected less often too (`clients.scan.worker.GC_YOUNG_THRESHOLD`).
"""

from __future__ import annotations

import gc
import io
import signal

try:
    import grpc._channel  # noqa: F401  # imported by grpc.insecure_channel on first use
    from PIL import Image

    from clients.scan.worker import GC_YOUNG_THRESHOLD
    from provenance.media.assets import AssetLimits, inspect_image
finally:
    # SIGINT ignored, then unblocked (the fork server was started with it blocked, so
    # that a Ctrl-C during the preload's imports stays pending:
    # `clients.scan.engines._start_fork_server`; ignoring it drops one pending), for the
    # fork server and every worker it forks: the scan process stops its workers itself.
    # The fork server keeps this disposition for its workers. In a ``finally``: an
    # ImportError here, which the fork server passes over, left it blocked (each
    # worker's initializer, `clients.scan.engines._exit_with_parent`, unblocks it too,
    # for a preload that is not imported at all).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def warm_decoder() -> None:
    """Decode and PDQ-hash a small JPEG made here, as a worker does each image
    (`provenance.media.assets.inspect_image`): Pillow's plugins are imported and the
    first-call costs of the decode and hash are paid in this process. Raises what Pillow
    or the decoder raise (a Pillow built without JPEG support: OSError)."""
    Image.preinit()
    ramp = Image.linear_gradient("L").resize((64, 48)).convert("RGB")
    buf = io.BytesIO()
    ramp.save(buf, "JPEG", quality=90)
    inspect_image(bytes(32), buf.getvalue(), AssetLimits())


# Only a warm-up: an exception here would end the fork server, and every scan with it (its
# preload passes over ImportError only); a worker then pays these costs itself, as before.
try:
    warm_decoder()
except Exception:
    pass

# after every import of the preload list (this module is its last): see the module docstring
gc.freeze()
gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
