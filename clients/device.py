"""The device SDK: a key in an encrypted file, the per-device sequence and hash chain,
signing captures into sidecars, and an on-disk queue so no signed capture is lost.

Layout of the device home (``PROV_HOME``, default ``~/.prov``)::

    device_key.pem   the Ed25519 private key, encrypted PKCS#8 PEM (mode 0600)
    device.json      device id, enrolled server, last sequence, last claim hash
    queue/           signed claims not yet acknowledged by the log, one JSON each

Order of writes when signing (each file written atomically and fsynced): the state
(sequence reserved) first, then the queue entry, then the sidecar. A crash can leave
a gap in the sequence, never a reused number, and never a signed claim that is not
queued.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from clients.api import ProvenanceClient, is_unreachable
from provenance import wire
from provenance.assets import AssetLimits, check_size, inspect_image, media_type_of
from provenance.claims import MAX_SOFT_BINDINGS, Claim, HardBinding, Receipt, SignedClaim
from provenance.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.errors import ConfigError, MediaError, ProvenanceError, TransportError
from provenance.keys import DeviceKey
from provenance.sidecar import Sidecar, decode_sidecar, encode_sidecar
from provenance.video.binding import DEFAULT_VIDEO_CHUNK, ChunkedHasher
from provenance.video.decode import DEFAULT_RATE_HZ, sample_frames

SIDECAR_SUFFIX = ".prov"
APP_VERSION = "prov-cli/0.1"


def default_home() -> Path:
    """PROV_HOME, else ~/.prov."""
    return Path(os.environ.get("PROV_HOME") or Path.home() / ".prov")


def sidecar_path(path: Path) -> Path:
    """Where the sidecar of ``path`` lives: ``FILE.prov`` beside it."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync, rename, fsync the folder."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@dataclass(frozen=True)
class DeviceState:
    """What the device remembers between captures (hex strings for bytes)."""

    device_id: str
    public_key: str
    server: str = ""
    last_sequence: int = 0
    last_claim_hash: str = ""


@dataclass(frozen=True)
class SignResult:
    """The outcome of signing one file: its sidecar path, sequence, and the receipt if
    the server acknowledged it (None when it was queued)."""

    path: Path
    sidecar: Path
    sequence: int
    receipt: Receipt | None
    duplicate: bool = False
    queued_reason: str = ""


