"""A transparency-log witness: C2SP tlog-witness (add-checkpoint) and tlog-cosignature.

`Witness.add_checkpoint` implements c2sp.org/tlog-witness "add-checkpoint": the request
body is ``old <size>``, up to 63 base64 consistency-proof hashes, an empty line and a
signed checkpoint. The witness answers:

- 404 when the checkpoint's origin is not a log it witnesses;
- 403 when no signature by that log's key verifies;
- 400 for a malformed body (its checkpoint no signed note too, whatever its origin), or
  an old size above the checkpoint's size; 413 for a body over `MAX_BODY_BYTES` (the HTTP
  layer answers it from the head when the Content-Length declares more);
- 409 Conflict, with its own size as ``<size>\\n`` (``Content-Type: text/x.tlog.size``),
  when the old size is not the size it last cosigned (a rolled-back or stale client);
- 422 Unprocessable Entity when the checkpoint cannot be consistent with what it
  cosigned: a checkpoint of size 0 whose root is not the empty tree's (RFC 9162 2.1.1:
  SHA-256 of nothing), consistency-proof lines after ``old 0``, a consistency proof
  (RFC 9162 2.1.4.2) that does not verify, or the size it cosigned with another root (a
  fork), each as tlog-witness "add-checkpoint" says;
- else 200 and one cosignature line, after persisting the new checkpoint (a checkpoint of
  the size already cosigned, which anyone can replay, is cosigned without a save); the check
  and the update are atomic (the tlog-witness race: a thread lock, and an flock on the
  state folder's lock file for other processes of the same folder);
- 503 when another process of the same state folder holds its lock for more than
  `LOCK_WAIT_S` (a hung or stopped process): the request is not left waiting for ever;
- 503 with Retry-After (`SAVE_RETRY_AFTER_S`) when the new state cannot be saved (a full
  disk, any OSError): no cosignature is returned, the state before is kept (tlog-witness:
  the checkpoint must be persisted before the answer), and the file and the error go to
  the witness's log at most once a minute (before: Starlette's bare 500 and a traceback).

A cosignature (c2sp.org/tlog-cosignature "Format", "Ed25519 signed message") is a note
signature line ``— <witness name> base64(key id || u64 timestamp || Ed25519 signature)``
over ``cosignature/v1\\ntime <timestamp>\\n`` followed by the checkpoint body; the key id
is SHA-256(name || 0x0A || 0x04 || public key)[:4]. Its timestamp is the clock's, but
never before a cosignature already returned for the log, and a second after it for a
larger tree (`Witness._timestamp`: a clock set back must not date a larger tree earlier;
a time more than `MAX_CARRY_S` ahead of the clock is not carried).

`Witness.monitor_checkpoint` implements the "Monitor Retrieval Mechanism": ``GET
<prefix>/<hex SHA-256 of the origin>/checkpoint`` answers the last checkpoint cosigned for
that log, with the log's verified signature lines and the cosignature returned for it;
404 when none was, or when none of the log's signature lines on it is by the log's key
the witness now holds (a rotated key: a checkpoint without one no verifier can check).

Both answer 500 with one line (`DAMAGED_STATE_TEXT`) when the log's state file is damaged
(not JSON of the shape written here, unreadable, or another log's state under this
log's name); the file and the error go to the
witness's log (ERROR ``provenance.witness``), at most once a minute per file, so a flood
of requests for that log cannot flood the log.

State: one JSON file per log origin in the state directory (the last cosigned size,
root and note, and the cosignature line returned), replaced atomically and durably (file
and folder fsynced) before the answer.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from provenance.cli.atomicfile import remove_leftovers, write_atomically
from provenance.cli.files import open_regular
from provenance.core import merkle
from provenance.core.buckets import Every
from provenance.core.errors import (
    ConfigError,
    LogError,
    ProvenanceError,
    SignatureError,
    WitnessQuorumError,
)
from provenance.log.checkpoint import (
    Checkpoint,
    LogSigner,
    NoteVerifier,
    b64decode_strict,
    check_key_name,
    open_checkpoint,
    parse_tree_size,
    refuse_pem,
    split_note,
    split_vkey,
)
from provenance.terminal import quoted
from provenance.wire.jsontext import loads_text

COSIGNATURE_TYPE_ED25519 = 0x04
"""Signature type byte of Ed25519 cosignature/v1 (tlog-cosignature "Format")."""

MAX_PROOF_LINES = 63
"""Most consistency-proof lines a client may send (tlog-witness "add-checkpoint")."""

MAX_BODY_BYTES = 128 * 1024
"""Largest add-checkpoint request body read: 63 proof lines and a checkpoint with 16
signatures of nearly 5 kB each (c2sp.org/signed-note "Format": verifiers "MUST accept at
least up to 16 signatures", "post-quantum signatures can be up to nearly 5kB"), about
110 kB with their names."""

SIZE_CONTENT_TYPE = "text/x.tlog.size"
"""Content-Type of a 409 answer carrying the witness's size."""

_EM_DASH = "\u2014"

log = logging.getLogger(__name__)

DAMAGED_STATE_TEXT = (
    "this witness's saved state for that log is damaged; its operator must repair it\n"
)
"""The one line a client gets (500) when the witness's state file for a log is damaged:
the file's path and the error are the operator's, in the witness's log."""

DAMAGED_LOG_EVERY_S = 60.0
"""Seconds between two log lines about one damaged state file (or one that cannot be
saved)."""

SAVE_RETRY_AFTER_S = 60
"""Retry-After, in seconds, of the 503 answered when the state cannot be saved (a full
disk is seldom freed within seconds)."""


def cosignature_key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x04 || 32-byte Ed25519 key)[:4] (tlog-cosignature)."""
    material = name.encode() + b"\n" + bytes([COSIGNATURE_TYPE_ED25519]) + public_key
    return hashlib.sha256(material).digest()[:4]


def cosigned_message(body: bytes, timestamp: int) -> bytes:
    """The Ed25519 cosignature/v1 signed message for a checkpoint ``body`` (its note text,
    ending in a newline) at POSIX ``timestamp`` seconds."""
    return b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + body


def cosigner_vkey(name: str, public_key: bytes) -> str:
    """The witness's verifier key: ``<name>+<hex key id>+base64(0x04 || public key)``."""
    material = base64.b64encode(bytes([COSIGNATURE_TYPE_ED25519]) + public_key).decode()
    return f"{name}+{cosignature_key_id(name, public_key).hex()}+{material}"


