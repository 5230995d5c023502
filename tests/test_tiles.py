"""C2SP tlog-tiles: layout, export from a real store, audit from tiles alone (prov log ...)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from provenance.core import merkle
from provenance.core.claims import Device, SignedClaim
from provenance.core.errors import LogError, LogIntegrityError
from provenance.log import tiles
from provenance.log.checkpoint import Checkpoint, LogSigner
from provenance.log.tiledir import export_tiles, fetcher
from provenance.store import NewLeaf, Store, open_store
from tests.conftest import (
    ADMIN_TOKEN,
    ROOT,
    WITHOUT_DAC_OVERRIDE,
    ServerProc,
    enroll_key,
    run_in_netns,
    signed_claim,
    start_web,
)
from tests.memory import traced_in_child

ORIGIN = "tiles.test/log"
DEVICE_KEY = bytes(range(32))


def test_index_encoding_follows_the_spec() -> None:
    assert tiles.encode_index(0) == "000"
    assert tiles.encode_index(999) == "999"
    assert tiles.encode_index(1000) == "x001/000"
    assert tiles.encode_index(1234067) == "x001/x234/067"
    for n in (0, 7, 1000, 999_999, 1234067, 2**40):
        assert tiles.decode_index(tiles.encode_index(n)) == n
    for bad in ("x000/123", "1234", "x1/234", "12", "x001"):
        with pytest.raises(LogError):
            tiles.decode_index(bad)
    # other scripts' digits are no tile index (before: "not in canonical form", after
    # int() had read "١٢٣" as 123)
    for bad in ("\u0661\u0662\u0663", "x001/\uff10\uff10\uff10"):
        with pytest.raises(LogError, match="is not a tile index"):
            tiles.decode_index(bad)


def test_paths_parse_back() -> None:
    assert tiles.Tile(0, 1234067, 8).entries_path == "tile/entries/x001/x234/067.p/8"
    assert tiles.Tile(1, 5, 256).path == "tile/1/005"
    for tile in (tiles.Tile(0, 0, 256), tiles.Tile(2, 1234067, 17), tiles.Tile(63, 0, 1)):
        assert tiles.parse_path(tile.path) == (False, tile)
    assert tiles.parse_path("tile/entries/001.p/3") == (True, tiles.Tile(0, 1, 3))
    for bad in ("tile/01/000", "tile/64/000", "tile/0/000.p/0", "tile/0/000.p/256", "x/0/000"):
        with pytest.raises(LogError):
            tiles.parse_path(bad)


def test_paths_with_numbers_too_long_for_an_int_are_refused() -> None:
    """Numbers past Python's 4,300-digit int conversion limit raised ValueError (not
    LogError) out of `parse_path`: `prov web --tiles-dir` answered 500 with a traceback
    in its log. Now a level over 3 digits, a width over 3 and an index over 7 groups are
    refused before any int() is taken."""
    long_index = "x999/" * 2000 + "000"
    assert tiles.decode_index("x018/x446/x744/x073/x709/x551/615") == 2**64 - 1
    for bad in (
        f"tile/0/{long_index}",
        f"tile/entries/{long_index}.p/3",
        "tile/" + "9" * 5000 + "/000",
        "tile/0/000.p/" + "9" * 5000,
        "tile/0/x001/x002/x003/x004/x005/x006/x007/008",
    ):
        with pytest.raises(LogError):
            tiles.parse_path(bad)


def test_served_tiles_answer_404_to_any_path(tmp_path: Path) -> None:
    """`prov web --tiles-dir` answers 404 (never 500) to tile paths of any length."""
    (tmp_path / "tile/0").mkdir(parents=True)
    (tmp_path / "tile/0/000.p").mkdir()
    (tmp_path / "tile/0/000.p/3").write_bytes(bytes(96))
    web = start_web("127.0.0.1:1", "--tiles-dir", str(tmp_path))
    try:
        base = f"{web.address}/tlog/tile"
        with urllib.request.urlopen(f"{base}/0/000.p/3") as r:
            assert r.read() == bytes(96)
        for bad in ("0/" + "x999/" * 2000 + "000", "9" * 5000 + "/000", "0/000.p/" + "9" * 5000):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"{base}/{bad}")
            assert e.value.code == 404, bad[:40]
            assert e.value.headers["Content-Type"] == "text/plain; charset=utf-8"
            assert "not found" in e.value.read().decode()
    finally:
        web.stop()


def test_served_tiles_never_lead_outside_the_tiles_folder(tmp_path: Path) -> None:
    """`prov web --tiles-dir` followed symbolic links out of its folder: a link at
    tile/entries/001 to /etc/passwd was served whole (200, 1,294 bytes), as was one at
    the checkpoint, or at any tile path whose size bound the target's size fits. Now a
    file whose real path is outside the folder is answered 404 and never read out; links
    that stay inside it, and a --tiles-dir that is itself a link, are served as before."""
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret " * 36 + b"end!")  # 256 bytes: fits the bounds below
    big = tmp_path / "outside-big.txt"
    big.write_bytes(b"secret " * 146 + b"end!!!")  # 1,028: a full bundle is 512 or more
    real = tmp_path / "tiles"
    (real / "tile/0/000.p").mkdir(parents=True)
    (real / "tile/0/001.p").mkdir(parents=True)
    (real / "tile/entries/000.p").mkdir(parents=True)
    (real / "tile/0/000.p/3").write_bytes(bytes(96))
    (real / "tile/0/001.p/3").symlink_to("../000.p/3")  # inside: served
    (real / "tile/0/000.p/8").symlink_to(outside)
    (real / "tile/entries/000.p/1").symlink_to(outside)
    (real / "tile/entries/001").symlink_to(big)
    (real / "checkpoint").symlink_to(outside)
    linked = tmp_path / "linked"
    linked.symlink_to(real)
    web = start_web("127.0.0.1:1", "--tiles-dir", str(linked))
    try:
        base = f"{web.address}/tlog"
        for inside in ("tile/0/000.p/3", "tile/0/001.p/3"):
            with urllib.request.urlopen(f"{base}/{inside}") as r:
                assert r.read() == bytes(96)
        for path in ("tile/0/000.p/8", "tile/entries/000.p/1", "tile/entries/001", "checkpoint"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"{base}/{path}")
            body = e.value.read()
            assert e.value.code == 404, (path, e.value.code, body[:80])
            assert b"secret" not in body and b"outside the" in body, (path, body)
    finally:
        web.stop()
    assert "outside the tiles folder" in web.stderr(), web.stderr()[-2000:]


def test_a_link_out_of_the_tiles_folder_never_tells_its_size(tmp_path: Path) -> None:
    """A link out of the tiles folder to a regular file of a size no tile has was judged
    by its size before the folder was: a 500 telling the client "its file is 1,000 bytes"
    (the size of any file a link leads to), and the log said to run export-tiles again.
    Now it is the 404 of any link out, its real path only in the log. (A link out to a
    FIFO or a device stays the 500 "is a FIFO", never opened: its kind is judged before
    anything is opened.)"""
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"secret " * 142 + b"end!!!")  # 1,000 bytes: no tile's size
    real = tmp_path / "tiles"
    (real / "tile/0/000.p").mkdir(parents=True)
    (real / "tile/0/000").symlink_to(outside)
    (real / "tile/0/000.p/9").symlink_to(outside)  # a partial tile cut from a wider one
    (tmp_path / "level").mkdir()
    (tmp_path / "level/000").write_bytes(outside.read_bytes())
    (real / "tile/1").symlink_to(tmp_path / "level")  # a folder on its path leading out
    web = start_web("127.0.0.1:1", "--tiles-dir", str(real))
    try:
        for path in ("tile/0/000", "tile/0/000.p/3", "tile/1/000"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"{web.address}/tlog/{path}")
            body = e.value.read()
            assert e.value.code == 404, (path, e.value.code, body[:200])
            assert b"outside the" in body and b"1,000" not in body, (path, body)
    finally:
        web.stop()
    assert "Traceback" not in web.stderr(), web.stderr()[-2000:]


def test_a_tiles_dir_that_is_a_file_is_refused_and_never_a_500(tmp_path: Path) -> None:
    """`prov web --tiles-dir FILE` started, and every GET /tlog/checkpoint was a 500 with
    a NotADirectoryError traceback in the log. Now a --tiles-dir that is a file is a usage
    error (exit 2; one not there yet is still taken: the export may come later), and a
    folder replaced by a file while serving answers 404 for the checkpoint, as for tiles."""
    a_file = tmp_path / "tiles.txt"
    a_file.write_text("not a folder")
    done = subprocess.run(
        [sys.executable, "-m", "clients.cli", "web", "--server", "127.0.0.1:1",
         "--listen", "127.0.0.1:0", "--tiles-dir", str(a_file)],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )  # fmt: skip  # before: it started serving (the timeout)
    assert done.returncode == 2 and "--tiles-dir" in done.stderr, done
    later = tmp_path / "later"
    web = start_web("127.0.0.1:1", "--tiles-dir", str(later))
    try:
        later.write_text("now a file")
        for path in ("checkpoint", "tile/0/000"):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"{web.address}/tlog/{path}")
            assert e.value.code == 404, (path, e.value.code)  # was 500 for the checkpoint
    finally:
        web.stop()


def test_tiles_for_size_matches_the_spec_examples() -> None:
    # tlog-tiles "Partial Tiles": a tree of 70,000 is 273 full level-0 tiles, one partial
    # of 112, one full level-1 tile, a partial level-1 of 17 and a partial level-2 of 1
    got = tiles.tiles_for_size(70_000)
    assert [t for t in got if t.level == 0 and not t.partial] == [
        tiles.Tile(0, n, 256) for n in range(273)
    ]
    assert [t for t in got if t.partial or t.level > 0] == [
        tiles.Tile(0, 273, 112),
        tiles.Tile(1, 0, 256),
        tiles.Tile(1, 1, 17),
        tiles.Tile(2, 0, 1),
    ]
    assert tiles.tiles_for_size(256) == [tiles.Tile(0, 0, 256), tiles.Tile(1, 0, 1)]
    assert tiles.tiles_for_size(0) == []


def test_a_tile_of_one_is_said_in_the_singular() -> None:
    """The words of a tile of width 1 (a partial tile of a log of 1, 257, ... entries):
    "a tile of 1 hash", "an entry bundle of 1 entry" (before: "a tile of 1 hashes", "an
    entry bundle of 1 entries"), wherever a message says them; a wider one in the plural."""
    one, five = tiles.Tile(0, 0, 1), tiles.Tile(1, 0, 5)
    assert tiles.file_bounds_said(one, False) == "a tile of 1 hash is 32 bytes"
    assert tiles.file_bounds_said(one, True) == "an entry bundle of 1 entry is 2 to 65,537 bytes"
    assert tiles.file_bounds_said(five, False) == "a tile of 5 hashes is 160 bytes"
    assert tiles.tile_said(one, False) == "a tile of 1 hash"
    assert tiles.tile_said(one, True) == "an entry bundle of 1 entry"
    assert tiles.tile_said(five, True) == "an entry bundle of 5 entries"
    with pytest.raises(LogIntegrityError, match=r"is 33 bytes, not 1 hash of 32 bytes:"):
        tiles.split_hashes(bytes(33), one)
    with pytest.raises(LogIntegrityError, match=r"000\.p/1 is not 1 length-prefixed entry:"):
        tiles.decode_bundle(b"\x00", one)


def test_bundles_round_trip_and_refuse_damage() -> None:
    entries = [b"", b"a", bytes(range(256)) * 3, b"\xff" * tiles.MAX_ENTRY_SIZE]
    tile = tiles.Tile(0, 0, len(entries))
    data = tiles.encode_bundle(entries)
    assert data[:4] == b"\x00\x00\x00\x01"  # big-endian uint16 lengths
    assert tiles.decode_bundle(data, tile) == entries
    for bad in (data[:-1], data + b"\x00", data[:1]):
        with pytest.raises(LogIntegrityError):
            tiles.decode_bundle(bad, tile)
    with pytest.raises(LogError, match="entry 0 of the log is 65,536 bytes"):
        tiles.encode_bundle([b"x" * (tiles.MAX_ENTRY_SIZE + 1)])


def _mth(hashes: list[bytes]) -> bytes:
    """RFC 9162 2.1.1 MTH over leaf hashes, written out independently of merkle.py."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(hashes[:k]) + _mth(hashes[k:])).digest()


def _fill(store: Store, signer: LogSigner, count: int, seed: int, pad: int = 300) -> list[bytes]:
    """Append ``count`` entries (each a claim's bytes and up to ``pad`` random bytes)
    through the store's append transaction, as the group-commit writer does (nodes,
    checkpoint, leaves), without the RPC path. Returns the leaf hashes."""
    rng = random.Random(seed)
    start = store.tree_size()
    # opaque leaf data of varying length (tiles do not parse entries)
    return _append(
        store,
        signer,
        [
            f"claim {seed} {i}".encode() + rng.randbytes(rng.randrange(pad))
            for i in range(start, start + count)
        ],
    )


def _append(store: Store, signer: LogSigner, entries: list[bytes]) -> list[bytes]:
    """Append these leaf entries as `_fill` does (no size check: a log written before the
    writer refused entries over 65,535 bytes). Returns the leaf hashes."""
    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    rng = random.Random(len(entries))
    device = Device(DEVICE_KEY, DEVICE_KEY, now)
    if store.find_device(DEVICE_KEY) is None:
        store.enroll(None, device, now)
    with store.append() as txn:
        start = txn.tree_size()
        leaves = []
        for i, entry in enumerate(entries, start):
            claim = SignedClaim("application/vnd.test", entry[:40], DEVICE_KEY, b"s" * 64)
            leaves.append(
                NewLeaf(
                    merkle.leaf_hash(entry), claim, DEVICE_KEY, i + 1, rng.randbytes(32), now,
                    False, entry, (),
                )
            )  # fmt: skip
        hashes = [lf.leaf_hash for lf in leaves]
        txn.put_nodes(merkle.append_batch(start, hashes, txn.get_nodes))
        size = start + len(entries)
        root = merkle.root(size, txn.get_nodes)
        txn.put_checkpoint(size, signer.sign(Checkpoint(ORIGIN, size, root, now)), now)
        txn.insert_leaves(start, leaves)
    return hashes


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1
    path.write_bytes(bytes(data))


def _audit(*args: str) -> int:
    return prov_main(["log", "audit", *args])


@contextlib.contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A threading HTTP server of ``handler`` on a loopback port for the block: its
    http://127.0.0.1:PORT/ URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(BaseHTTPRequestHandler):
    """A request handler that logs nothing (http.server writes each request to stderr)."""

    def log_message(self, *args: object) -> None:
        pass


def _answering(status: int, body: bytes, content_type: str) -> type[BaseHTTPRequestHandler]:
    """A handler answering every GET with ``status`` and ``body`` of ``content_type``."""

    class Answering(_Quiet):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Answering


def _encoding_server(
    folder: Path, encoding: str, encode: Callable[[bytes], bytes]
) -> type[BaseHTTPRequestHandler]:
    """A handler serving the tiled log in ``folder`` (404 for a file not there), each file
    but the checkpoint sent as ``encode`` gives it, with ``Content-Encoding: encoding``."""

    class Encoding(_Quiet):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = folder / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            if self.path != "/checkpoint":
                body = encode(body)
                self.send_header("Content-Encoding", encoding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Encoding


@pytest.mark.slow
def test_100k_log_exported_and_audited_from_tiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    vkey = signer.verifier_key()
    store = open_store(":memory:")  # the Store API; SQLite's own export is tested below
    leaves = _fill(store, signer, 100_003, seed=1)
    size = len(leaves)
    out = tmp_path / "tiles"
    result = export_tiles(store, out)
    assert (result.size, result.bundles_written) == (size, 391)
    assert (out / "tile/0/390.p/163").stat().st_size == 163 * 32
    assert (out / "tile/1/001.p/134").is_file() and (out / "tile/2/000.p/1").is_file()
    latest = store.latest_checkpoint()
    assert latest is not None and (out / "checkpoint").read_text() == latest[1]

    # roots and proofs from the tiles alone equal the store's and an independent MTH
    nodes = tiles.TileNodes(size, fetcher(str(out)))
    mth = _mth(leaves)  # once: 0.3 s each
    assert merkle.root(size, nodes) == merkle.root(size, store.get_nodes) == mth
    rng = random.Random(7)
    for index in [0, 255, 256, 65535, 65536, size - 1, *rng.sample(range(size), 20)]:
        proof = merkle.inclusion_proof(index, size, nodes)
        assert proof == merkle.inclusion_proof(index, size, store.get_nodes)
        merkle.verify_inclusion(index, size, leaves[index], proof, mth)
    for old in [1, 256, 65536, 70_000, size - 1, *rng.sample(range(1, size), 5)]:
        proof = merkle.consistency_proof(old, size, nodes)
        assert proof == merkle.consistency_proof(old, size, store.get_nodes)
        merkle.verify_consistency(old, size, proof, _mth(leaves[:old]), mth)

    # prov log audit --tiles: OK, then grows by an incremental export and re-audit
    state = tmp_path / "state.json"
    assert _audit("--state", str(state), "--tiles", str(out), "--log-key", vkey) == 0
    assert f"has {size} entries" in capsys.readouterr().out
    _fill(store, signer, 300, seed=2)
    again = export_tiles(store, out)
    assert (again.size, again.bundles_written) == (size + 300, 2)
    # the full tile replaced the partial one, and a reader of the old checkpoint falls
    # back to the full tile's first hashes (tlog-tiles "Partial Tiles")
    assert not (out / "tile/0/390.p").exists() and not (out / "tile/entries/390.p").exists()
    old_nodes = tiles.TileNodes(size, fetcher(str(out)))
    assert merkle.root(size, old_nodes) == mth
    assert _audit("--state", str(state), "--tiles", str(out), "--incremental") == 0
    assert f"grew from {size} to {size + 300}" in capsys.readouterr().out

    # an edited tile at each level, and an edited entry bundle, are integrity failures
    size += 300
    fresh = str(tmp_path / "fresh.json")
    for edited in ("tile/0/100", "tile/1/000", "tile/2/000.p/1", "tile/entries/123"):
        _flip(out / edited, 20)
        assert _audit("--state", fresh, "--tiles", str(out), "--log-key", vkey) == 3, edited
        assert "LOG INTEGRITY FAILURE" in capsys.readouterr().err
        _flip(out / edited, 20)
    # a deleted tile, too
    (out / "tile/0/100").unlink()
    assert _audit("--state", fresh, "--tiles", str(out), "--log-key", vkey) == 3
    assert "has no tile/0/100" in capsys.readouterr().err
    store.close()


def test_fork_and_wrong_key_caught_from_tiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    vkey = signer.verifier_key()
    honest, forked = open_store(tmp_path / "a.db"), open_store(tmp_path / "b.db")
    _fill(honest, signer, 600, seed=1)
    _fill(forked, signer, 500, seed=1)  # the same first 500 entries...
    _fill(forked, signer, 400, seed=9)  # ...then different ones, signed by the same key
    state = tmp_path / "state.json"
    export_tiles(honest, tmp_path / "honest")
    export_tiles(forked, tmp_path / "forked")
    assert (
        _audit("--state", str(state), "--tiles", str(tmp_path / "honest"), "--log-key", vkey) == 0
    )
    assert _audit("--state", str(state), "--tiles", str(tmp_path / "forked")) == 3
    assert "FORK" in capsys.readouterr().err
    other = LogSigner(Ed25519PrivateKey.generate(), ORIGIN).verifier_key()
    rc = _audit(
        "--state",
        str(tmp_path / "s2.json"),
        "--tiles",
        str(tmp_path / "honest"),
        "--log-key",
        other,
    )
    assert rc == 3
    # exporting a smaller log over a bigger one is refused
    assert (
        prov_main(["log", "export-tiles", str(tmp_path / "forked"), "--db", str(tmp_path / "a.db")])
        == 1
    )
    honest.close()
    forked.close()


@pytest.mark.slow
def test_real_server_exported_served_and_audited_over_http(
    tmp_path: Path, server: ServerProc, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running `prov serve`: export its SQLite log while it runs (--follow), serve the
    tiles with `prov web --tiles-dir`, audit them over HTTP with `prov log audit --tiles`."""
    out = tmp_path / "tiles"
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as client:
        key = enroll_key(client)
        prev = b""
        for seq in range(1, 6):
            signed = signed_claim(key, seq, prev=prev)
            client.submit(signed)
            prev = signed.claim_hash
        vkey, _ = client.log_key()
        export = ["log", "export-tiles", str(out), "--db", str(server.db)]
        assert prov_main([*export, "--follow", "--interval", "0.1", "--max-polls", "2"]) == 0
        assert "exported 6 entries" in capsys.readouterr().out
        assert (out / "tile/0/000.p/6").stat().st_size == 6 * 32
        assert (out / "tile/entries/000.p/6").is_file()
        web = start_web(server.address, "--tiles-dir", str(out))
        try:
            base = f"{web.address}/tlog"
            state = str(tmp_path / "state.json")
            assert (
                prov_main(["log", "audit", "--state", state, "--tiles", base, "--log-key", vkey])
                == 0
            )
            assert "has 6 entries" in capsys.readouterr().out
            # a wrong place is not a broken log: no alarm (exit 3), a hint (exit 1); a
            # folder that does not exist is a usage error (before: 3, 3 and 1)
            empty = tmp_path / "empty"
            empty.mkdir()
            for where in (web.address, str(empty)):
                fresh = str(tmp_path / "fresh.json")
                rc = prov_main(
                    ["log", "audit", "--state", fresh, "--tiles", where, "--log-key", vkey]
                )
                err = capsys.readouterr().err
                assert rc == 1 and "no tiled log at" in err and "INTEGRITY" not in err, err
            missing = str(tmp_path / "nowhere")
            rc = prov_main(["log", "audit", "--state", state, "--tiles", missing])
            assert rc == 2
            assert "neither an http(s):// URL nor a folder" in capsys.readouterr().err
            with urllib.request.urlopen(f"{base}/checkpoint") as r:
                assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
                assert r.headers["Cache-Control"] == "public, max-age=5"
                assert r.read().decode() == client.checkpoint()
            with urllib.request.urlopen(f"{base}/tile/0/000.p/6") as r:
                assert r.headers["Content-Type"] == "application/octet-stream"
                assert r.headers["Cache-Control"] == "public, max-age=60"
            gz = urllib.request.Request(
                f"{base}/tile/entries/000.p/6", headers={"Accept-Encoding": "gzip"}
            )
            with urllib.request.urlopen(gz) as r:
                assert r.headers["Content-Encoding"] == "gzip"
                assert gzip.decompress(r.read()) == (out / "tile/entries/000.p/6").read_bytes()
            for bad in ("tile/0/000", "tile/0/../../state.json", "tile/00/000.p/5"):
                with pytest.raises(urllib.error.HTTPError) as e:
                    urllib.request.urlopen(f"{base}/{bad}")
                assert e.value.code == 404
            # grows past a full tile: the full tile is immutable
            for seq in range(6, 261):  # 261 entries with the enrollment
                signed = signed_claim(key, seq, prev=prev)
                client.submit(signed)
                prev = signed.claim_hash
            assert prov_main(export) == 0
            assert not (out / "tile/0/000.p").exists()
            with urllib.request.urlopen(f"{base}/tile/0/000") as r:
                assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
                assert len(r.read()) == 8192
            assert prov_main(["log", "audit", "--state", state, "--tiles", base]) == 0
            assert "grew from 6 to 261" in capsys.readouterr().out
        finally:
            web.stop()


def test_a_server_dripping_a_file_cannot_hold_an_audit() -> None:
    """A tiled-log server sending its checkpoint a byte every 0.2 s (each within the
    per-read timeout) is cut at the whole-file deadline: a TransportError, not a hang;
    an honest answer of the same server arrives whole."""
    import threading
    from http.server import ThreadingHTTPServer

    from provenance.core.errors import TransportError

    stop = threading.Event()
    body = b"media-provenance.local/log\n0\n" + b"A" * 43 + b"=\n"

    class Drip(_Quiet):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for i in range(len(body)):
                if self.path.endswith("/slow/checkpoint") and stop.wait(0.2):
                    return
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert fetcher(f"{url}/fast", deadline_s=1.0)("checkpoint") == body
        with pytest.raises(TransportError, match="took more than 1 s to arrive"):
            fetcher(f"{url}/slow", deadline_s=1.0)("checkpoint")
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_a_server_dripping_its_answers_head_cannot_hold_an_audit() -> None:
    """A tiled-log server sending its status line and then header bytes one every 0.1 s
    (each within the per-read timeout; http.client takes 100 header lines of 64 KiB)
    held `prov log audit --tiles URL` for days: the whole-file deadline timed only the
    body. Now the head is cut at the same deadline, a TransportError in words."""
    from provenance.core.errors import TransportError

    stop = threading.Event()

    class DripHead(_Quiet):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                while not stop.wait(0.1):
                    self.wfile.write(b"a")
                    self.wfile.flush()
            except OSError:  # the client cut it
                pass

    outcome: list[BaseException | bytes] = []

    def fetch(url: str) -> None:
        try:
            outcome.append(fetcher(url, deadline_s=1.0)("checkpoint"))
        except BaseException as e:  # noqa: BLE001 (handed to the test's thread)
            outcome.append(e)

    with _serving(DripHead) as url:
        worker = threading.Thread(target=fetch, args=(url,), daemon=True)
        worker.start()
        worker.join(30)  # generous: the deadline is 1 s
        stop.set()
    assert not worker.is_alive(), "the fetch was still reading the dripped head after 30 s"
    assert isinstance(outcome[0], TransportError), outcome
    assert "took more than 1 s to arrive" in str(outcome[0])


def test_a_place_whose_checkpoint_is_no_signed_note_is_no_tiled_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --tiles URL without the log's prefix on a site that answers every path with its
    page (an app's fallback to index.html, 200), or a folder whose `checkpoint` is some
    other file, has nothing signed there: like a place with no checkpoint at all, it
    exits 1 saying there is no tiled log there and what prefix to give. Before: 'LOG
    INTEGRITY FAILURE: ... signed note has no blank line', exit 3, as for a forged log.
    A checkpoint that is a signed note by another key is still exit 3."""

    page = b"<!doctype html>\n<html><body>Welcome</body></html>\n"
    fallback = _answering(200, page, "text/html")
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    vkey = signer.verifier_key()
    folders = {}
    for name, content in {
        "html": page,
        "binary": bytes(range(256)),
        "empty": b"",
        "other key": LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
        .sign(Checkpoint(ORIGIN, 0, merkle.EMPTY_ROOT))
        .encode(),
    }.items():
        folders[name] = tmp_path / name.replace(" ", "-")
        folders[name].mkdir()
        (folders[name] / "checkpoint").write_bytes(content)
    with _serving(fallback) as url:
        for where in [url, *map(str, folders.values())]:
            state = str(tmp_path / "state.json")
            rc = _audit("--state", state, "--tiles", where, "--log-key", vkey)
            err = capsys.readouterr().err
            if where == str(folders["other key"]):
                assert rc == 3 and "LOG INTEGRITY FAILURE" in err, err
                continue
            assert rc == 1 and "no tiled log at" in err and "INTEGRITY" not in err, (where, err)
            assert "its checkpoint is not a signed note" in err, err


def test_a_tile_sent_in_an_encoding_not_asked_for_is_no_integrity_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit asks for `Accept-Encoding: gzip, identity`. A server (a CDN, a
    misconfigured static host) that sends an honest log's tiles deflate- or
    brotli-encoded anyway had them read as they came, compressed bytes taken for hashes:
    'LOG INTEGRITY FAILURE: tile/0/000.p/6 is ... bytes', exit 3, an alarm about a log
    that is intact. Now an encoding other than gzip or none is a failure to fetch (exit
    1) naming it."""

    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    store = open_store(tmp_path / "log.db")
    _fill(store, signer, 6, seed=3)
    export_tiles(store, tmp_path / "tiles")
    store.close()

    state = str(tmp_path / "state.json")
    with _serving(_encoding_server(tmp_path / "tiles", "deflate", zlib.compress)) as url:
        rc = _audit("--state", state, "--tiles", url, "--log-key", signer.verifier_key())
    err = capsys.readouterr().err
    assert rc == 1 and "INTEGRITY" not in err, err
    assert "in the encoding 'deflate'" in err, err
    # the same files unencoded audit fine
    rc = _audit(
        "--state", state, "--tiles", str(tmp_path / "tiles"), "--log-key", signer.verifier_key()
    )
    assert rc == 0, capsys.readouterr().err


def _tiled_log(
    folder: Path, signer: LogSigner, size: int, signed_at: datetime | None = None
) -> None:
    """Write a tiled log of ``size`` 4-byte entries (0, 1, ...) signed by ``signer`` into
    ``folder``, straight from the tlog-tiles layout (no store: a large log in seconds), its
    checkpoint with the time line ``signed_at`` (None: none)."""
    entries = [i.to_bytes(4, "big") for i in range(size)]
    hashes = [merkle.leaf_hash(e) for e in entries]
    files: dict[str, bytes] = {}
    level = 0
    while size >> (tiles.TILE_HEIGHT * level):
        for t in tiles.level_tiles(size, level):
            first = t.index * tiles.TILE_WIDTH
            files[t.path] = b"".join(hashes[first : first + t.width])
            if level == 0:
                files[t.entries_path] = tiles.encode_bundle(entries[first : first + t.width])
        full = len(hashes) - len(hashes) % tiles.TILE_WIDTH
        hashes = [
            tiles._perfect_root(hashes[i : i + tiles.TILE_WIDTH]) for i in range(0, full, 256)
        ]
        level += 1
    root = merkle.root(size, tiles.TileNodes(size, files.__getitem__))
    files["checkpoint"] = signer.sign(Checkpoint(signer.name, size, root, signed_at)).encode()
    for path, data in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)


def test_a_stale_copy_of_the_tiles_is_no_rollback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mirror or cache serving a checkpoint of fewer entries signed before the one the
    audit saved (not updated yet) is exit 1, 'older than the one this audit saved', the
    state kept: an old signed checkpoint proves nothing against the log. Before, it was
    LOG INTEGRITY FAILURE: ROLLBACK, exit 3, a false alarm (found by h-rev43). A smaller
    tree signed after the saved one is still a ROLLBACK (exit 3), as is one whose
    checkpoints carry no time."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    vkey = signer.verifier_key()
    t0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    for name, size, minutes in (("old", 300, 0), ("new", 600, 10), ("rolled", 300, 20)):
        _tiled_log(tmp_path / name, signer, size, t0 + timedelta(minutes=minutes))
    for name, size in (("old-untimed", 300), ("new-untimed", 600)):
        _tiled_log(tmp_path / name, signer, size)
    state = tmp_path / "state.json"
    assert _audit("--state", str(state), "--tiles", str(tmp_path / "new"), "--log-key", vkey) == 0
    saved = state.read_bytes()
    capsys.readouterr()
    assert _audit("--state", str(state), "--tiles", str(tmp_path / "old")) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "older than the one this audit saved" in said, said
    assert "LOG INTEGRITY FAILURE" not in said, said
    assert state.read_bytes() == saved
    assert _audit("--state", str(state), "--tiles", str(tmp_path / "rolled")) == 3
    assert "ROLLBACK" in capsys.readouterr().err
    untimed = str(tmp_path / "untimed.json")
    assert (
        _audit("--state", untimed, "--tiles", str(tmp_path / "new-untimed"), "--log-key", vkey) == 0
    )
    assert _audit("--state", untimed, "--tiles", str(tmp_path / "old-untimed")) == 3
    assert "ROLLBACK" in capsys.readouterr().err


def test_an_audit_from_tiles_holds_a_bounded_share_of_the_tree_in_memory(
    tmp_path: Path,
) -> None:
    """`audit_tiles` kept every tile it fetched: about 73 bytes of memory per leaf (a
    list of 32-byte bytes objects per tile), 0.7 GB for a log of 10^7 entries, whatever
    the log's size. It now keeps the tiles above level 0 and the right edge (32 bytes per
    256 leaves) and the level-0 tiles it is working through, each checked against its
    parent and its entry bundle in one pass; the audit's findings are the same (the
    edited-tile cases of the 100k test below).

    Measured in a child process: tracemalloc's peak counts every thread's allocations,
    and in a test worker a thread left by an earlier test (a server, a client) allocating
    meanwhile once read 9.3 MB here (CI), where the audit alone takes 1.6 MB.

    A copy of the log in another folder is audited first, untraced: the tile paths'
    parts are interned (pathlib's parse_parts calls sys.intern), and when Python's table
    of interned strings grows past its size during the traced audit it allocates its
    new table there, 0.94 MB counted as the audit's (2.57 MB read, 7 December: it
    depends on how many strings the process interned before). Another folder, so that
    nothing the first audit kept of its own tiles could serve the second."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    size = 2 * 65536 + 1000  # three levels, partial tiles at each
    _tiled_log(tmp_path / "tiles", signer, size)
    shutil.copytree(tmp_path / "tiles", tmp_path / "warm")
    code = """
from provenance.log import tiles
from provenance.log.tiledir import fetcher
tiles.audit_tiles(fetcher(sys.argv[3]), sys.argv[2], None)
fetch = fetcher(sys.argv[1])
result, _, peak = traced(lambda: tiles.audit_tiles(fetch, sys.argv[2], None))
tell(result.checkpoint.size, result.entries_checked, result.tiles_read, peak)
"""
    args = [str(tmp_path / "tiles"), signer.verifier_key(), str(tmp_path / "warm")]
    found, _ = traced_in_child(code, args, tmp_path)
    checked_size, entries_checked, tiles_read, peak = found
    assert (checked_size, entries_checked) == (size, size)
    assert tiles_read == 516 + 3 + 1  # each tile read once: levels 0, 1 and 2
    assert peak < 2_000_000, f"{peak / size:.1f} bytes per leaf at the peak"


def test_a_partial_tile_served_as_full_is_refused(tmp_path: Path) -> None:
    """A reader of an older checkpoint whose partial tile the log has deleted falls back
    to the full tile's first hashes (tlog-tiles "Partial Tiles"); a "full" tile of fewer
    than 256 hashes is malformed there as everywhere else (LogIntegrityError), as the
    entry bundle already was. Before, its first hashes were taken whatever its length."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    store = open_store(tmp_path / "log.db")
    _fill(store, signer, 300, seed=1)
    out = tmp_path / "tiles"
    export_tiles(store, out)
    partial = (out / "tile/0/001.p/44").read_bytes()
    _fill(store, signer, 212, seed=2)  # 512: tile 0/001 is full, its partial one deleted
    export_tiles(store, out)
    expected = merkle.root(300, store.get_nodes)
    store.close()
    assert not (out / "tile/0/001.p").exists()
    # through the full tile's first 44 hashes
    assert merkle.root(300, tiles.TileNodes(300, fetcher(str(out)))) == expected
    (out / "tile/0/001").write_bytes(partial)  # the partial tile, served as the full one
    with pytest.raises(LogIntegrityError, match="tile/0/001 is 1408 bytes, not 256 hashes"):
        merkle.root(300, tiles.TileNodes(300, fetcher(str(out))))
    (out / "tile/0/001").write_bytes(partial + bytes(32))  # one hash more: still not full
    with pytest.raises(LogIntegrityError, match="not 256 hashes"):
        merkle.root(300, tiles.TileNodes(300, fetcher(str(out))))


def test_an_audit_of_an_absurd_tree_size_fails_on_its_first_missing_tile(
    tmp_path: Path,
) -> None:
    """A log-signed checkpoint of 2^63 - 1 entries over a real 300-entry export: the
    audit listed every tile of that size before fetching one (2^55 of level 0, in
    memory), so `prov log audit --tiles` ran out of memory instead of reporting the
    first tile that is not there. Tiles are now walked lazily, level by level (from level 2
    down; level 1 with the entries): the audit
    says which tile is missing (a log integrity failure, exit 3) within an address-space
    limit of 3 GiB."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    store = open_store(tmp_path / "log.db")
    _fill(store, signer, 300, seed=3)
    export_tiles(store, tmp_path / "tiles")
    store.close()
    huge = signer.sign(Checkpoint(ORIGIN, 2**63 - 1, bytes(32)))
    (tmp_path / "tiles" / tiles.CHECKPOINT_PATH).write_text(huge)
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "from clients.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "log", "audit", "--tiles", str(tmp_path / "tiles"),
         "--log-key", signer.verifier_key(), "--state", str(tmp_path / "state.json")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 3 and "has no tile/2/000" in said, proc.stderr
    assert "MemoryError" not in proc.stderr


def test_a_large_entry_bundle_is_served_without_gzip(tmp_path: Path) -> None:
    """An entry bundle of large entries (up to 16 MiB: 256 of 65,535 bytes) cost 0.38 s
    of CPU to gzip at each request (13 MB of 1,000-frame video claims, level 6, saving
    16%), so anyone looping GET with Accept-Encoding: gzip kept the server's cores busy.
    A bundle over `GZIP_MAX_BYTES` is now sent as it is (identity, which every client
    takes); a small one is still gzipped. Real SQLite logs exported, a real `prov web
    --tiles-dir`."""
    from provenance.web.tlogtiles import GZIP_MAX_BYTES

    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    export = tmp_path / "tiles"
    small_log, big_log = open_store(tmp_path / "small.db"), open_store(tmp_path / "big.db")
    _fill(small_log, signer, 6, seed=5)
    _fill(big_log, signer, 64, seed=5, pad=65_000)  # entries of up to 65 KB
    export_tiles(small_log, export / "small")
    export_tiles(big_log, export / "big")
    small_log.close()
    big_log.close()
    web = start_web("127.0.0.1:1", "--tiles-dir", str(export))
    try:
        for log, path, gzipped in (
            ("small", "tile/entries/000.p/6", True),
            ("big", "tile/entries/000.p/64", False),
        ):
            data = (export / log / path).read_bytes()
            assert (len(data) <= GZIP_MAX_BYTES) == gzipped, len(data)
            request = urllib.request.Request(
                f"{web.address}/tlog/{path}", headers={"Accept-Encoding": "gzip"}
            )
            (export / "tile").unlink(missing_ok=True)
            (export / "tile").symlink_to(export / log / "tile")
            with urllib.request.urlopen(request) as r:
                body = r.read()
                assert r.headers.get("Content-Encoding") == ("gzip" if gzipped else None)
                assert (gzip.decompress(body) if gzipped else body) == data
    finally:
        web.stop()


#: Run in `run_in_netns`: a `prov web --tiles-dir` on NETNS_SERVER serving a 15 MB
#: entry bundle and a hash tile. One address of one host's /64 asks for the bundle and
#: does not read it (its answer stays in flight). Meanwhile another /64 asks for the
#: bundle; another address of the first /64 for the hash tile (timed); a third address
#: of it for the hash tile again, answered after the first has read its bundle; then the
#: bundle asked for and hung up on unread, and the hash tile again. Prints each answer's
#: status line, Retry-After, body length and text, and the timed wait.
_NETNS_TILES = """
import json, socket, sys, time
from tests.conftest import NETNS_ONE_HOST, NETNS_OTHER_HOST, NETNS_SERVER, start_web
proc = start_web("127.0.0.1:1", "--tiles-dir", FOLDER, "--listen", f"[{NETNS_SERVER}]:0")
port = int(proc.address.rsplit(":", 1)[1])
def ask(source, path, rcvbuf=0):
    s = socket.socket(socket.AF_INET6)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((source, 0))
    s.settimeout(30)
    s.connect((NETNS_SERVER, port))
    s.sendall(f"GET /tlog/{path} HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n".encode())
    return s
def answer(s):
    data = b""
    while chunk := s.recv(1 << 20):
        data += chunk
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    lines = head.decode().split("\\r\\n")
    retry = [h.split(":", 1)[1].strip() for h in lines if h.lower().startswith("retry-after:")]
    return [lines[0], retry[0] if retry else None, len(body), body.decode(errors="replace")[:400]]
try:
    held = ask(NETNS_ONE_HOST[0], "tile/entries/000", rcvbuf=16384)
    time.sleep(1.0)
    out = {"other": answer(ask(NETNS_OTHER_HOST, "tile/entries/000"))}
    t0 = time.monotonic()
    out["same"] = answer(ask(NETNS_ONE_HOST[1], "tile/0/000"))
    out["waited"] = time.monotonic() - t0
    waiting = ask(NETNS_ONE_HOST[2], "tile/0/000")
    time.sleep(0.5)
    out["first"] = answer(held)
    out["after"] = answer(waiting)
    gone = ask(NETNS_ONE_HOST[0], "tile/entries/000", rcvbuf=16384)
    time.sleep(0.5)
    gone.close()  # unread: its share is given back as the connection is lost
    out["after_gone"] = answer(ask(NETNS_ONE_HOST[1], "tile/0/000"))
    print(json.dumps(out))
finally:
    proc.stop()
"""


def test_one_ipv6_host_gets_one_share_of_tile_bytes_in_flight(tmp_path: Path) -> None:
    """Clients looping over a 13 MiB entry bundle of `prov web --tiles-dir` each had as
    many in flight as they had connections (and addresses of their /64). Now a client
    (an IPv4 address, an IPv6 /64) has at most `TILE_BYTES_PER_CLIENT` of tiles in flight,
    or one tile of any size; a request past that waits for them, then gets 429 with
    Retry-After. While one address of a /64 leaves a 15 MB bundle unread, another /64 gets
    the bundle whole, another address of the same /64 waits `TILE_WAIT_S` and gets 429,
    and a third is answered once the first has read its bundle; a client that hangs up
    with its bundle unread holds nothing. Real sockets, a real `prov web`, in a network
    namespace."""
    from provenance.web.tlogtiles import TILE_BYTES_PER_CLIENT, TILE_RETRY_AFTER_S, TILE_WAIT_S

    (tmp_path / "tile/entries").mkdir(parents=True)
    (tmp_path / "tile/0").mkdir()
    bundle = tiles.encode_bundle([bytes([i]) * 60_000 for i in range(256)])
    assert len(bundle) > TILE_BYTES_PER_CLIENT
    (tmp_path / "tile/entries/000").write_bytes(bundle)
    (tmp_path / "tile/0/000").write_bytes(bytes(range(256)) * 32)
    (tmp_path / "checkpoint").write_text(f"{ORIGIN}\n256\n" + "A" * 43 + "=\n")
    out = json.loads(run_in_netns(_NETNS_TILES.replace("FOLDER", repr(str(tmp_path)))))
    assert out["other"][:3] == ["HTTP/1.1 200 OK", None, len(bundle)]
    status, retry, _, text = out["same"]
    assert status == "HTTP/1.1 429 Too Many Requests", out["same"]  # was 200 at once
    assert retry == str(TILE_RETRY_AFTER_S)
    assert "fd00:1::/64 already has" in text and "tiles in flight" in text, text
    assert out["waited"] > TILE_WAIT_S - 0.5  # it waited (the server's wait: load only adds)
    assert out["first"][:3] == ["HTTP/1.1 200 OK", None, len(bundle)]
    assert out["after"][:3] == ["HTTP/1.1 200 OK", None, 256 * 32]
    # a client that hung up holds nothing: its share given back as its connection was
    # lost (held until the server's write watch cut it, 10 s by default, the share
    # would still be full when the TILE_WAIT_S wait ran out: 429)
    assert out["after_gone"][:3] == ["HTTP/1.1 200 OK", None, 256 * 32]


def test_an_export_into_another_logs_folder_is_refused_and_leaves_it_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov log export-tiles DIR --db B` into a folder holding log A's export of 300
    entries (another log, or this log's database before it was rebuilt): the export
    kept A's tiles under A's checkpoint size, wrote B's after them, dropped A's partial
    tiles for B's full ones, and said "exported 3300 entries" (exit 0); the folder then
    failed its audit, "LOG INTEGRITY FAILURE: tile/0/000 does not hash to hash 0 of
    tile/1/000.p/12: a tile was edited" (exit 3), a false alarm of tampering, and an
    export stopped by a signal in between left A's checkpoint over B's tiles, though its
    line said the folder held a complete tiled log of 300 entries. Now the folder's
    checkpoint is checked against the store's tree at its size first: another root is
    refused, exit 1, nothing written, and A's export still audits."""
    signers = {name: LogSigner(Ed25519PrivateKey.generate(), ORIGIN) for name in "ab"}
    for name, count, seed in (("a", 300, 1), ("b", 3300, 2)):
        store = open_store(tmp_path / f"{name}.db")
        _fill(store, signers[name], count, seed=seed)
        store.close()
    out = tmp_path / "tiles"
    assert prov_main(["log", "export-tiles", str(out), "--db", str(tmp_path / "a.db")]) == 0
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    rc = prov_main(["log", "export-tiles", str(out), "--db", str(tmp_path / "b.db")])
    said = capsys.readouterr()
    assert rc == 1, (said.out, said.err)
    assert " ".join(said.err.split()) == (
        f"error: {out} holds an export of another log: its checkpoint of 300 entries has"
        " another root hash than this database's log at 300 entries (another log's, or"
        " this one's before it was rebuilt or forked), so its tiles are not this log's;"
        " export into an empty folder, or give the database of the log exported there"
    ), said.err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    state = str(tmp_path / "s.json")
    key_a = signers["a"].verifier_key()
    assert _audit("--state", state, "--tiles", str(out), "--log-key", key_a) == 0


def test_an_entry_too_large_for_a_bundle_stops_the_export_naming_its_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log written before the writer refused entries over 65,535 bytes (the 16-bit
    length prefix of a C2SP tlog-tiles entry bundle) may hold one: its export stops with
    a clear error naming the entry's index and size, exit 1, and writes no checkpoint and
    no bundle holding it, so the folder never shows a tree it cannot serve; what was
    written before it stays valid, and the tiles of the entries before are kept. (Before:
    "a log entry of 70000 bytes does not fit an entry bundle (at most 65535)", no index,
    no way to find the entry among millions.) New entries can never be that large: the
    writer refuses them (tests/test_tlog_hostile.py)."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    store = open_store(tmp_path / "a.db")
    _fill(store, signer, 300, seed=1)
    _append(store, signer, [b"old entry " + b"x" * 70_000, b"after it"])
    store.close()
    out = tmp_path / "tiles"
    capsys.readouterr()
    rc = prov_main(["log", "export-tiles", str(out), "--db", str(tmp_path / "a.db")])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 1, err
    assert "entry 300 of the log is 70,010 bytes" in err and "65,535" in err, err
    assert "Traceback" not in err
    assert not (out / tiles.CHECKPOINT_PATH).exists()
    assert (out / "tile" / "entries" / "000").exists()  # entries 0..255: written and valid
    assert not list((out / "tile" / "entries").glob("001*"))  # none holding entry 300


@pytest.mark.parametrize("first_export", [True, False])
def test_files_a_crash_left_unflushed_are_written_again_by_the_next_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], first_export: bool
) -> None:
    """An export renames each tile and bundle into place unflushed and flushes them all
    (os.sync) only before it writes the checkpoint: a power cut in between can leave a new
    file's name with no bytes (ext4's delayed allocation). The next export kept any file
    already there, so the folder stayed broken for good: `prov log audit --tiles` read
    "LOG INTEGRITY FAILURE: tile/0/001 is 0 bytes ... edited or truncated" of an honest
    log. Now a file not covered by the checkpoint in the folder (none: every file) is
    written again; those it covers were flushed before it and are kept."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    vkey = signer.verifier_key()
    store = open_store(":memory:")
    _fill(store, signer, 300, seed=1)
    out = tmp_path / "tiles"
    if not first_export:
        export_tiles(store, out)
        _fill(store, signer, 300, seed=2)
    # the crash: the new files' names are there, empty, and no new checkpoint
    unflushed = ["tile/0/001", "tile/entries/001", "tile/1/000.p/2"]
    if first_export:
        unflushed = ["tile/0/000", "tile/entries/000", "tile/0/001.p/44"]
    for name in unflushed:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"")
    kept = out / "tile/0/000"
    before = None if first_export else kept.stat().st_mtime_ns
    result = export_tiles(store, out)
    assert result.size == 600 - 300 * first_export
    for name in unflushed:
        assert (out / name).stat().st_size > 0, name
    if before is not None:  # covered by the checkpoint there: flushed, not written again
        assert kept.stat().st_mtime_ns == before
    assert _audit("--state", str(tmp_path / "s.json"), "--tiles", str(out), "--log-key", vkey) == 0
    assert "LOG INTEGRITY FAILURE" not in capsys.readouterr().err
    store.close()


def _gzipped(body: bytes) -> bytes:
    """An HTTP answer of ``body`` (already gzipped) with its Content-Length."""
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body


def test_a_tile_server_answering_broken_http_is_a_transport_failure_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a broken or hostile server at the tiles URL answers (no HTTP at all, a
    header line over http.client's limit, a chunked body with a bad chunk size, a body
    cut short of its Content-Length) is a TransportError in words, never a traceback;
    and a body cut short is no LOG INTEGRITY FAILURE (exit 3): a flaky network is not a
    forked log, so `prov log audit` exits 1. A refused connection says so without
    urllib's '<urlopen error [Errno 111] ...>'."""
    import socket
    import threading

    from provenance.core.errors import TransportError

    body = b"media-provenance.local/log\n0\n" + b"A" * 43 + b"=\n"
    # hash-tile bytes (307,200 leaf hashes, 9.8 MB) in blocks of 32 KiB
    tile = b"".join(merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(300 * 1024))
    bgzf_blocks = [tile[i : i + 32768] for i in range(0, len(tile), 32768)]
    assert len(bgzf_blocks) == 300
    answers = {
        "ssh": b"SSH-2.0-OpenSSH_9.2\r\n",
        "longline": b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",
        "badchunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc",
        "short": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body) + 100, body),
        # gzip without a Content-Length, the connection closed before the stream's end
        "gzipshort": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nConnection: close\r\n\r\n"
        + gzip.compress(body)[:-12],
        # a gzip stream of two members (RFC 1952 2.2: a series of members), and one
        # followed by bytes that are no member
        "gzipmembers": _gzipped(gzip.compress(body[:10]) + gzip.compress(body[10:])),
        "gzipjunk": _gzipped(gzip.compress(body) + b"junk"),
        # bgzip's layout: one member per block of the file (64 KiB at most), 300 of them;
        # refused as more members than any server sends, before
        "bgzf": _gzipped(b"".join(gzip.compress(b) for b in bgzf_blocks)),
        # a redirect to itself: urllib's own words were three lines ("HTTP 302 The HTTP
        # server returned a redirect error that would lead to an infinite loop.\nThe
        # last 30x error message was:\nFound")
        "loop": b"HTTP/1.1 302 Found\r\nLocation: /loop/checkpoint\r\nContent-Length: 0\r\n\r\n",
    }
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                head = conn.recv(65536).split(b" ", 2)[1].decode()
                conn.sendall(answers[head.strip("/").split("/")[0]])

    threading.Thread(target=serve, daemon=True).start()
    try:
        expected = {
            "ssh": "answered something that is not HTTP",
            "longline": "sent an answer that is not valid HTTP",
            "badchunk": "sent an answer that is not valid HTTP",
            "short": f"ended after {len(body)} of its {len(body) + 100} bytes",
            "gzipshort": "its gzip stream ended before its end",
            "gzipjunk": "its gzip encoding is damaged",
            "loop": "it redirects in a loop, or more than 10 times",
        }
        for mode, words in expected.items():
            with pytest.raises(TransportError) as caught:
                fetcher(f"http://127.0.0.1:{port}/{mode}")("checkpoint")
            assert words in str(caught.value), (mode, str(caught.value))
            assert "\n" not in str(caught.value), (mode, str(caught.value))
        # every member read: before, the first only, and a tile sent so was a LOG
        # INTEGRITY FAILURE (exit 3) of an intact log
        assert fetcher(f"http://127.0.0.1:{port}/gzipmembers")("checkpoint") == body
        # (a full bundle's path: a checkpoint is read to 1 MiB at most, a signed note's
        # bound, and a hash tile's to 8,192 bytes, its own; tile/0/000 before grow56)
        assert fetcher(f"http://127.0.0.1:{port}/bgzf")("tile/entries/000") == tile
        state = str(tmp_path / "state.json")
        vkey = LogSigner(Ed25519PrivateKey.generate(), ORIGIN).verifier_key()
        capsys.readouterr()
        base = f"http://127.0.0.1:{port}/short/"
        assert _audit("--state", state, "--tiles", base, "--log-key", vkey) == 1
        err = capsys.readouterr().err
        assert "LOG INTEGRITY FAILURE" not in err and "Traceback" not in err, err
    finally:
        listener.close()
    with socket.socket() as bound:  # a port bound but not listening: connection refused
        bound.bind(("127.0.0.1", 0))
        with pytest.raises(TransportError) as caught:
            fetcher(f"http://127.0.0.1:{bound.getsockname()[1]}/")("checkpoint")
    assert str(caught.value).endswith("checkpoint: connection refused"), str(caught.value)
    assert "urlopen" not in str(caught.value) and "Errno" not in str(caught.value)