class DeviceHome:
    """A device's key, state and queue on disk (see module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.key_path = self.root / "device_key.pem"
        self.state_path = self.root / "device.json"
        self.queue_dir = self.root / "queue"
        self.cert_path = self.root / "device_cert.pem"

    # ---------------------------------------------------------------- key and state

    def init(self, passphrase: bytes, force: bool = False) -> DeviceState:
        """Create a new device key. Refuses to overwrite one unless ``force``."""
        if self.key_path.exists() and not force:
            raise ConfigError(
                f"a device key already exists at {self.key_path}; use --force to replace it"
                " (the old key's device identity is then lost)"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self.queue_dir.mkdir(exist_ok=True)
        key = DeviceKey.generate()
        atomic_write(self.key_path, key.to_encrypted_pem(passphrase), mode=0o600)
        state = DeviceState(device_id=key.key_id.hex(), public_key=key.public_key.hex())
        self.save_state(state)
        return state

    def load_key(self, passphrase: bytes) -> DeviceKey:
        if not self.key_path.exists():
            raise ConfigError(f"no device key at {self.key_path}: run `prov device init` first")
        key = DeviceKey.from_encrypted_pem(self.key_path.read_bytes(), passphrase)
        if key.key_id.hex() != self.state().device_id:
            raise ConfigError(f"{self.key_path} does not belong to the device in {self.state_path}")
        return key

    def state(self) -> DeviceState:
        try:
            return DeviceState(**json.loads(self.state_path.read_text()))
        except FileNotFoundError as e:
            raise ConfigError(f"no device at {self.root}: run `prov device init` first") from e
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{self.state_path} is damaged: {e}") from e

    def save_state(self, state: DeviceState) -> None:
        atomic_write(self.state_path, (json.dumps(asdict(state), indent=2) + "\n").encode())

    # ---------------------------------------------------------------- enrollment

    def enroll(
        self, client: ProvenanceClient, token: str, passphrase: bytes, certificate_pem: str = ""
    ) -> DeviceState:
        """Enroll this device's key with a one-time token from an operator (or a
        certificate from the server's enrollment authority); keep the X.509 chain the
        server returns, used to export captures with Content Credentials."""
        key = self.load_key(passphrase)
        pop = sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode())
        device, chain = client.enroll(token, key.public_key, pop, certificate_pem)
        if device.device_id != key.key_id:
            raise ConfigError("the server enrolled a different key id than this device's")
        if chain:
            atomic_write(self.cert_path, chain.encode())
        state = replace(self.state(), server=client.address)
        self.save_state(state)
        return state

    def certificate(self) -> bytes:
        """The device's X.509 chain (PEM); ConfigError when it has none."""
        try:
            return self.cert_path.read_bytes()
        except FileNotFoundError as e:
            raise ConfigError(
                "this device has no certificate: enroll with a server that runs an enrollment"
                " authority (`prov serve --ca DIR`)"
            ) from e

    # ---------------------------------------------------------------- signing

    def sign_file(
        self,
        key: DeviceKey,
        path: Path,
        captured_at: datetime | None = None,
        metadata: Mapping[str, str] | None = None,
        limits: AssetLimits = AssetLimits(),
    ) -> tuple[Sidecar, Path, Path]:
        """Measure ``path``, sign a claim for it, queue it and write ``FILE.prov``.

        Returns the sidecar, its path and the queue entry's path. Raises MediaError for files that are not
        supported media, ConfigError when the device is not initialised.
        """
        claim_fields, chunk_hashes = measure(path, limits)
        state = self.state()
        seq = state.last_sequence + 1
        claim = Claim(
            device_id=key.key_id,
            sequence=seq,
            captured_at=captured_at or datetime.now(UTC),
            prev_claim_hash=bytes.fromhex(state.last_claim_hash),
            metadata={"app": APP_VERSION, **(metadata or {})},
            **claim_fields,
        )
        claim_bytes = wire.encode_claim(claim)
        signed = SignedClaim(
            payload_type=PAYLOAD_TYPE_CLAIM,
            claim_bytes=claim_bytes,
            key_id=key.key_id,
            signature=sign_payload(key, PAYLOAD_TYPE_CLAIM, claim_bytes),
        )
        sidecar = Sidecar(signed, key.public_key, chunk_hashes=chunk_hashes)
        self.save_state(replace(state, last_sequence=seq, last_claim_hash=signed.claim_hash.hex()))
        side_path = sidecar_path(path)
        queued = self._enqueue(seq, sidecar, side_path)
        atomic_write(side_path, encode_sidecar(sidecar))
        return sidecar, side_path, queued

    # ---------------------------------------------------------------- queue

    def _enqueue(self, seq: int, sidecar: Sidecar, side_path: Path) -> Path:
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        doc = {
            "sidecar_path": str(side_path.resolve()),
            "sidecar": encode_sidecar(sidecar).decode(),
        }
        queued = self.queue_dir / f"{seq:012d}.json"
        atomic_write(queued, json.dumps(doc).encode())
        return queued

    def pending(self) -> list[tuple[Path, Sidecar, Path]]:
        """Queued claims in sequence order: (queue file, sidecar, sidecar path)."""
        if not self.queue_dir.exists():
            return []
        out = []
        for q in sorted(self.queue_dir.glob("*.json")):
            doc = json.loads(q.read_text())
            out.append((q, decode_sidecar(doc["sidecar"].encode()), Path(doc["sidecar_path"])))
        return out

    def submit_one(
        self, client: ProvenanceClient, queue_file: Path, sidecar: Sidecar, side_path: Path
    ) -> tuple[Receipt, bool]:
        """Submit one queued claim; on success store the receipt in its sidecar (when the
        sidecar still describes this claim) and drop it from the queue."""
        receipt, duplicate = client.submit(sidecar.signed_claim)
        vkey, _ = client.log_key()
        done = sidecar.with_receipt(receipt, vkey)
        try:
            current = decode_sidecar(side_path.read_bytes())
        except (OSError, ProvenanceError):
            current = None
        if current is None or current.signed_claim == sidecar.signed_claim:
            atomic_write(side_path, encode_sidecar(done))
        queue_file.unlink(missing_ok=True)
        return receipt, duplicate

    def embed_c2pa(self, key: DeviceKey, path: Path, side_path: Path, chain: bytes) -> None:
        """Embed a C2PA manifest into ``path`` in place, signed with the device key, with
        our sidecar (claim and receipt) as a custom assertion and the log checkpoint.

        The claim's SHA-256 stays valid: it covers the bytes with the manifest store
        removed (docs/c2pa.md). Raises ConfigError if the claim is not yet logged.
        """
        from provenance.c2pa.writer import embed_manifest

        sidecar = decode_sidecar(side_path.read_bytes())
        if sidecar.receipt is None:
            raise ConfigError(
                f"{path.name}: the claim is not logged yet; C2PA export needs the receipt"
            )
        embed_manifest(
            path,
            path,
            sidecar.claim.media_type,
            key,
            chain,
            json.loads(encode_sidecar(sidecar)),
            sidecar.receipt.checkpoint,
            title=path.name,
        )

    def sync(
        self,
        client: ProvenanceClient,
        progress: Callable[[int, int], None] | None = None,
    ) -> SyncResult:
        """Submit every queued claim, oldest first (the log takes a device's claims in
        sequence order, so earlier queued claims always go before newer ones).

        Stops at the first unreachable-server error (the rest stay queued). A claim the
        server refuses (e.g. a revoked key) stays queued and is reported; the others go on.
        """
        items = self.pending()
        result = SyncResult()
        for i, (q, sc, sp) in enumerate(items):
            try:
                receipt, _ = self.submit_one(client, q, sc, sp)
                result.logged[sc.signed_claim.claim_hash] = receipt
            except TransportError as e:
                if is_unreachable(e):
                    result.unreachable = str(e)
                    break
                result.refused[sc.signed_claim.claim_hash] = (
                    f"{sp.name.removesuffix(SIDECAR_SUFFIX)}: {e}"
                )
            if progress:
                progress(i + 1, len(items))
        return result

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the device folder's lock: one command at a time signs or submits, so
        sequence numbers are never reused. Waits for another running command."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("ab") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                print(f"waiting for another prov command using {self.root} ...", file=sys.stderr)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class SyncResult:
    """What a sync did: receipts by claim hash, refusals by claim hash (with the reason),
    and the error if the server became unreachable (the rest stayed queued)."""

    logged: dict[bytes, Receipt] = field(default_factory=dict)
    refused: dict[bytes, str] = field(default_factory=dict)
    unreachable: str | None = None


