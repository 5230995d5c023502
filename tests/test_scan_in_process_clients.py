"""An in-process `prov scan` (``--workers 0``) closes its connection to the server as it
ends: the process that ran it (a program calling the scan, a test) keeps no client.

Before, the scan's client (one per server address, `clients.scan.worker`) stayed in the
calling process for good: connected to its server, or, once that server had stopped,
trying its address again every 2 minutes at most, for as long as the process ran, and
connecting to whatever listened there later. In the test suite, test_scan_server_down's
scan left one retrying its stopped server's port in the pytest worker, whose later
servers given that port by the kernel had their first call refused (CI of 7 December,
test_submit_deadline; tests/test_client_own_connection.py)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import psutil
import pytest

from clients.cli import main as prov_main
from clients.scan.engines import LocalEngine
from clients.scan.pipeline import run_scan
from clients.scan.worker import ScanConfig
from tests.conftest import SAMPLES, Cli, ServerProc, cli_process, closed_port
from tests.test_cli_interrupt import ctrl_c_held


def _connections_to(port: int) -> list[str]:
    """This process's established TCP connections to ``port`` of 127.0.0.1."""
    return [
        f"{c.laddr} -> {c.raddr}"
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]


def test_an_in_process_scan_leaves_no_connection_open(server: ServerProc, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(SAMPLES / "rocket.jpg", folder / "rocket.jpg")
    args = ["scan", str(folder), "--report", str(tmp_path / "r.jsonl")]
    assert prov_main([*args, "--server", server.address, "--workers", "0"]) == 0
    port = int(server.address.rsplit(":", 1)[1])
    # gRPC closes a closed channel's connection on a thread of its own: waited for, up
    # to a minute; before, it stayed open
    deadline = time.monotonic() + 60
    while (left := _connections_to(port)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], left


def test_an_in_process_scan_stopped_inside_a_grpc_call_still_sums_up(
    enrolled: Cli, server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C whose KeyboardInterrupt is raised inside gRPC with the call's lock taken
    (tests/sigint_held.py holds that moment open: CPython can run the handler there) leaves
    the channel's close waiting for good; the in-process scan's close of its clients does
    not wait for it: the scan still says what it did, exit 130. Before (fe7dc345, the close
    added), it waited until `clients.interrupt.ctrl_c_deadline` ended the process 30 s
    later with only its note ("interrupted; the rows so far are kept in ...") and no word
    of the scan's own; and before that change it never closed them."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", folder / "rocket.jpg"))
    monkeypatch.setenv("PROV_SERVER", closed_port())  # signed, queued: not in the log
    assert prov_main(["sign", str(photo)]) == 4
    # the log does not hold it: the scan uploads it with its sidecar, the call held
    report = tmp_path / "r.jsonl"
    args = ["scan", str(folder), "--report", str(report), "--workers", "0"]
    proc = cli_process(
        [*args, "--server", server.address],
        tmp_path,
        env={"PYTHONFAULTHANDLER": "1"},
        module="tests.sigint_held",
    )
    err = ctrl_c_held(proc)
    assert proc.returncode == 130, err
    flat = " ".join(err.split())
    # the scan's own words (a colon), not the deadline's note (a semicolon)
    assert "no files scanned in this run" in flat, err
    assert (
        f"interrupted: the rows so far are kept in {report}; the same command with --resume"
        " continues the scan" in flat
    ), err


def test_in_process_scans_running_at_once_in_one_process_all_finish(
    server: ServerProc, tmp_path: Path
) -> None:
    """Two in-process scans of one server in two threads of a process (a program scanning
    two folders at once): one that ends does not close the other's connection. They share
    the process's client of that address (`clients.scan.worker`); before, the first to end
    closed it under the other: 'ValueError: Cannot invoke RPC on closed channel!' out of
    the other's next call (both scans of this test failed so, fe7dc345)."""
    data = (SAMPLES / "rocket.jpg").read_bytes()
    big, small = tmp_path / "big", tmp_path / "small"
    big.mkdir()
    small.mkdir()
    for i in range(200):  # many batches: the small scans start and end while it runs
        (big / f"b{i:03}.jpg").write_bytes(data + i.to_bytes(4, "big"))
    (small / "s.jpg").write_bytes(data)
    config = ScanConfig(server=server.address)
    done = threading.Event()
    failed: list[BaseException] = []
    scanned: list[int] = []

    def scan_big() -> None:
        try:
            scanned.append(
                run_scan([str(big)], tmp_path / "big.jsonl", config, LocalEngine(0)).scanned
            )
        except BaseException as e:
            failed.append(e)
        finally:
            done.set()

    def scan_small(k: int) -> None:
        report = tmp_path / f"small{k}.jsonl"
        assert run_scan([str(small)], report, config, LocalEngine(0)).scanned == 1

    thread = threading.Thread(target=scan_big)
    thread.start()
    k = 0
    try:
        while not done.is_set():  # small scans, one after another, as long as it runs
            scan_small(k)
            k += 1
    finally:
        thread.join()
    assert failed == [], failed
    assert scanned == [200]
    scan_small(k)  # the client closed as the last one ended: a later scan opens another