def test_a_tiles_folder_file_that_is_a_fifo_or_device_is_refused_unread(tmp_path: Path) -> None:
    """A tiled log's folder whose `checkpoint` is a FIFO (a mirror synced with special
    files, a hostile share) held `prov log audit --tiles DIR` forever in its open(); one
    that links to /dev/zero read 16 MiB of zeros and was a LOG INTEGRITY FAILURE. Both
    are refused unread, naming what the file is (ConfigError: exit 1)."""
    import os
    import threading

    from provenance.core.errors import ConfigError

    os.mkfifo(tmp_path / "checkpoint")
    (tmp_path / "tile").mkdir()
    (tmp_path / "tile" / "0").symlink_to("/dev/zero")
    outcome: list[BaseException | bytes] = []

    def fetch(path: str) -> None:
        try:
            outcome.append(fetcher(str(tmp_path))(path))
        except BaseException as e:  # noqa: BLE001 (handed to the test's thread)
            outcome.append(e)

    reader = threading.Thread(target=fetch, args=("checkpoint",), daemon=True)
    reader.start()
    reader.join(20)
    if reader.is_alive():  # blocked in open(): a writer lets it go, then the test fails
        with open(tmp_path / "checkpoint", "wb"):
            pass
        reader.join(20)
    assert isinstance(outcome[0], ConfigError), outcome
    assert "is a FIFO" in str(outcome[0]) and "not a regular file" in str(outcome[0])
    with pytest.raises(ConfigError, match="is a device, not a regular file"):
        fetcher(str(tmp_path))("tile/0")