def measure(
    path: Path, limits: AssetLimits = AssetLimits()
) -> tuple[dict[str, object], tuple[bytes, ...]]:
    """The claim fields that describe ``path`` (media type, size, hard and soft bindings,
    pixel dimensions, an image's EXIF orientation tag, duration) and, for video, the
    per-chunk leaf hashes for the sidecar.

    Images: SHA-256 and one PDQ hash. Video: SHA-256 and an RFC 9162 Merkle root over
    1 MiB chunks, streamed; PDQ hashes of frames sampled at 1 Hz in a sandboxed decoder.
    Raises MediaError for empty, unknown, corrupt or oversized files.
    """
    try:
        size = path.stat().st_size
        check_size(size, limits)
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as e:
        raise MediaError(f"cannot read {path}: {e.strerror}") from e
    media_type = media_type_of(head)
    if media_type.startswith("video/"):
        return _measure_video(path, media_type)
    if not media_type.startswith("image/"):
        raise MediaError(f"{path.name}: signing {media_type} files is not supported")
    data = path.read_bytes()
    sha = hashlib.sha256(data).digest()
    asset = inspect_image(sha, data, limits)
    fields: dict[str, object] = {
        "media_type": asset.facts.media_type,
        "size_bytes": size,
        "hard_binding": HardBinding(sha256=sha),
        "soft_bindings": (asset.soft,),
        "width": asset.width,
        "height": asset.height,
        "orientation": asset.orientation,
    }
    return fields, ()


def _measure_video(path: Path, media_type: str) -> tuple[dict[str, object], tuple[bytes, ...]]:
    hasher = ChunkedHasher(DEFAULT_VIDEO_CHUNK)
    with path.open("rb") as f:
        while block := f.read(DEFAULT_VIDEO_CHUNK):
            hasher.update(block)
    digest = hasher.finalize()
    info = sample_frames(path, rate_hz=DEFAULT_RATE_HZ, max_frames=MAX_SOFT_BINDINGS)
    fields: dict[str, object] = {
        "media_type": info.media_type or media_type,
        "size_bytes": digest.size,
        "hard_binding": digest.hard_binding(),
        "soft_bindings": tuple(fr.pdq for fr in info.frames),
        "width": info.width,
        "height": info.height,
        "duration_seconds": info.duration_seconds,
        "frame_sample_rate": info.rate_hz,
    }
    return fields, digest.chunk_hashes
