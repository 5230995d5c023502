"""What a request head sent a byte at a time costs a real `prov web` (CPU seconds of the
server process per connection), for two checkouts alternated in one run.

Each round opens ``--conns`` connections from 127.0.0.1 (TCP_NODELAY) and sends each
the first ``--bytes`` bytes of a request head (a GET with one long header, its blank line
never sent), one byte per connection in turn, sleeping ``--gap-ms`` between turns so that
each byte arrives as a read of its own; then it closes them. The server's CPU time (user +
system, psutil) over the round, divided by the connections, is its cost per connection;
the same at a quarter of the bytes shows whether the cost grows with the head's length
squared (4x the bytes cost 16x) or in proportion (4x).

Usage: PYTHONPATH=. python bench/bench_head_dribble.py --old /work/main --new . \\
    [--bytes 16000] [--conns 8] [--gap-ms 1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import start_web  # noqa: E402  (after the path above)


def _dribble(url: str, conns: int, size: int, gap_s: float) -> None:
    """Send ``size`` bytes of an unfinished head to ``url`` on each of ``conns``
    connections, one byte per connection per turn."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    head = b"GET / HTTP/1.1\r\nhost: localhost\r\nx-pad: " + b"a" * size
    socks = []
    for _ in range(conns):
        s = socket.create_connection((host, int(port)))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(s)
    try:
        for i in range(size):
            for s in socks:
                s.send(head[i : i + 1])
            time.sleep(gap_s)
    finally:
        for s in socks:
            s.close()


def _cost(root: Path, conns: int, size: int, gap_s: float) -> float:
    """Server CPU seconds per connection of one dribble round on `prov web` of ``root``."""
    proc = start_web("127.0.0.1:1", "--header-seconds", "600", root=root)
    try:
        server = psutil.Process(proc.proc.pid)
        time.sleep(0.5)
        before = server.cpu_times()
        _dribble(proc.address, conns, size, gap_s)
        time.sleep(0.5)
        after = server.cpu_times()
    finally:
        proc.stop()
    return (after.user + after.system - before.user - before.system) / conns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--bytes", type=int, default=16000)
    parser.add_argument("--conns", type=int, default=8)
    parser.add_argument("--gap-ms", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    gap_s = args.gap_ms / 1000
    sizes = (args.bytes // 4, args.bytes)
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, root in (("old", args.old), ("new", args.new)):
            for size in sizes:
                cost = _cost(root.resolve(), args.conns, size, gap_s)
                results.setdefault((name, size), []).append(cost)
                print(f"{name} {size:>6} bytes: {cost * 1000:8.1f} ms CPU per connection")
    for name in ("old", "new"):
        small, large = (min(results[(name, size)]) for size in sizes)
        print(
            f"{name}: best {large * 1000:.1f} ms per connection at {sizes[1]} bytes,"
            f" {small * 1000:.1f} ms at {sizes[0]}; ratio {large / small:.1f}"
            f" (4 = linear, 16 = quadratic)"
        )


if __name__ == "__main__":
    main()