def test_an_export_into_a_folder_of_special_files_refuses_them_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov log export-tiles DIR` reads the folder's `checkpoint` (the size exported
    before) and, under it, the level-0 tiles it already wrote. A `checkpoint` that is a
    FIFO held the export for good in its open(); one linking to /dev/zero was read
    without end (a MemoryError and a traceback); a tile that is a FIFO blocked the same
    way. Each is now refused unread, naming what the file is: exit 1."""
    import os
    import threading

    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    store = open_store(tmp_path / "log.db")
    _fill(store, signer, 300, seed=1)
    store.close()
    db = str(tmp_path / "log.db")

    def export(folder: Path, fifo: Path | None = None) -> int:
        codes: list[int] = []
        worker = threading.Thread(
            target=lambda: codes.append(
                prov_main(["log", "export-tiles", str(folder), "--db", db])
            ),
            daemon=True,
        )
        worker.start()
        worker.join(30)
        if worker.is_alive() and fifo is not None:  # blocked in open(): let it go, then fail
            with open(fifo, "wb"):
                pass
            worker.join(30)
        assert codes, f"the export into {folder} was still running after 30 s"
        return codes[0]

    fifo_checkpoint = tmp_path / "fifo"
    fifo_checkpoint.mkdir()
    os.mkfifo(fifo_checkpoint / "checkpoint")
    assert export(fifo_checkpoint, fifo_checkpoint / "checkpoint") == 1
    err = capsys.readouterr().err
    assert (
        "checkpoint is a FIFO (named pipe), not a regular file" in err and "Traceback" not in err
    ), err

    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / "checkpoint").symlink_to("/dev/zero")
    assert export(zero) == 1
    err = capsys.readouterr().err
    assert "checkpoint is a device, not a regular file" in err and "Traceback" not in err, err

    fifo_tile = tmp_path / "tile"
    assert export(fifo_tile) == 0  # a whole export, then its first tile made a FIFO
    (fifo_tile / "tile/0/000").unlink()  # and its bundle lost: the tile is read to write it
    (fifo_tile / "tile/entries/000").unlink()
    os.mkfifo(fifo_tile / "tile/0/000")
    assert export(fifo_tile, fifo_tile / "tile/0/000") == 1
    err = capsys.readouterr().err
    assert "000 is a FIFO (named pipe), not a regular file" in err and "Traceback" not in err, err


def test_served_tiles_that_are_no_regular_file_are_500_and_block_nothing(tmp_path: Path) -> None:
    """`prov web --tiles-dir`: a `checkpoint` that is a FIFO was read on the event loop,
    which blocked in open() and left every request of the web unanswered; a tile linking
    to /dev/zero was read without end by a file worker. Each is now opened without
    blocking, and the web goes on: each is answered 500 as a damaged file of the server's
    (the checkpoint since h-tidy57, the tile since h-tilefile57; a 404 before, as a file
    not there, which a client takes for a tile the log lacks: see
    test_a_served_tile_file_that_is_no_regular_file_is_a_500_and_a_missing_one_a_404)."""
    import os

    os.mkfifo(tmp_path / "checkpoint")
    (tmp_path / "tile" / "0").mkdir(parents=True)
    (tmp_path / "tile" / "0" / "000").symlink_to("/dev/zero")
    web = start_web("127.0.0.1:1", "--tiles-dir", str(tmp_path))
    try:
        for path, code in (("tlog/checkpoint", 500), ("tlog/tile/0/000", 500)):
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(f"{web.address}/{path}", timeout=10)
            assert e.value.code == code, (path, e.value.code)
        with urllib.request.urlopen(f"{web.address}/static/favicon.svg", timeout=10) as r:
            assert r.status == 200
    finally:
        with open(os.open(tmp_path / "checkpoint", os.O_RDWR | os.O_NONBLOCK), "wb"):
            pass  # a reader still blocked on the FIFO lets go
        web.stop()


def test_the_served_checkpoint_is_read_off_the_event_loop(tmp_path: Path) -> None:
    """`prov web --tiles-dir`: the `checkpoint` file (up to a signed note's 1 MiB and a
    byte) was opened and read on the event loop, where a slow disk held every other
    request of the web (pages, API, tiles) meanwhile; it is read on a worker thread, as
    tiles are. A real export, a real `prov web`, its opens of files named `checkpoint`
    said by an audit hook (tests/opens_watched.py)."""
    _, out = _exported_261(tmp_path)
    body = (out / "checkpoint").read_bytes()
    web = start_web(
        "127.0.0.1:1",
        "--tiles-dir",
        str(out),
        module=("tests.opens_watched", "checkpoint"),
    )
    try:
        for _ in range(2):
            with urllib.request.urlopen(f"{web.address}/tlog/checkpoint", timeout=60) as r:
                assert r.status == 200 and r.read() == body
    finally:
        web.stop()
    log = web.stderr()
    opened = [line for line in log.splitlines() if line.startswith("opened checkpoint")]
    assert len(opened) >= 2 and set(opened) == {"opened checkpoint off the event loop"}, log


def test_a_served_checkpoint_over_a_notes_bound_is_not_read_past_it(tmp_path: Path) -> None:
    """`prov web --tiles-dir`: the `checkpoint` was read whole, however large, on the
    event loop and outside the per-client tile shares, for every request (a 256 MiB file
    there, four requests at once: the web's peak memory 100 MB -> 1.15 GB, each sent all
    of it), though no reader takes a checkpoint over a signed note's 1 MiB. Now it is read
    no further than that and a byte, and one over it is answered 500 in words, as a
    damaged checkpoint on the server (until h-tidy57, 404, as a checkpoint not there)."""
    from provenance.log.checkpoint import MAX_NOTE_BYTES

    with open(tmp_path / "checkpoint", "wb") as f:
        f.truncate(12 << 20)
    web = start_web("127.0.0.1:1", "--tiles-dir", str(tmp_path))
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{web.address}/tlog/checkpoint", timeout=30)
        said = e.value.read().decode()
        assert e.value.code == 500, (e.value.code, len(said))
        assert f"more than the {MAX_NOTE_BYTES:,} bytes" in said, said[:200]
        assert len(said) < 1000
    finally:
        web.stop()


def _peak_rss(pid: int) -> int:
    """The peak resident memory (VmHWM) of the process ``pid``, in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def _exported_261(tmp_path: Path) -> tuple[LogSigner, Path]:
    """A log of 261 entries in ``tmp_path/log.db``, exported to ``tmp_path/tiles`` (a full
    tile and a partial of 5 at each level 0 and bundle): its signer and the folder."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    store = open_store(tmp_path / "log.db")
    _fill(store, signer, 261, seed=7)
    out = tmp_path / "tiles"
    export_tiles(store, out)
    store.close()
    return signer, out


def test_a_served_tile_of_a_size_wrong_for_its_path_is_a_500_read_no_further(
    tmp_path: Path,
) -> None:
    """`prov web --tiles-dir` served a tile file of any size as it was: a hash tile one
    hash too long (8,224 bytes at ``tile/0/000``), a partial ``.p/5`` of 3 hashes, an entry
    bundle too short for its 5 entries, and a 512 MiB file at a full bundle's path (read
    whole into the web's memory, then sent); a narrower partial tile cut from a damaged
    one was a 404, as a tile the log does not have. Each is now a 500 (the server's
    file is damaged: no tile to cache, and not a tile the log lacks, which a client
    reports as the log's failure), in words, without reading the file past its bound
    (the web's peak memory grew by 526 MB before), logged on the server in one line a
    minute; intact tiles are still served. A real export, a
    real `prov web`."""
    signer, out = _exported_261(tmp_path)
    full = (out / "tile/0/000").read_bytes()
    (out / "tile/0/000").write_bytes(full + full[:32])  # one hash too many
    five = out / "tile/0/001.p/5"
    five.write_bytes(five.read_bytes()[:96])  # 3 hashes for a tile of 5
    (out / "tile/entries/001.p/5").write_bytes(b"\x00" * 9)  # 5 entries take 10 at least
    with open(out / "tile/entries/000", "r+b") as f:
        f.truncate(512 << 20)  # sparse: no disk taken
    intact = (out / "tile/1/000.p/1").read_bytes()
    web = start_web("127.0.0.1:1", "--tiles-dir", str(out))
    try:
        before = _peak_rss(web.proc.pid)
        damaged = {
            "tile/0/000": "8,224 bytes",
            "tile/0/001.p/5": "96 bytes",
            "tile/0/001.p/3": "96 bytes",  # cut from the damaged .p/5
            "tile/entries/001.p/5": "9 bytes",
            "tile/entries/000": "536,870,912 bytes",
        }
        answers = {}
        for path in [*damaged, "tile/0/000"]:  # the last again: not logged again
            request = urllib.request.Request(
                f"{web.address}/tlog/{path}", headers={"Accept-Encoding": "gzip"}
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as r:
                    answers[path] = (r.status, r.read(4096).decode(errors="replace"), "")
            except urllib.error.HTTPError as e:
                said = e.read(4096).decode()
                answers[path] = (e.code, said, e.headers["Cache-Control"])
        assert {path: a[0] for path, a in answers.items()} == dict.fromkeys(damaged, 500)
        for path, (_, said, cache) in answers.items():
            assert f"/tlog/{path} " in said and "damaged" in said, said
            assert damaged[path] in said and cache == "no-store", (said, cache)
        grown = _peak_rss(web.proc.pid) - before
        assert grown < 128 << 20, f"the web's peak memory grew by {grown:,} bytes"
        with urllib.request.urlopen(f"{web.address}/tlog/tile/1/000.p/1", timeout=30) as r:
            assert r.status == 200 and r.read() == intact
        with urllib.request.urlopen(f"{web.address}/tlog/checkpoint", timeout=30) as r:
            assert r.status == 200
    finally:
        web.stop()
    log = web.stderr()
    lines = [line for line in log.splitlines() if "answered 500 to GET /tlog/" in line]
    # one line a minute at most: not one per request (6 of them, in well under a minute
    # unless the machine stalls, when a second line may come)
    assert 1 <= len(lines) < len(damaged) and "Traceback" not in log, log[-3000:]
    assert f"{out / 'tile/0/000'} is 8,224 bytes" in lines[0], lines
    assert "export-tiles" in lines[0], lines


def test_a_partial_tiles_folder_that_cannot_be_listed_is_a_500_not_a_missing_tile(
    tmp_path: Path,
) -> None:
    """`prov web --tiles-dir`: a narrower partial tile than the folder holds is cut from a
    wider one of ``<N>.p``, found by listing that folder. A ``<N>.p`` that is there but
    cannot be listed (here: mode 0o300, the web run without root's power to read past
    mode bits) was taken for one holding no wider tile, and the full tile not there yet
    made it a 404, which a client takes for a tile the log lacks. It is the server's
    fault, a 500 in words as for the other damaged files; a tile there in that folder is
    still served. A real export, a real `prov web`."""
    _, out = _exported_261(tmp_path)
    folder = out / "tile/0/001.p"
    five = (folder / "5").read_bytes()
    folder.chmod(0o300)  # entered, not listed
    web = start_web("127.0.0.1:1", "--tiles-dir", str(out), wrapper=WITHOUT_DAC_OVERRIDE)
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{web.address}/tlog/tile/0/001.p/3", timeout=60)
        said = e.value.read(4096).decode()
        assert e.value.code == 500, (e.value.code, said)
        assert said.startswith("/tlog/tile/0/001.p/3 is damaged on this server:"), said
        assert "tile/0/001.p cannot be listed (Permission denied)" in said, said
        assert e.value.headers["Cache-Control"] == "no-store"
        with urllib.request.urlopen(f"{web.address}/tlog/tile/0/001.p/5", timeout=60) as r:
            assert r.status == 200 and r.read() == five
    finally:
        folder.chmod(0o755)
        web.stop()
    log = web.stderr()
    lines = [line for line in log.splitlines() if "answered 500 to GET /tlog/" in line]
    assert len(lines) == 1 and "Traceback" not in log, log[-3000:]
    assert "tile/0/001.p cannot be listed (Permission denied)" in lines[0], lines


def test_an_unlistable_partial_folder_beside_its_full_tile_serves_the_cut_full_one(
    tmp_path: Path,
) -> None:
    """`prov web --tiles-dir`: a partial tile the folder lacks is cut from the narrowest
    wider one of ``<N>.p``, else from the full tile ``<N>``, whose first hashes it is. A
    ``<N>.p`` that cannot be listed beside a full ``<N>`` was answered 500 "damaged"
    (h-tiles58), though the full tile there gives the right answer, as it did before:
    only with no full tile there is the unlistable folder the server's fault (the test
    above). A real export grown to two full tiles, a real `prov web`."""
    signer, out = _exported_261(tmp_path)
    store = open_store(tmp_path / "log.db")
    _fill(store, signer, 512 - 261, seed=8)
    export_tiles(store, out)
    store.close()
    full = (out / "tile/0/001").read_bytes()
    folder = out / "tile/0/001.p"
    folder.mkdir(exist_ok=True)
    (folder / "5").write_bytes(full[: 5 * 32])  # a partial left there, as a past export's
    folder.chmod(0o300)  # entered, not listed
    web = start_web("127.0.0.1:1", "--tiles-dir", str(out), wrapper=WITHOUT_DAC_OVERRIDE)
    try:
        try:
            with urllib.request.urlopen(f"{web.address}/tlog/tile/0/001.p/3", timeout=60) as r:
                got = (r.status, r.read())
        except urllib.error.HTTPError as e:
            got = (e.code, e.read(4096))
        assert got == (200, full[: 3 * 32]), got
    finally:
        folder.chmod(0o755)
        web.stop()
    assert "Traceback" not in web.stderr(), web.stderr()[-3000:]


def _raw_get(address: str, path: str) -> socket.socket:
    """A connection to ``address`` (http://host:port) that sent GET ``path``, unread, its
    receive buffer small (so an answer of megabytes stays in flight on the server)."""
    host, port = address.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.settimeout(60)
    sock.connect((host, int(port)))
    head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    sock.sendall(head.encode())
    return sock


def _answer(sock: socket.socket) -> tuple[int, bytes]:
    """The status and body of the answer on ``sock`` (sent with Connection: close)."""
    data = bytearray()
    while chunk := sock.recv(1 << 16):
        data += chunk
    sock.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_a_tile_file_that_grows_between_its_check_and_its_read_is_a_500(
    tmp_path: Path,
) -> None:
    """`prov web --tiles-dir` checked a tile file's size, took the client's share of
    bytes in flight for that size, then read the file up to its path's bound and a byte:
    a bundle that grew within its bound meanwhile (an export writing over it, a file
    replaced) was served at its new size, counted at its old one in the share (up to
    16 MiB more in flight than counted). Now the read takes the size checked and a byte,
    and a file whose bytes read differ from it is a 500 in words ("changed while it was
    read", no-store), as a damaged tile. The gap is made wide without hooks: the client
    holds its share with a 12 MiB bundle it leaves unread, so its request for the small
    bundle is checked, then waits for the share (`TILE_WAIT_S`); the file grows by
    100,000 bytes (within its bound of 327,685) while it waits, then the first bundle is
    hung up (both bundles are well formed: the web walks a bundle's length prefixes
    since h-tilefile57). The growth may come before the check on a loaded machine (then 200 at the
    new size, which is right), so it is tried until a 500 comes. Before: 200 every time
    (120 s of tries), 100,603 bytes sent for a share of 603; a real `prov web`, real sockets."""
    _, out = _exported_261(tmp_path)
    # a full bundle's size may be 512 to 16,777,472 bytes: 256 entries of 49,150 bytes
    (out / "tile/entries/000").write_bytes(tiles.encode_bundle([b"\xab" * 49_150] * 256))
    small = out / "tile/entries/001.p/5"
    original = small.read_bytes()
    size = len(original)
    # a bundle still (the web walks its length prefixes): its last two entries grown
    five = tiles.decode_bundle(original, tiles.Tile(0, 1, 5))
    grown = tiles.encode_bundle([*five[:3], *(e + b"\0" * 50_000 for e in five[3:])])
    assert len(grown) == size + 100_000
    web = start_web("127.0.0.1:1", "--tiles-dir", str(out))
    answers = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with open(small, "r+b") as f:  # in place: the same file, checked then read
                f.write(original)
                f.truncate(size)
            blocker = _raw_get(web.address, "/tlog/tile/entries/000")
            assert blocker.recv(1), "no answer began for the 12 MiB bundle"
            asked = _raw_get(web.address, "/tlog/tile/entries/001.p/5")
            # a request on another connection, answered once the event loop has taken
            # the one before (most often: its size then checked, and waiting for the share)
            with urllib.request.urlopen(f"{web.address}/tlog/checkpoint", timeout=60) as r:
                r.read()
            with open(small, "r+b") as f:
                f.write(grown)
            blocker.close()
            status, body = _answer(asked)
            answers.append((status, len(body)))
            if status == 500:
                break
    finally:
        web.stop()
    status, said = answers[-1][0], body.decode(errors="replace")
    assert status == 500, answers  # was 200 with 100,603 bytes every time
    assert all(a == (200, size + 100_000) for a in answers[:-1]), answers
    assert said.startswith("/tlog/tile/entries/001.p/5 is damaged on this server: its file"), said
    assert f"changed while it was read ({size:,} bytes, then more than {size:,} bytes)" in said
    log = web.stderr()
    assert "changed while it was read" in log and "Traceback" not in log, log[-3000:]


def test_a_tiles_server_redirecting_off_http_is_refused_naming_the_target() -> None:
    """A tiles URL answering with a redirect to ``ftp://`` or ``file://`` (a hostile or
    misconfigured server steering the auditor at another scheme) is refused in words
    that name the target, never followed; a redirect to another http(s) URL (as an
    http -> https move is) is still followed."""
    import socket
    import threading
    from http.server import ThreadingHTTPServer

    from provenance.core.errors import TransportError

    body = b"media-provenance.local/log\n0\n" + b"A" * 43 + b"=\n"
    closed = socket.socket()  # bound, never listening: an https:// target that refuses
    closed.bind(("127.0.0.1", 0))
    targets = {
        "/tls/checkpoint": f"HTTPS://127.0.0.1:{closed.getsockname()[1]}/checkpoint",
        "/ftp/checkpoint": "ftp://127.0.0.1:9/checkpoint",
        "/file/checkpoint": "file:///etc/passwd",
        "/data/checkpoint": "data:text/plain,hello",
        "/moved/checkpoint": "/real/checkpoint",
    }

    class Redirect(_Quiet):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path in targets:
                self.send_response(302)
                self.send_header("Location", targets[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert fetcher(f"{url}/moved")("checkpoint") == body
        with pytest.raises(TransportError) as caught:  # followed to https: its port refuses
            fetcher(f"{url}/tls")("checkpoint")
        said = str(caught.value)  # the failure named where the redirect led, as followed
        followed = targets["/tls/checkpoint"].replace("HTTPS://", "https://")
        assert said.endswith(f"connection refused (at {followed}, where it was redirected to)"), (
            said
        )
        for mode in ("ftp", "file", "data"):
            with pytest.raises(TransportError) as caught:
                fetcher(f"{url}/{mode}")("checkpoint")
            said = str(caught.value)
            target = targets[f"/{mode}/checkpoint"]
            assert f"redirects to {target}" in said, said
            assert "only http:// and https://" in said, said
            assert "HTTP 30" not in said and "urlopen" not in said, said
    finally:
        closed.close()
        server.shutdown()
        server.server_close()


def test_a_tiles_export_on_a_full_disk_names_the_file_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An export whose disk fills (here: a file size limit, RLIMIT_FSIZE, with SIGXFSZ
    ignored, so a write past it fails as a full disk's does) raises an OSError naming the
    tile or bundle it was writing, not the temporary file or none, which the CLI's one
    OSError line (`os_failure`) says with what to do. The device's `atomic_write`
    (sidecars of `prov sign`, the upload queue, device state) names its target alike.
    Before, both named no file: the line said only "File too large"."""
    import resource
    import signal

    from clients.device import atomic_write
    from provenance.core.files import os_failure

    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    store = open_store(tmp_path / "log.db")
    _fill(store, signer, 300, seed=3)
    (tmp_path / "tiles").mkdir()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(OSError) as exported:
            export_tiles(store, tmp_path / "tiles")
        with pytest.raises(OSError) as sidecar:
            atomic_write(tmp_path / "photo.jpg.prov", b"x" * 10_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    named = str(exported.value.filename)
    assert named.startswith(str(tmp_path / "tiles") + "/tile/"), named
    assert "/.tmp-" not in named, named
    said = os_failure(exported.value)
    assert said.startswith(f"File too large: {named}; "), said
    assert "free space" in said, said
    assert sidecar.value.filename == str(tmp_path / "photo.jpg.prov"), sidecar.value
    assert not list(tmp_path.glob(".prov-tmp-*"))


@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated (SIGTERM)")],
)
def test_a_stopped_export_follow_says_so_and_leaves_whole_files(
    tmp_path: Path, sig: str, code: int, word: str
) -> None:
    """`prov log export-tiles --follow` is stopped by Ctrl-C or by SIGTERM (``kill``,
    systemd's stop): each says so on stderr (Ctrl-C "interrupted", exit 130; SIGTERM
    "terminated (SIGTERM)", exit 143, as `prov scan` words it) and the folder holds whole
    files only, its checkpoint last. Before, SIGTERM ended the process silently (143)."""
    import signal

    from tests.conftest import cli_process
    from tests.drain import next_line
    from tests.stopping import owned, stop_by

    store = open_store(tmp_path / "a.db")
    _fill(store, LogSigner(Ed25519PrivateKey.generate(), ORIGIN), 300, seed=3)
    store.close()
    out = tmp_path / "tiles"
    export = ["log", "export-tiles", str(out), "--db", str(tmp_path / "a.db")]
    with owned(cli_process([*export, "--follow", "--interval", "0.2"])) as proc:
        first = next_line(proc, timeout=90)
        assert first is not None and first.startswith("exported 300 entries"), first
        rc, _, err = stop_by(proc, getattr(signal, sig), timeout=60)
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    assert rc == code, err
    assert lines and lines[-1].startswith(word), err
    assert len([line for line in lines if line.startswith(("interrupted", "terminated"))]) == 1
    assert "Traceback" not in err, err
    assert (out / tiles.CHECKPOINT_PATH).is_file()
    assert not [p for p in out.rglob(".tmp-*")], "a temporary file was left"


def test_an_export_with_nothing_new_says_the_folder_is_up_to_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An export (or a --follow poll) that finds the folder already at the store's
    checkpoint says it is up to date, at which size; before, it printed "exported 300
    entries to DIR: 0 tiles and 0 entry bundles written". An export that wrote files
    keeps its count line."""
    store = open_store(tmp_path / "a.db")
    _fill(store, LogSigner(Ed25519PrivateKey.generate(), ORIGIN), 300, seed=4)
    store.close()
    out = tmp_path / "tiles"
    export = ["log", "export-tiles", str(out), "--db", str(tmp_path / "a.db")]
    capsys.readouterr()
    assert prov_main(export) == 0
    first = " ".join(capsys.readouterr().out.split())
    assert f"exported 300 entries to {out}: 3 tiles and 2 entry bundles written" in first, first
    assert prov_main([*export, "--follow", "--interval", "0.1", "--max-polls", "2"]) == 0
    again = " ".join(capsys.readouterr().out.split())
    assert again == f"{out} is up to date: 300 entries, nothing to write", again


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ("gzip", True),
        ("GZIP, deflate", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000, identity", False),
        ("*;q=0, identity", False),
        ("*, gzip;q=0", False),
        ("identity", False),
        ("nogzip", False),
        ("br, gzipx", False),
    ],
)
def test_an_entry_bundle_is_gzipped_only_for_a_client_accepting_gzip(
    tmp_path: Path, accept: str, gzipped: bool
) -> None:
    """RFC 9110 section 12.5.3: ``gzip;q=0`` says gzip is not acceptable, and a coding
    is named by its whole token. Before, any Accept-Encoding holding the letters "gzip"
    got a gzipped bundle (``gzip;q=0``, ``nogzip``), one a client that refused gzip
    could not read (review att47). A real `prov web --tiles-dir` of a real export."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    store = open_store(tmp_path / "log.db")
    _fill(store, signer, 6, seed=5)
    export_tiles(store, tmp_path / "tiles")
    store.close()
    data = (tmp_path / "tiles/tile/entries/000.p/6").read_bytes()
    web = start_web("127.0.0.1:1", "--tiles-dir", str(tmp_path / "tiles"))
    try:
        request = urllib.request.Request(
            f"{web.address}/tlog/tile/entries/000.p/6", headers={"Accept-Encoding": accept}
        )
        with urllib.request.urlopen(request) as r:
            body = r.read()
            assert r.headers.get("Content-Encoding") == ("gzip" if gzipped else None), accept
            assert r.headers.get("Vary") == "Accept-Encoding"
            assert (gzip.decompress(body) if gzipped else body) == data
    finally:
        web.stop()


def test_a_local_tile_file_over_its_paths_bound_is_read_no_further_than_it(
    tmp_path: Path,
) -> None:
    """`prov log audit --tiles DIR` read a hash tile file up to any tiled-log file's
    bound, a full entry bundle's 16,777,472 bytes and one, before refusing it (a 16 MiB
    file at ``tile/0/000``: 16 MiB allocated, for a tile of 8,192 bytes); a partial
    bundle likewise. Now no further than its own path's bound and a byte
    (`tiles.file_bounds`), refused as a tile edited (exit 3, as before), saying so.
    Measured in a child process (`tests.memory`: tracemalloc counts every thread)."""
    (tmp_path / "tile/0").mkdir(parents=True)
    (tmp_path / "tile/entries/000.p").mkdir(parents=True)
    (tmp_path / "tile/0/000").write_bytes(b"\x01" * (16 << 20))
    (tmp_path / "tile/entries/000.p/2").write_bytes(b"\x00\x01" * (8 << 20))
    code = """
from provenance.log.tiledir import fetcher
fetch = fetcher(".")
found = []
for path in sys.argv[1:]:
    e, _, peak = traced(lambda: fetch(path))
    found.append((path, type(e).__name__, str(e), peak))
tell(*found)
"""
    paths = ["tile/0/000", "tile/entries/000.p/2"]
    said = {}
    for path, kind, message, peak in traced_in_child(code, paths, tmp_path)[0]:
        assert kind == "LogIntegrityError", message
        assert peak < 1 << 20, f"{peak:,} bytes allocated refusing {path}"
        said[path] = message
    assert said == {
        "tile/0/000": "tile/0/000 is more than 8,192 bytes, and a tile of 256 hashes is"
        " 8,192 bytes: the tile was edited or replaced; it was read no further",
        "tile/entries/000.p/2": "tile/entries/000.p/2 is more than 131,074 bytes, and an"
        " entry bundle of 2 entries is 4 to 131,074 bytes: the bundle was edited or"
        " replaced; it was read no further",
    }


def test_an_audit_of_a_web_serving_a_damaged_tile_says_the_server_failed_try_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov log audit --tiles URL` against a real `prov web --tiles-dir` whose tile file
    is damaged (one hash too many: the web answers 500, in words) said only
    "URL: HTTP 500 Internal Server Error": neither that the fault is the server's, to try
    again later, nor the server's words. Now both, exit 1 (not 3: no integrity alarm,
    as before), the server's line escaped and cut."""
    signer, out = _exported_261(tmp_path)
    full = (out / "tile/0/000").read_bytes()
    (out / "tile/0/000").write_bytes(full + full[:32])
    web = start_web("127.0.0.1:1", "--tiles-dir", str(out))
    try:
        rc = _audit(
            "--state", str(tmp_path / "s.json"), "--tiles", f"{web.address}/tlog",
            "--log-key", signer.verifier_key(),
        )  # fmt: skip
    finally:
        web.stop()
    err = capsys.readouterr().err
    assert rc == 1, err
    assert f"cannot fetch {web.address}/tlog/tile/0/000: the server failed" in err, err
    assert err.count("try again later") == 1 and "LOG INTEGRITY" not in err, err
    assert "damaged on this server: its file is 8,224 bytes" in err, err
    assert len(err) < 1500, err