def cosign(signer: LogSigner, body: bytes, timestamp: int) -> str:
    """One cosignature line (ending in a newline) by the witness ``signer`` on ``body``."""
    signature = signer.sign_message(cosigned_message(body, timestamp))
    blob = cosignature_key_id(signer.name, signer.public_key)
    blob += timestamp.to_bytes(8, "big") + signature
    return f"{_EM_DASH} {signer.name} {base64.b64encode(blob).decode()}\n"


def parse_cosigner_vkey(vkey: str) -> tuple[str, bytes]:
    """(witness name, 32-byte Ed25519 public key) of a cosigner verifier key
    ``<name>+<hex key id>+base64(0x04 || key)`` (what `cosigner_vkey` writes and
    ``prov witness serve`` prints). Raises LogError when it is malformed (a name that is no
    note key name, too) or its key id does not match."""
    if vkey.startswith("witness key "):  # the whole line `prov witness serve` prints
        raise LogError(
            "give the key alone, without the 'witness key ' that `prov witness serve` prints"
            f" before it: {vkey.removeprefix('witness key ')[:120]!r}"
        )
    refuse_pem(vkey, "witness key")
    name, id_text, material = split_vkey(vkey, "witness key")
    if not name:
        raise LogError(f"witness key {quoted(vkey)} is not <name>+<key id>+<key>")
    check_key_name(name)
    raw = b64decode_strict(material, "witness key material")
    if len(raw) != 33 or raw[0] != COSIGNATURE_TYPE_ED25519:
        raise LogError("witness key is not an Ed25519 cosignature/v1 key (type 0x04)")
    kid = cosignature_key_id(name, raw[1:])
    if kid.hex() != id_text:
        raise LogError(f"witness key id {id_text} does not match the key ({kid.hex()})")
    return name, raw[1:]


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: the witness's name and its timestamp (UTC)."""

    name: str
    timestamp: datetime


