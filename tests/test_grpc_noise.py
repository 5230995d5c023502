"""grpc.aio's traceback for a call cancelled as it ended stays out of `prov serve`'s log
(`provenance.server.grpc_noise`). Seen in a CI run (5 December) of
`test_postgres_outage.py::test_a_server_stopped_with_a_capture_waiting_leaves_no_task_pending`:
the server stopped by Ctrl-C logged grpcio's "Exception not handled by
_handle_exceptions in servicer method [...]" with an ``asyncio.CancelledError``."""

from __future__ import annotations

import asyncio
import logging

import pytest

from provenance.server.grpc_noise import GRPC_CORE_LOGGER
from provenance.server.rpc import ServerConfig, create_server
from tests.inproc import InProc


def _logged(kind: type[BaseException], caplog: pytest.LogCaptureFixture) -> list[str]:
    """What grpc's core logger lets through of its line for an exception ``kind``."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger=GRPC_CORE_LOGGER):
        try:
            raise kind()
        except BaseException:
            logging.getLogger(GRPC_CORE_LOGGER).exception(
                "Exception not handled by _handle_exceptions in servicer method [%s]",
                "/provenance.v1.Captures/SubmitCapture",
            )
    return [r.getMessage() for r in caplog.records if r.name == GRPC_CORE_LOGGER]


def test_a_server_keeps_cancelled_calls_out_of_its_log_and_other_errors_in(
    inproc: InProc, caplog: pytest.LogCaptureFixture
) -> None:
    """Once a server is made (`create_server`), a cancelled call's line is dropped; the
    same line for any other exception, and grpc's other lines, are kept."""
    server, _ = create_server("127.0.0.1:0", inproc.service, ServerConfig())
    try:
        assert _logged(asyncio.CancelledError, caplog) == []
        assert len(_logged(RuntimeError, caplog)) == 1
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger=GRPC_CORE_LOGGER):
            logging.getLogger(GRPC_CORE_LOGGER).error("something else")
        assert [r.getMessage() for r in caplog.records] == ["something else"]
    finally:
        server.stop()