def _get(url: str) -> tuple[int, str, str]:
    """GET ``url``: (its status, the start of its body as text, its Cache-Control)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, r.read(4096).decode(errors="replace"), r.headers["Cache-Control"]
    except urllib.error.HTTPError as e:
        return e.code, e.read(4096).decode(errors="replace"), e.headers["Cache-Control"]


def test_a_served_checkpoint_file_that_is_damaged_is_a_500_and_the_audit_says_try_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov web --tiles-dir`: a `checkpoint` file that is there but damaged (cut short,
    empty, over a signed note's 1 MiB, a FIFO, a folder, a link that loops) is the
    server's fault, as a damaged tile's file is: 500 in words, no-store, logged, "try
    again later". Before, it was a 404 (over 1 MiB, not a regular file), a 200 of the cut
    bytes (cut short, empty), or starlette's bare 500 with a traceback in the log (the
    looping link); and `prov log audit --tiles URL` then said "no tiled log at URL: ...
    Give the prefix under which ...", as if the URL were wrong. Now it says the server
    failed, with the server's words, to try again later (exit 1, as before). A
    checkpoint that is not there stays a 404; an intact one a 200."""
    import os

    signer, out = _exported_261(tmp_path)
    checkpoint = out / "checkpoint"
    intact = checkpoint.read_bytes()

    def cut(data: bytes) -> Callable[[], object]:
        return lambda: checkpoint.write_bytes(data)

    def sparse() -> None:
        with open(checkpoint, "wb") as f:
            f.truncate(12 << 20)

    damaged: dict[str, tuple[Callable[[], object], str]] = {
        "cut short": (cut(intact[: len(intact) // 2]), "is no signed note"),
        "signature cut": (cut(intact[:-10]), "is no signed note"),
        # a signed note's form, but its text no checkpoint (h-tilefile57: a 200 before,
        # and the audit's LOG INTEGRITY FAILURE, "does not verify", exit 3)
        "size no number": (
            cut(intact.replace(b"\n261\n", b"\n26x\n", 1)),
            "is no checkpoint (checkpoint size '26x' is not a decimal",
        ),
        "root no base64": (
            cut(b"\n".join([*intact.split(b"\n")[:2], b"!!!!", *intact.split(b"\n")[3:]])),
            "is no checkpoint (checkpoint root",
        ),
        "empty": (cut(b""), "is no signed note"),
        "over a note's bound": (sparse, "is more than the 1,048,576 bytes"),
        "a FIFO": (lambda: os.mkfifo(checkpoint), "is a FIFO (named pipe)"),
        "a folder": (checkpoint.mkdir, "is a folder"),
        "a looping link": (lambda: checkpoint.symlink_to(checkpoint), "cannot be read"),
    }
    web = start_web("127.0.0.1:1", "--tiles-dir", str(out))
    url = f"{web.address}/tlog/checkpoint"
    answers = {}
    audit = (1, "")
    try:
        assert _get(url)[0] == 200
        for name, (damage, _) in damaged.items():
            if checkpoint.is_dir() and not checkpoint.is_symlink():
                checkpoint.rmdir()
            else:
                checkpoint.unlink(missing_ok=True)
            damage()
            answers[name] = _get(url)
            if name == "cut short":  # what a client makes of it
                capsys.readouterr()
                rc = _audit(
                    "--state", str(tmp_path / "s.json"), "--tiles", f"{web.address}/tlog",
                    "--log-key", signer.verifier_key(),
                )  # fmt: skip
                audit = (rc, " ".join(capsys.readouterr().err.split()))
        checkpoint.unlink()
        missing = _get(url)
        checkpoint.write_bytes(intact)
        assert _get(url)[:2] == (200, intact.decode())
    finally:
        web.stop()
    assert {name: a[0] for name, a in answers.items()} == dict.fromkeys(damaged, 500), answers
    for name, (_status, said, cache) in answers.items():
        assert said.startswith("/tlog/checkpoint is damaged on this server: its file "), said
        assert damaged[name][1] in said and "try again later" in said, (name, said)
        assert cache == "no-store" and len(said) < 1000, (name, cache, said)
    assert missing[0] == 404 and "not been exported yet" in missing[1], missing
    rc, err = audit
    assert rc == 1, err
    assert err.startswith(
        f"error: cannot fetch {web.address}/tlog/checkpoint: the server failed to serve it"
        " (HTTP 500 Internal Server Error), its own fault, not the log's (the server says:"
        " /tlog/checkpoint is damaged on this server: its file"
    ), err
    assert err.count("try again later") == 1, err  # the server's words say it
    assert "no tiled log" not in err and "INTEGRITY" not in err, err
    log = web.stderr()
    assert "Traceback" not in log, log[-3000:]
    assert f"the checkpoint file {checkpoint} is no signed note" in log, log[-3000:]


def test_a_served_tile_file_that_is_no_regular_file_is_a_500_and_a_missing_one_a_404(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov web --tiles-dir`: a tile or entry bundle whose path is there in the folder but
    is no regular file (a FIFO, a folder, a link to /dev/zero, a link that loops), or a
    narrower partial tile cut from such a file, is the server's fault, as a checkpoint so
    damaged is (h-tidy57): 500 in words, no-store, logged, never opened, no traceback.
    Before: 404 for the FIFO, folder and /dev/zero (a client then reports the log as not
    serving the tile: with the partial tiles, a LOG INTEGRITY FAILURE), and starlette's
    bare 500 'Internal Server Error' with a traceback for the looping link. A tile not
    there, or a link to nothing, stays 404. `prov log audit --tiles URL` then says the
    server failed, saying "try again later" once (twice before: its words and the
    server's), exit 1. A real export, a real `prov web`, the real audit CLI."""
    import os

    signer, out = _exported_261(tmp_path)
    os.unlink(out / "tile/0/000")
    os.mkfifo(out / "tile/0/000")
    os.unlink(out / "tile/0/001.p/5")
    (out / "tile/0/001.p/5").symlink_to("/dev/zero")
    os.unlink(out / "tile/entries/000")
    (out / "tile/entries/000").symlink_to(out / "tile/entries/000")
    os.unlink(out / "tile/entries/001.p/5")
    (out / "tile/entries/001.p/5").mkdir()
    (out / "tile/1/000.p/2").symlink_to(out / "nowhere")  # a link to nothing: not there
    damaged = {
        "tile/0/000": "its file is a FIFO (named pipe), not a regular file",
        "tile/0/001.p/5": "its file is a device, not a regular file",
        "tile/0/001.p/3": "it is cut from tile/0/001.p/5, whose file is a device, not a regular file",
        "tile/entries/000": "its file cannot be read (Too many levels of symbolic links)",
        "tile/entries/001.p/5": "its file is a folder, not a regular file",
        "tile/entries/001.p/2": "it is cut from tile/entries/001.p/5, whose file is a folder, not a regular"
        " file",
    }
    missing = ["tile/0/002", "tile/1/000", "tile/1/000.p/2", "tile/2/000.p/1"]
    web = start_web("127.0.0.1:1", "--tiles-dir", str(out))
    try:
        answers = {path: _get(f"{web.address}/tlog/{path}") for path in [*damaged, *missing]}
        intact = _get(f"{web.address}/tlog/tile/1/000.p/1")
        capsys.readouterr()
        rc = _audit(
            "--state", str(tmp_path / "s.json"), "--tiles", f"{web.address}/tlog",
            "--log-key", signer.verifier_key(),
        )  # fmt: skip
        err = " ".join(capsys.readouterr().err.split())
    finally:
        web.stop()
    codes = {path: a[0] for path, a in answers.items()}
    assert codes == {**dict.fromkeys(damaged, 500), **dict.fromkeys(missing, 404)}, answers
    assert intact[0] == 200, intact
    for path, words in damaged.items():
        _, said, cache = answers[path]
        assert said == (
            f"/tlog/{path} is damaged on this server: {words}; the server's operator is"
            " told so in its log; try again later\n"
        ), said
        assert cache == "no-store", (path, cache)
    log = web.stderr()
    assert "Traceback" not in log, log[-3000:]
    lines = [line for line in log.splitlines() if "answered 500 to GET /tlog/tile/" in line]
    assert 1 <= len(lines) < len(damaged), log[-3000:]  # one line a minute at most
    assert f"the tile file {out / 'tile/0/000'} is a FIFO (named pipe)" in lines[0], lines
    assert rc == 1, err
    assert "is damaged on this server" in err and "INTEGRITY" not in err, err
    assert err.count("try again later") == 1, err


def test_a_served_entry_bundle_of_a_fitting_size_but_no_bundle_is_a_500(tmp_path: Path) -> None:
    """`prov web --tiles-dir` checked an entry bundle's file only by its size (2 to 65,537
    bytes an entry), so a bundle with a byte added or cut within those bounds (a write
    cut short, a byte appended) was served 200, damaged, to each client (cached for a
    year, immutable, if full); a client's audit then called the log's content edited.
    Its length prefixes are now walked before it is served (at most 256 of them): one
    that is not its entries is a 500 in words, as any damaged tile. Intact bundles and
    narrower ones cut from intact ones are still 200. A real export, a real `prov web`."""
    _, out = _exported_261(tmp_path)
    whole = out / "tile/entries/000"
    whole.write_bytes(whole.read_bytes()[:-1])  # its last entry one byte short
    five = out / "tile/entries/001.p/5"
    five.write_bytes(five.read_bytes() + b"\x00")  # a byte after its 5 entries
    intact = (out / "tile/0/000").read_bytes()
    web = start_web("127.0.0.1:1", "--tiles-dir", str(out))
    try:
        answers = {
            path: _get(f"{web.address}/tlog/{path}")
            for path in ("tile/entries/000", "tile/entries/001.p/5", "tile/0/000")
        }
    finally:
        web.stop()
    assert {p: a[0] for p, a in answers.items()} == {
        "tile/entries/000": 500,
        "tile/entries/001.p/5": 500,
        "tile/0/000": 200,
    }, answers
    assert answers["tile/entries/001.p/5"][1].startswith(
        "/tlog/tile/entries/001.p/5 is damaged on this server: its file is not 5"
        " length-prefixed entries, as an entry bundle of 5 entries is"
    ), answers
    assert "is not 256 length-prefixed entries" in answers["tile/entries/000"][1], answers
    assert len(intact) == 8192 and "Traceback" not in web.stderr()