def verify_cosignature(note: str, vkey: str) -> Cosignature:
    """Find and verify the cosignature of witness ``vkey`` on the signed checkpoint ``note``.

    The note is read as c2sp.org/signed-note reads it (`split_note`: only U+000A ends a
    line, no control characters), the reading `open_checkpoint` gives the log's
    signature: a line that counts here is one that also parses there. Lines by other
    names or key ids are ignored (tlog-cosignature "Format"). Raises LogError for a
    malformed key or note and SignatureError when this witness has no line on it, or
    when any line of its name and key id fails to verify, is not 72 bytes, or carries a
    time after year 9999, which a datetime cannot hold (signed-note "Signatures": a line
    of a known key's name and id is verified, and one that fails rejects the note,
    whether or not another of its lines verifies). With several valid lines, the first
    one's time is given. Each line of its name and id costs a signature check (at most
    the note's 100 lines).
    """
    name, raw = parse_cosigner_vkey(vkey)
    kid = cosignature_key_id(name, raw)
    text, lines = split_note(note)
    body = text.encode()
    public = Ed25519PublicKey.from_public_bytes(raw)
    found: Cosignature | None = None
    for line in lines:  # each of its lines, not only the first (signed-note "Signatures")
        if line.name != name or line.key_id != kid:
            continue
        if len(line.signature) != 8 + 64:  # the 0x04 key id fixes a timestamped Ed25519
            raise SignatureError(  # signature: any other length is one that cannot verify
                f"the cosignature by {name} does not verify: it is {len(line.signature)}"
                " bytes, not a timestamp and an Ed25519 signature (72)"
            )
        timestamp = int.from_bytes(line.signature[:8], "big")
        try:
            public.verify(line.signature[8:], cosigned_message(body, timestamp))
        except InvalidSignature as e:
            raise SignatureError(f"the cosignature by {name} does not verify") from e
        try:
            found = found or Cosignature(name, datetime.fromtimestamp(timestamp, UTC))
        except (ValueError, OverflowError, OSError):
            # past year 9999: tlog-cosignature allows up to 2^63 - 1 but lets verifiers
            # refuse times in the future
            raise SignatureError(
                f"the cosignature by {name} has timestamp {timestamp}, past any date (the"
                " end of year 9999 is the latest taken)"
            ) from None
    if found is None:
        raise SignatureError(f"the checkpoint has no cosignature by witness {name}")
    return found


def check_policy(witness_keys: list[str]) -> None:
    """Raise LogError unless the cosigner keys ``witness_keys`` are of distinct public
    keys: an Ed25519 cosignature does not commit to the witness's name (tlog-cosignature
    "Ed25519 signed message"), so one key listed twice, or under two names (anyone can
    copy its line under the other name's key id), would count one witness twice towards
    a quorum. Also LogError for two keys of one name and 4-byte key id (a collision
    found by a birthday search): a cosignature line is known by its name and key id, so
    only one of them could ever count (Go's note verifiers refuse such a pair as an
    ambiguous key); and for a malformed key."""
    seen: dict[bytes, str] = {}
    ids: set[tuple[str, bytes]] = set()
    for vkey in witness_keys:
        name, raw = parse_cosigner_vkey(vkey)
        if raw in seen:
            raise LogError(
                f"the witness keys of {seen[raw]} and {name} have the same public key: one"
                " witness cannot count twice towards a quorum"
            )
        kid = cosignature_key_id(name, raw)
        if (name, kid) in ids:
            raise LogError(
                f"two witness keys of {name} have the same name and key id {kid.hex()}:"
                " their cosignature lines cannot be told apart (an ambiguous key)"
            )
        seen[raw] = name
        ids.add((name, kid))


def check_quorum(note: str, witness_keys: list[str], quorum: int) -> list[Cosignature]:
    """The valid cosignatures on ``note`` by the witnesses ``witness_keys``; raises
    WitnessQuorumError when fewer than ``quorum`` of them cosigned it (naming those that
    did not), LogError for a malformed key or note, or a policy that lists one public
    key twice (`check_policy`)."""
    check_policy(witness_keys)
    signed: list[Cosignature] = []
    missing: list[str] = []
    for vkey in witness_keys:
        try:
            signed.append(verify_cosignature(note, vkey))
        except SignatureError as e:
            missing.append(str(e))
    if len(signed) < quorum:
        raise WitnessQuorumError(
            f"{len(signed)} of the {quorum} witness cosignatures required: " + "; ".join(missing)
        )
    return signed


