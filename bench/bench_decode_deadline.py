"""What a VerifyFile whose caller gives up costs the server: CPU after the call ended.

Builds a costly first decode the decoding budget still lets through: 35 flat 7680x4320
frames at 1 fps, CRF 51 (1.16 billion sampled pixels, under
`provenance.media.video.frames.MAX_SAMPLED_PIXELS`), or with ``4k``, 140 s of flat
3840x2160 at 30 fps (34.8 billion decoded pixels, under ``MAX_DECODED_PIXELS``, and 1.16
billion sampled), then starts a real `prov serve` (no
detector) and, for each of ``ROUNDS`` rounds: one VerifyFile with a ``DEADLINE_S`` s
deadline, then one cancelled by its client ``DEADLINE_S`` s after it started. For each it
prints the call's own end, then how long the server's decoding child (a child of the
decoder process, `provenance.media.video.decode`) ran on after the call ended and the CPU
seconds it used meanwhile (from psutil, sampled every 0.05 s). Then the decode's time
with no deadline, once. The clip is kept in DIR.
Usage: PYTHONPATH=. .venv/bin/python bench/bench_decode_deadline.py [DIR [ROUNDS [4k]]]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import grpc
import psutil
from bench_video_budget import make_clip
from prov_server import served

from clients.api import ProvenanceClient
from provenance.core.argtypes import positive_int
from provenance.v1 import provenance_pb2 as pb

DEADLINE_S = 3.0
#: 35 frames of 7680x4320 sampled at 1 Hz: 1,161,216,000 pixels, under the budget
FRAMES = 35


def decoding_children(server: psutil.Process) -> list[psutil.Process]:
    """The server's decoding children: children of its decoder process."""
    found = []
    for child in server.children(recursive=True):
        try:
            if "provenance.media.video.worker" in " ".join(child.cmdline()):
                found.extend(child.children())
        except psutil.NoSuchProcess:
            continue
    return found


def cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def after_end(server: psutil.Process, ended: float, child: psutil.Process | None) -> str:
    """How long ``child`` ran after ``ended`` (time.monotonic) and its CPU meanwhile."""
    if child is None:
        return "no decoding child seen"
    try:
        at_end = cpu_s(child)
    except psutil.NoSuchProcess:
        return "child gone at the call's end"
    last = at_end
    while True:
        try:
            last = cpu_s(child)
            if child.status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    return f"child ran {time.monotonic() - ended:.1f} s more, {last - at_end:.1f} CPU s"


def one_call(client: ProvenanceClient, server: psutil.Process, clip: Path, cancel: bool) -> None:
    while decoding_children(server):  # an earlier call's child still running
        time.sleep(0.05)
    stream, _ = client._upload(clip, pb.VerifyFileHeader())
    seen: list[psutil.Process] = []
    start = time.monotonic()
    timeout = None if cancel else DEADLINE_S
    call = client._verification.VerifyFile.future(stream, timeout=timeout or 600.0)

    def watch() -> None:
        while not call.done() and not seen:
            seen.extend(decoding_children(server))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    if cancel:
        time.sleep(DEADLINE_S)
        call.cancel()
    try:
        call.result()
        code = "OK"
    except grpc.FutureCancelledError:
        code = "CANCELLED (by us)"
    except grpc.RpcError as e:
        code = e.code().name
    ended = time.monotonic()
    watcher.join()
    how = "cancelled" if cancel else "deadline"
    print(
        f"{how} {DEADLINE_S:g} s: call ended {code} after {ended - start:.1f} s;"
        f" {after_end(server, ended, seen[0] if seen else None)}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "dir", nargs="?", type=Path, help="folder for the clip, kept (default: a new temp folder)"
    )
    parser.add_argument(
        "rounds",
        nargs="?",
        type=positive_int,
        default=2,
        help="rounds of the two calls (default 2)",
    )
    parser.add_argument("size", nargs="?", choices=["8k", "4k"], default="8k", help="the clip")
    args = parser.parse_args()
    folder = args.dir if args.dir is not None else Path(tempfile.mkdtemp())
    rounds, big = args.rounds, args.size == "4k"
    clip = folder / ("flat4k-140.mp4" if big else "flat8k-35.mp4")
    if not clip.exists() and big:
        make_clip(clip, 3840, 2160, 30 * 140, 30, "51", "ultrafast", textured=False)
    elif not clip.exists():
        make_clip(clip, 7680, 4320, FRAMES, 1, "51", "ultrafast", textured=False)
    print(f"clip {clip} ({clip.stat().st_size:,} bytes)", flush=True)
    with served(folder / "bench.db") as (proc, address):
        server = psutil.Process(proc.pid)
        with ProvenanceClient(address) as client:
            for _ in range(rounds):
                one_call(client, server, clip, cancel=False)
                one_call(client, server, clip, cancel=True)
            start = time.monotonic()
            report = client.verify_file(clip)
            print(
                f"no deadline: {report.status.value} after {time.monotonic() - start:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
