"""The second read of a file that `prov verify` makes to check the claim a server cites
(`clients.cited.check_cited`: the file's SHA-256 without its Content Credentials) is
made by position, never through a mapping, and a file that changed after it was sent is
said to have changed, never blamed on the server.

Before (cited53): the file was mapped (``mmap``), so a file cut short by another program
during that read killed `prov verify` with SIGBUS; and a file written to, cut or
replaced between the upload and that read was refused as "the server cited a claim of
other bytes" (SERVER EVIDENCE REFUSED, exit 3), though the server's answer was honest.

A real `prov serve`, a real `prov sign --c2pa` capture, and between them a real relay on
a real port that passes the upload to the server and, before it passes the server's
answer back, changes the file as a second writer would."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients.cli import main as prov_main
from clients.report import EXIT_FILE_CHANGED
from provenance.c2pa.container import stored_content_sha256
from provenance.core.errors import FileChangedError
from provenance.core.files import FileView
from provenance.media.image import SNIFF_BYTES, sniff_media_type
from tests.conftest import FIXTURES, SAMPLES, Cli, ServerProc, serving

#: Files with and without a C2PA manifest store, of each type a store is stripped from.
_FILES = [
    *sorted((FIXTURES / "c2pa").rglob("*.jpg")),
    *sorted((FIXTURES / "c2pa").rglob("*.png")),
    *sorted((FIXTURES / "c2pa").rglob("*.mp4")),
    *sorted((FIXTURES / "c2pa").rglob("*.mov")),
    SAMPLES / "rocket.jpg",
    SAMPLES / "chelsea.png",
    SAMPLES / "fabric_pattern.mp4",
]


def test_the_stripped_hash_read_by_position_is_the_held_one() -> None:
    """Bit-identical to the hash of the bytes held, for every shared C2PA fixture and
    sample (those with a store give a hash, the others b""). (It was compared with a
    mapping of the file too, until walk54 took mappings out of the walks' types.)"""
    with_store = 0
    for path in _FILES:
        data = path.read_bytes()
        media = sniff_media_type(data[:SNIFF_BYTES])
        held = stored_content_sha256(data, media)
        with path.open("rb") as f:
            view = FileView(f.fileno(), len(data), str(path))
            assert stored_content_sha256(view, media) == held, path
        with_store += bool(held)
    assert with_store >= 5, with_store  # the fixtures do hold stores to strip


def test_a_file_cut_short_while_read_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """A file cut by another program after the reader took its size: FileChangedError
    naming it and how many bytes were left (a mapping of it gave SIGBUS)."""
    big = tmp_path / "export.png"
    data = (FIXTURES / "c2pa" / "generated" / "gen_ed25519_capture.png").read_bytes()
    big.write_bytes(data)
    with big.open("rb") as f:
        view = FileView(f.fileno(), len(data), str(big))
        os.truncate(big, len(data) // 3)
        with pytest.raises(FileChangedError) as e:
            stored_content_sha256(view, "image/png")
    assert f"{big} got shorter while it was read" in str(e.value), e.value


class _Relay(grpc.GenericRpcHandler):
    """Relays every call, as bytes, to the real server at ``real``; a VerifyFile's answer
    is passed back only after ``meanwhile()`` ran, once the whole upload has arrived."""

    def __init__(self, real: str, meanwhile: Callable[[], None]) -> None:
        self.channel = grpc.insecure_channel(real)
        self.meanwhile = meanwhile

    def service(self, details: Any) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = str(details.method)
        if method.endswith("/VerifyFile"):
            relay: grpc.StreamUnaryMultiCallable[bytes, bytes] = self.channel.stream_unary(method)

            def upload(requests: Iterator[bytes], context: Any) -> bytes:
                answer = bytes(relay(iter(list(requests)), timeout=120))
                self.meanwhile()
                return answer

            return grpc.stream_unary_rpc_method_handler(upload)
        unary: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(method)
        return grpc.unary_unary_rpc_method_handler(lambda r, c: bytes(unary(r, timeout=60)))


def _relay(real: str, meanwhile: Callable[[], None]) -> Iterator[str]:
    """HOST:PORT of a `_Relay` in front of the real server at ``real``."""
    return serving(_Relay(real, meanwhile))


def _overwrite(path: Path) -> None:
    """One byte of the middle rewritten in place: same inode, same size."""
    middle = path.stat().st_size // 2
    with open(path, "r+b") as f:
        os.pwrite(f.fileno(), bytes([os.pread(f.fileno(), 1, middle)[0] ^ 0xFF]), middle)


_CHANGES: dict[str, Callable[[Path], None]] = {
    "overwritten": _overwrite,
    "cut": lambda p: os.truncate(p, p.stat().st_size // 2),
    "replaced": lambda p: os.replace(shutil.copy(SAMPLES / "chelsea.png", p.with_name("new")), p),
    "removed": lambda p: p.unlink(),
}


@pytest.mark.parametrize("change", list(_CHANGES))
def test_a_file_changed_after_it_was_sent_is_said_to_have_changed(
    ca_server: ServerProc,
    cli: Cli,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: str,
) -> None:
    """A `prov sign --c2pa` capture, whose claim binds its bytes without the manifest
    store (so `prov verify` reads it a second time), changed once the server has it and
    before its answer arrives: "changed while it was being verified", exit 15 (also
    --json: status null and that error), no SERVER EVIDENCE REFUSED. Left alone, the
    same relay's answer reads SIGNED_ORIGINAL."""
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    rc, out, err = cli("sign", "--c2pa", str(photo))
    assert rc == 0, err
    signed = photo.read_bytes()
    armed: list[bool] = []

    def meanwhile() -> None:
        if armed:
            _CHANGES[change](photo)

    for address in _relay(ca_server.address, meanwhile):
        args = ["verify", "--no-detect", "--no-sidecar", str(photo), "--server", address]
        capsys.readouterr()
        rc = prov_main(args)
        out, err = capsys.readouterr()
        assert rc == 0 and "SIGNED_ORIGINAL" in out, (rc, out, err)
        assert hashlib.sha256(signed).hexdigest() not in out  # the claim binds other bytes
        armed.append(True)
        for extra in ([], ["--json"]):
            photo.write_bytes(signed)
            rc = prov_main([*args, *extra])
            out, err = capsys.readouterr()
            text = " ".join(err.split())
            assert rc == EXIT_FILE_CHANGED == 15, (change, extra, rc, out, err)
            assert f"{photo} changed while it was being verified" in text, text
            assert "SERVER EVIDENCE REFUSED" not in err and "other bytes" not in err, err
            assert "Traceback" not in err, err
            if extra:
                doc = json.loads(out)
                assert doc["status"] is None and "changed while it was" in doc["error"], doc