@dataclass(frozen=True)
class WitnessStatus:
    """How one witness of a log server's policy is doing, as the server last saw it.

    ``size``: the tree size this witness last cosigned for the server (0: none yet);
    ``problem``: why its last request failed (unreachable, or the refusal and what it
    means), empty when it cosigned the newest checkpoint it was sent."""

    name: str
    url: str
    size: int
    problem: str = ""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, body text, content type and Retry-After seconds."""

    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"
    #: seconds for a Retry-After header (0: none)
    retry_after: int = 0


@dataclass(frozen=True)
class _Request:
    old_size: int
    proof: list[bytes]
    note: str


class _BadRequest(ProvenanceError):
    """A malformed add-checkpoint body (answered 400)."""


def _parse_request(text: str) -> _Request:
    """Parse an add-checkpoint body; raises _BadRequest naming what is malformed."""
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise _BadRequest("the body has no empty line before the checkpoint")
    lines = head.split("\n")
    try:
        old = parse_tree_size(lines[0][4:] if lines[0].startswith("old ") else "")
    except LogError:
        raise _BadRequest(
            "the first line is not 'old <size>' (decimal of at most 20 digits, no leading"
            " zeros; only ASCII digits 0-9 count)"
        ) from None
    if not note.split("\n", 1)[0]:
        raise _BadRequest("the checkpoint's first line, its origin, is empty")
    try:  # malformed before its origin is looked up: a NUL there names no log (not 404)
        split_note(note)
    except LogError as e:
        raise _BadRequest(f"the checkpoint is no signed note: {e}") from None
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise _BadRequest(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for n, line in enumerate(lines[1:], 1):
        try:
            value = b64decode_strict(line, f"consistency proof line {n}")
        except LogError as e:
            raise _BadRequest(str(e)) from e
        if len(value) != merkle.HASH_SIZE:
            raise _BadRequest(f"consistency proof line {n} is not a SHA-256 hash")
        proof.append(value)
    return _Request(old, proof, note)


#: The file in a witness's state folder whose flock makes each check-and-save atomic.
LOCK_FILE = ".lock"


#: The file in a witness's state folder naming the witness it belongs to (its verifier
#: key, one line): another witness is refused the folder at start.
OWNER_FILE = "witness.vkey"


#: What to do about an `OWNER_FILE` that is empty or names no witness (`Witness`).
_OWNER_FIX = (
    ": it names the witness whose state the folder holds (that witness's verifier key,"
    " one line, written when a witness first uses the folder). If the folder is this"
    " witness's, remove the file and start this witness again (it is written anew); else give"
    " this witness its own --state"
)


#: Longest wait, in seconds, for the state folder's lock before a request is answered 503.
LOCK_WAIT_S = 10.0
# Interval, in seconds, between tries of a lock another process holds.
_LOCK_POLL_S = 0.01


class _Busy(Exception):
    """The state folder's lock was not free within the wait."""


