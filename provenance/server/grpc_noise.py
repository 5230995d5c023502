"""grpc.aio's log line for a call cancelled as it ended, kept out of the server's log.

When a call is cancelled while its handler is already ending (the server stopping with
a capture in flight, its grace over: grpc.aio cancels the handler's task a second time
while it sends the first cancellation's status), grpcio (1.85) logs "Exception not
handled by _handle_exceptions in servicer method [...]" at ERROR with the
``asyncio.CancelledError``'s traceback, twice, from its Cython core. The call was
ended as meant and its client told; nothing in the line is for an operator, and a
traceback in the log reads as a crash (seen in a CI run: `prov serve` stopped by Ctrl-C
while a capture waited for a database that was down). Every other record of grpc's
logger, and this one for any other exception, is kept.
"""

from __future__ import annotations

import asyncio
import logging

#: grpcio's logger for its Cython core (``grpc._cython.cygrpc``).
GRPC_CORE_LOGGER = "grpc._cython.cygrpc"
#: The start of the line grpc.aio logs for an exception its servicer wrapper let out.
UNHANDLED_PREFIX = "Exception not handled by _handle_exceptions"


class CancelledCallNoise(logging.Filter):
    """Drops grpc.aio's `UNHANDLED_PREFIX` records whose exception is a
    ``asyncio.CancelledError`` (a call cancelled as it ended); lets every other through."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for such a record (it is not logged), True else."""
        if not str(record.msg).startswith(UNHANDLED_PREFIX) or record.exc_info is None:
            return True
        kind = record.exc_info[0]
        return not (kind is not None and issubclass(kind, asyncio.CancelledError))


_FILTER = CancelledCallNoise()


def quiet_cancelled_calls() -> None:
    """Install the process's `CancelledCallNoise` on grpc's core logger (once)."""
    logger = logging.getLogger(GRPC_CORE_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