@contextlib.contextmanager
def _locked(thread_lock: threading.Lock, fd: int, wait_s: float) -> Iterator[None]:
    """Hold ``thread_lock`` and an exclusive flock(2) on ``fd`` for the block, waiting at
    most ``wait_s`` seconds for both together; raises _Busy when they stay taken."""
    deadline = time.monotonic() + wait_s
    if not thread_lock.acquire(timeout=wait_s):
        raise _Busy
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _Busy from None
                time.sleep(_LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        thread_lock.release()


def _open_lock_file(path: Path) -> int:
    """A descriptor of the regular file ``path`` (created if missing), opened without
    following a symbolic link and without blocking (a FIFO there would hang the open).
    Raises ConfigError when it is a symbolic link, a folder, a FIFO or any other
    non-regular file, or cannot be opened."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    hint = "it must be a regular file; remove it and start the witness again"
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        what = "is a symbolic link" if os.path.islink(path) else f"cannot be opened: {e.strerror}"
        raise ConfigError(f"the witness lock file {path} {what} ({hint})") from e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"the witness lock file {path} is not a regular file ({hint})")
    return fd


_ORIGIN_HASH_RE = re.compile(r"[0-9a-f]{64}")
#: Most bytes of a log's state file: `_save` writes its origin, checkpoint note and
#: cosignature line, a few KiB (the note came in a body of at most `MAX_BODY_BYTES`).
MAX_STATE_BYTES = 1 << 20


@dataclass(frozen=True)
class _State:
    """A log's saved state: the last checkpoint cosigned, its signed note and the
    cosignature line returned for it (None in a state saved before lines were kept)."""

    checkpoint: Checkpoint
    note: str
    line: str | None


class _DamagedState(LogError):
    """A witness state file that cannot be read or is not what the witness writes."""

    def __init__(self, path: Path, error: BaseException) -> None:
        super().__init__(f"witness state {path} is damaged: {error}")
        self.path = path


class _SaveFailed(LogError):
    """A witness state file that could not be written (a full disk, a file size limit,
    a read-only or vanished folder): the state before stays as it was."""

    def __init__(self, path: Path, error: OSError) -> None:
        self.path = path
        self.reason = error.strerror or str(error)
        super().__init__(f"witness state {path} could not be saved: {self.reason}")


def _log_lines(note: str, verifier: NoteVerifier) -> str:
    """The signature lines of the signed ``note`` by ``verifier``'s key (name and key id),
    as note text; empty when there are none, or when the note is malformed."""
    try:
        _, signatures = split_note(note)
    except LogError:
        return ""
    return "".join(
        f"{_EM_DASH} {s.name} {base64.b64encode(s.key_id + s.signature).decode()}\n"
        for s in signatures
        if s.name == verifier.name and s.key_id == verifier.key_id
    )


#: Largest cosignature timestamp (tlog-cosignature "Format": "It MUST NOT exceed 2^63 - 1").
MAX_TIMESTAMP = 2**63 - 1
#: Furthest, in seconds, a cosignature time is carried ahead of the witness's clock
#: (`Witness._timestamp`): a clock set back by up to a day keeps the log's cosignature
#: times in order; a time further ahead is taken as a clock that was wrong (or a damaged
#: state), and the clock's is used, so one wrong reading does not date every later
#: cosignature in the future, which tlog-cosignature lets verifiers refuse.
MAX_CARRY_S = 86_400


def _line_timestamp(line: str) -> int:
    """The timestamp of the cosignature ``line`` (``— <name> base64(key id || u64
    timestamp || signature)``); 0 when it is not such a line."""
    try:
        raw = base64.b64decode(line.rstrip("\n").rsplit(" ", 1)[-1], validate=True)
    except ValueError:
        return 0
    return int.from_bytes(raw[4:12], "big") if len(raw) == 4 + 8 + 64 else 0


def _origin_hash(origin: str) -> str:
    """SHA-256 of a log's origin, lowercase hex: the monitors' name for the log, whose
    first 32 digits name its state file."""
    return hashlib.sha256(origin.encode()).hexdigest()


def _conflict(size: int) -> Answer:
    return Answer(409, f"{size}\n", SIZE_CONTENT_TYPE)


class Witness:
    """A witness of the logs ``log_keys`` (note verifier keys; each log's origin is its
    key name), cosigning with ``signer`` and keeping its state in ``state_dir``.

    ``clock`` gives the cosignature time; ``lock_wait_s``: longest wait, in seconds, for
    the state folder's lock (another process of the folder holding it) before a request
    is answered 503. Thread-safe. Raises LogError for a malformed log key or two
    different keys of one log, ConfigError when the folder's lock file is not a regular
    file, OSError when the state directory cannot be created.
    """

    def __init__(
        self,
        signer: LogSigner,
        log_keys: list[str],
        state_dir: Path,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lock_wait_s: float = LOCK_WAIT_S,
    ) -> None:
        self.signer = signer
        self.logs: dict[str, NoteVerifier] = {}
        for key in log_keys:
            verifier = NoteVerifier.from_vkey(key)
            known = self.logs.setdefault(verifier.name, verifier)
            if known.public_key != verifier.public_key:
                raise LogError(
                    f"two different log keys for the log {verifier.name!r}: a witness checks"
                    " one key per log (give only the log's current key)"
                )
        self.state_dir = state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self.lock_wait_s = lock_wait_s
        self._lock = threading.Lock()
        # per log origin, the latest cosignature time returned (`_timestamp`)
        self._issued: dict[str, int] = {}
        # the check and the save are atomic across processes too (two witnesses of one
        # folder): an flock on this file, taken after the thread lock; held for the
        # witness's life
        self._folder_lock = _open_lock_file(state_dir / LOCK_FILE)
        try:
            self._claim_folder()
        except BaseException:
            self.close()
            raise
        self._damaged_log = Every(DAMAGED_LOG_EVERY_S)  # one line per state file

    def _claim_folder(self) -> None:
        """Make the state folder this witness's: write its verifier key to `OWNER_FILE`
        when the folder has none, else check that it is this witness's key. Processes of
        one witness share a folder (one view); a witness of another key or name would take
        that witness's state for its own (answer 409 with sizes it never checked, cosign
        on from there). The file is written durably (`write_atomically`: the folder is
        fsynced after the rename). First, holding the folder's lock, removes the
        temporary files of `write_atomically` (this file's and the state files') that a
        witness killed mid-write left there (`remove_leftovers`: of a process no longer
        running; each logged). Raises ConfigError naming the folder's witness then, or
        when the folder's lock stays held for ``lock_wait_s``, the file cannot be read or
        written, or it is empty or holds no verifier key (saying so, and what to do)."""
        owner = self.state_dir / OWNER_FILE
        mine = self.vkey()
        try:
            with _locked(self._lock, self._folder_lock, self.lock_wait_s):
                for leftover in remove_leftovers(self.state_dir):
                    log.warning("removed %s, a temporary file a killed witness left", leftover)
                try:
                    raw = owner.read_bytes()
                except FileNotFoundError:  # durably: the folder fsynced after the rename
                    write_atomically(owner, (mine + "\n").encode())
                    return
        except _Busy:
            raise ConfigError(
                f"the witness state folder {self.state_dir} stayed locked by another process"
                f" for {self.lock_wait_s:g} s"
            ) from None
        except OSError as e:
            raise ConfigError(f"cannot read or write {owner}: {e}") from e
        try:
            theirs = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"{owner} is not a witness's verifier key (not UTF-8 text: {e}){_OWNER_FIX}"
            ) from e
        if not theirs:
            raise ConfigError(f"{owner} is empty{_OWNER_FIX}")
        try:
            parse_cosigner_vkey(theirs)
        except LogError as e:
            raise ConfigError(f"{owner} is not a witness's verifier key ({e}){_OWNER_FIX}") from e
        if theirs != mine:
            raise ConfigError(
                f"the state folder {self.state_dir} holds the state of the witness {theirs}"
                f" (named in {owner}), not of this one, {mine}: two witnesses of one folder"
                " would cosign one view, not two. Give this witness its own --state (or"
                " start that witness, with its --key and --name)"
            )

    def close(self) -> None:
        """Release the state folder's lock file (another process of the folder may then
        take it at once); the witness answers no request after this. Idempotent."""
        fd, self._folder_lock = self._folder_lock, -1
        if fd >= 0:
            os.close(fd)

    def vkey(self) -> str:
        """This witness's cosigner verifier key (type 0x04)."""
        return cosigner_vkey(self.signer.name, self.signer.public_key)

    def _state_path(self, origin: str) -> Path:
        return self.state_dir / (_origin_hash(origin)[:32] + ".json")

    def latest(self, origin: str) -> Checkpoint | None:
        """The last checkpoint cosigned for ``origin``, or None. LogError if damaged."""
        state = self._read_state(self._state_path(origin), _origin_hash(origin))
        return None if state is None else state.checkpoint

    def _read_state(self, path: Path, origin_hash: str) -> _State | None:
        """The state saved at ``path`` for the log whose origin hashes (SHA-256, hex) to
        ``origin_hash``, or None when there is none (also when it holds the state of
        another log whose origin hash shares only the first 32 digits, which name the
        file: a monitor may ask for any hash). Raises _DamagedState (a LogError naming
        the file) when it cannot be read, is not what `_save` writes, or holds the state
        of a log whose origin hash does not start with the file's name (a file copied or
        restored under the wrong name: taken as this log's, it judged this log's
        checkpoints against another tree)."""
        try:
            with open_regular(path, ValueError) as handle:  # a FIFO held open() for good
                data = handle.read(MAX_STATE_BYTES + 1)  # /dev/zero or any huge file
            if len(data) > MAX_STATE_BYTES:
                raise ValueError(f"it is over {MAX_STATE_BYTES:,} bytes, more than any state")
            doc = loads_text(data)
            origin, note, line = doc["origin"], doc["note"], doc.get("cosignature")
            if not (isinstance(origin, str) and isinstance(note, str)):
                raise TypeError("its origin and note are not text")
            if _origin_hash(origin)[:32] != origin_hash[:32]:  # not the file's own name
                raise ValueError(f"it holds another log's state, {quoted(origin, 100)}")
            if not isinstance(line, str | None):
                raise TypeError("its cosignature is not text")
            size = doc["size"]
            if type(size) is not int:  # `_save` writes an int; never true, 1.5 or "9"
                raise TypeError(f"its size {size!r} is not a whole number")
            root = base64.b64decode(doc["root"], validate=True)
            saved = Checkpoint(origin, size, root)
            noted = Checkpoint.parse_body(split_note(note)[0], opaque_extensions=True)
            if (noted.origin, noted.size, noted.root_hash) != (origin, size, root):
                # served as it is, and cosigned afresh when no line was kept
                raise ValueError(f"its note is not the tree of size {size} saved with it")
            return _State(saved, note, line) if _origin_hash(origin) == origin_hash else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, LogError) as e:  # LogError: Checkpoint's
            raise _DamagedState(path, e) from e

    def _damaged(self, error: _DamagedState) -> Answer:
        """The 500 answer for a damaged state file; logs its path and error, at most once
        every `DAMAGED_LOG_EVERY_S` per file."""
        if not self._damaged_log.due(error.path):
            return Answer(500, DAMAGED_STATE_TEXT)
        log.error("%s (answered 500; logged at most every %g s)", error, DAMAGED_LOG_EVERY_S)
        return Answer(500, DAMAGED_STATE_TEXT)

    def _unsaved(self, error: _SaveFailed) -> Answer:
        """The 503 answer (with Retry-After) when the state could not be saved: nothing
        was cosigned. Logs the file and the error, at most once every
        `DAMAGED_LOG_EVERY_S` per file."""
        if self._damaged_log.due(("save", error.path)):
            log.error("%s (answered 503; logged at most every %g s)", error, DAMAGED_LOG_EVERY_S)
        return Answer(
            503,
            f"this witness could not save its state ({error.reason}), so it cosigned"
            " nothing; try again later\n",
            retry_after=SAVE_RETRY_AFTER_S,
        )

    def _save(self, checkpoint: Checkpoint, note: str, line: str) -> None:
        """Replace the log's state file with ``checkpoint``, its signed ``note`` and the
        cosignature ``line``, atomically and durably (`write_atomically`: a temporary
        file fsynced, renamed over it, the folder fsynced). Raises _SaveFailed on any
        OSError, the temporary file removed: the state before is untouched, unless only
        the folder's fsync failed (then the new state is in place but may not survive a
        power cut). The folder's fsync matters: without it a power cut after the answer
        could bring back the older state, and a fork of what was cosigned would then be
        cosigned too."""
        path = self._state_path(checkpoint.origin)
        doc = {
            "origin": checkpoint.origin,
            "size": checkpoint.size,
            "root": base64.b64encode(checkpoint.root_hash).decode(),
            "note": note,
            "cosignature": line,
        }
        try:
            write_atomically(path, (json.dumps(doc, indent=2) + "\n").encode())
        except OSError as e:
            raise _SaveFailed(path, e) from e

    def add_checkpoint(self, body: bytes) -> Answer:
        """Handle one add-checkpoint request body (see module docstring for the answers)."""
        if len(body) > MAX_BODY_BYTES:
            return Answer(413, f"the body is larger than {MAX_BODY_BYTES} bytes\n")
        try:
            text = body.decode()
        except UnicodeDecodeError as e:  # Python's own words name its codec, not the body
            return Answer(
                400,
                "malformed add-checkpoint body: the body is not UTF-8 text"
                f" (byte 0x{body[e.start]:02x} at offset {e.start})\n",
            )
        try:
            request = _parse_request(text)
            origin = request.note.split("\n", 1)[0]
        except _BadRequest as e:
            return Answer(400, f"malformed add-checkpoint body: {e}\n")
        verifier = self.logs.get(origin)
        if verifier is None:
            return Answer(404, f"this witness does not witness the log {origin[:100]!r}\n")
        try:
            # another log's extension lines are opaque (tlog-checkpoint), and cosigned as
            # they are: the cosigned message is the note text verbatim
            new = open_checkpoint(request.note, verifier, opaque_extensions=True)
        except SignatureError as e:
            return Answer(403, f"{e}\n")
        except LogError as e:
            return Answer(400, f"malformed checkpoint: {e}\n")
        if request.old_size > new.size:
            return Answer(
                400, f"old size {request.old_size} is above the checkpoint's {new.size}\n"
            )
        try:
            with _locked(self._lock, self._folder_lock, self.lock_wait_s):
                return self._check_and_save(request, origin, verifier, new)
        except _DamagedState as e:
            return self._damaged(e)
        except _SaveFailed as e:
            return self._unsaved(e)
        except _Busy:
            return Answer(
                503,
                f"the witness state {self.state_dir} stayed locked for {self.lock_wait_s:g} s"
                " (another process of the folder holds it); try again\n",
            )

    def _check_and_save(
        self, request: _Request, origin: str, verifier: NoteVerifier, new: Checkpoint
    ) -> Answer:
        """The add-checkpoint steps under the state lock, in tlog-witness's order: the old
        size against the saved state (409), the checkpoint's consistency with it (422:
        the empty tree's root at size 0, no proof from 0, the proof, the same root at the
        same size), save, cosign. Raises _DamagedState for a damaged state file."""
        saved = self._read_state(self._state_path(origin), _origin_hash(origin))
        old = None if saved is None else saved.checkpoint
        old_size = old.size if old is not None else 0
        if request.old_size != old_size:
            return _conflict(old_size)
        if new.size == 0 and new.root_hash != merkle.EMPTY_ROOT:
            empty = "a tree of size 0 has the empty root, SHA-256 of nothing"
            return Answer(422, f"the checkpoint cannot be: {empty}\n")
        if old is None or old.size == 0:
            if request.proof:
                return Answer(422, "the consistency proof must be empty when the old size is 0\n")
        else:  # equal sizes: an empty proof and the same root (RFC 9162 2.1.4.2)
            try:
                merkle.verify_consistency(
                    old.size, new.size, request.proof, old.root_hash, new.root_hash
                )
            except LogError as e:
                return Answer(
                    422,
                    f"the checkpoint is not consistent with the tree of size {old.size} this"
                    f" witness cosigned: {e}\n",
                )
        timestamp = self._timestamp(origin, saved, new.size)
        body_text = request.note[: request.note.rfind("\n\n") + 1].encode()
        line = cosign(self.signer, body_text, timestamp)
        # the same tree again: nothing to save, unless the saved note has no line by the
        # log's key now held (a rotated key), which monitors could not check
        if (
            saved is None
            or saved.checkpoint.size != new.size
            or not _log_lines(saved.note, verifier)
        ):
            self._save(new, request.note, line)
        return Answer(200, line)

    def _timestamp(self, origin: str, saved: _State | None, size: int) -> int:
        """The time (POSIX seconds) of a cosignature of ``origin``'s tree of ``size``
        leaves: the clock's, but never before a cosignature already returned for the log
        (the one ``saved`` holds, and those this process returned since), at least a
        second after it for a larger tree, and never 0. tlog-cosignature: a cosignature
        says that "as of the specified time" the tree is the largest the witness has
        observed; a clock set back (an NTP step, a restored VM) made a larger tree dated
        before a smaller one, two statements that cannot both hold. A time more than
        `MAX_CARRY_S` ahead of the clock is not carried: the clock was wrong then (a
        clock once years ahead dated every later cosignature years ahead, which
        verifiers may refuse, "the time at which the cosignature was generated" being
        the spec's words), and the witness logs it (at most every
        `DAMAGED_LOG_EVERY_S` per log). Call under the state lock."""
        now = max(1, int(self._clock().timestamp()))
        last = self._issued.get(origin, 0)
        if saved is not None and saved.line:
            kept = _line_timestamp(saved.line)
            if kept < MAX_TIMESTAMP:  # else not one this witness wrote
                last = max(last, kept)
        if last > now + MAX_CARRY_S:
            if self._damaged_log.due(("ahead", origin)):
                log.warning(
                    "the last cosignature of %s is dated %d, %d s ahead of this witness's"
                    " clock (%d): more than the %d s carried, so the clock's time is used"
                    " (was the clock wrong then, or is it now?)",
                    quoted(origin, 100), last, last - now, now, MAX_CARRY_S,
                )  # fmt: skip
            last = 0
        grew = saved is None or size > saved.checkpoint.size
        timestamp = max(now, last + 1 if grew and last else last)
        self._issued[origin] = timestamp
        return timestamp

    def monitor_checkpoint(self, origin_hash: str) -> Answer:
        """The tlog-witness "Monitor Retrieval Mechanism": ``GET <prefix>/<origin
        hash>/checkpoint``, the origin hash SHA-256 of the log's origin in lowercase hex.
        200: the last checkpoint cosigned for that log, with the log's signature lines
        this witness verified and the cosignature line add-checkpoint returned for it
        (a state saved before the line was kept gets a cosignature made now: the same
        statement, that this is the newest tree the witness holds); 404 when the witness
        never cosigned a checkpoint of that log, or when the checkpoint it holds has no
        signature line by the log's key it now holds (the log's key changed since: no
        verifier could check it); 500 with `DAMAGED_STATE_TEXT` for a damaged state file
        (its path and error logged)."""
        if not _ORIGIN_HASH_RE.fullmatch(origin_hash):
            return Answer(404, "not a lowercase hex SHA-256 of a log's origin\n")
        path = self.state_dir / (origin_hash[:32] + ".json")
        try:
            saved = self._read_state(path, origin_hash)
            if saved is None:
                return Answer(404, "this witness never cosigned a checkpoint of that log\n")
            origin, note, line = saved.checkpoint.origin, saved.note, saved.line
            verifier = self.logs.get(origin)
            if verifier is None:
                return Answer(404, "this witness never cosigned a checkpoint of that log\n")
        except _DamagedState as e:
            return self._damaged(e)
        text, _ = split_note(note)  # `_read_state` parsed it already
        logs = _log_lines(note, verifier)
        if not logs:
            return Answer(
                404,
                "this witness holds no checkpoint of that log signed by the log's key it now"
                " has (the key changed since it last cosigned)\n",
            )
        if not isinstance(line, str):
            line = cosign(self.signer, text.encode(), int(self._clock().timestamp()))
        return Answer(200, f"{text}\n{logs}{line}")
