"""The one exception hierarchy of the project.

Every error raised on purpose by `provenance`, `detector` or `clients` is a
`ProvenanceError`. Low-level errors are re-raised as one of these with
``raise X from e`` at the boundary where they enter our code. The gRPC server maps
each class to one status code in `provenance.server.rpc.errors_map`; the CLI catches the
root once and prints a clean message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provenance.core.claims import Device


class ProvenanceError(Exception):
    """Root of every error the project raises on purpose.

    ``str(e)`` is the whole message, for whoever runs the program: a command's user, the
    server's own log. ``public`` is what a caller of the server is told (gRPC status
    details, the web page's JSON errors): the same message, unless the error was raised
    with ``public=`` because its message names the server's internals (a database URL
    with its user, host, port and name, a file's path, a driver's own words); then a
    sentence that says what happened and what to do without them, and the server logs
    the whole message where it maps the error to a status
    (`provenance.server.rpc`)."""

    def __init__(self, *args: object, public: str | None = None) -> None:
        super().__init__(*args)
        self._public = public

    @property
    def public(self) -> str:
        """The message for a caller outside the server (see the class docstring)."""
        return str(self) if self._public is None else self._public

    @property
    def hides_detail(self) -> bool:
        """Whether ``public`` leaves out what ``str(self)`` says (the operator's detail)."""
        return self._public is not None and self._public != str(self)


class KeyMaterialError(ProvenanceError):
    """A key is malformed, weak (small order, non-canonical) or cannot be decrypted."""


class WrongPassphraseError(KeyMaterialError):
    """An encrypted key file that the passphrase given does not decrypt (a wrong
    passphrase and a damaged file look the same)."""


class SignatureError(ProvenanceError):
    """A signature does not verify, or a signed object is malformed."""


class BindingError(ProvenanceError):
    """A hard or soft binding cannot be computed or does not match."""


class MediaError(ProvenanceError):
    """Input media is empty, truncated, corrupt, of the wrong format, or over a limit."""


class MediaTooLargeError(MediaError):
    """Input exceeds a configured limit (bytes, pixels, frames, duration)."""


class FileChangedError(MediaError):
    """A file changed (replaced, written to) between two reads that had to see the same
    bytes, or since the bytes a claim binds were read: what was to be made of it would
    describe other bytes, so nothing was made."""


class LogError(ProvenanceError):
    """The transparency log is inconsistent, a proof fails, or an index is out of range."""


class LeafNotFoundError(LogError):
    """No entry of the log has the leaf hash asked for (a look-up, not an index out of
    range)."""


class LogIntegrityError(LogError):
    """Stored log data no longer matches its signed checkpoints (tampering or corruption)."""


class ServerEvidenceError(LogIntegrityError):
    """A server's evidence for its verdict does not hold, as the client checks it: the
    cited claim's hard binding is not the SHA-256 of the bytes the client sent (nor of
    those bytes without their C2PA manifest store), a genuine claim of other bytes
    (`clients.cited.check_cited`); a near copy's verdict (DERIVED) citing a claim whose
    soft binding the file's own PDQ hashes do not match (`clients.derived.check_derived`);
    or, with a pinned log key (`prov verify --log-key`),
    its receipt's checkpoint is not signed by that key or its inclusion proof does not
    lead to that checkpoint's root (`clients.cited.check_evidence`). By a hostile or
    broken server or someone between. Exit 3, as a log integrity failure."""


class StaleCheckpointError(LogError):
    """A copy of a log (a tiles mirror or cache) serves a checkpoint of fewer entries,
    signed before the one an audit saved: not updated yet, or an old checkpoint served
    again. Proves nothing against the log (a smaller tree signed after the saved one is a
    rollback, LogIntegrityError)."""


class TileMissingError(LogIntegrityError):
    """A tiled log (C2SP tlog-tiles) does not serve a file its checkpoint needs (a missing
    file, HTTP 404)."""


class StorageError(ProvenanceError):
    """The database cannot be reached, read or written (connection lost, disk full, I/O
    error): the request may succeed later; nothing half-done was kept."""


class StoreUnavailableError(StorageError):
    """The database cannot be reached now: refused or lost connections, a server shutting
    down or starting up, no pooled connection within the wait. The same request is
    expected to succeed once it answers again (the log writer keeps its batch and tries
    it again, `provenance.server.writer`)."""


class StoreNotAnsweringError(StoreUnavailableError):
    """The database took the call but did not answer within the store's bound: a lock
    held on what the call needs (a ``LOCK TABLE``, a ``VACUUM FULL``, another session on
    the log's append lock), or a database server that stopped answering while its
    connections stay open. The transaction was given up and rolled back (``committing``:
    unless it was given up waiting for its COMMIT's answer, when it may have committed);
    ``waited_s``: seconds it waited.
    The log writer answers its batch with it at once instead of holding it."""

    def __init__(
        self,
        message: str,
        waited_s: float,
        committing: bool = False,
        *,
        public: str | None = None,
    ) -> None:
        super().__init__(message, public=public)
        self.waited_s = waited_s
        self.committing = committing


class StoreRefusedError(StorageError):
    """The database refuses this server's connections: a wrong password, a role that does
    not exist or may not log in, no pg_hba.conf entry, a database that does not exist.
    Not an outage: the same request fails until the configuration is fixed, so the log
    writer fails its batch at once instead of waiting for the database."""


class ProofError(LogError):
    """An inclusion or consistency proof does not verify."""


class RegistryError(ProvenanceError):
    """Device registry failures: unknown device, bad or spent token, revoked key."""


class UnknownDeviceError(RegistryError):
    """No enrolled device has this key id."""


class RevokedKeyError(RegistryError):
    """The device key was revoked."""


class EnrollmentError(RegistryError):
    """An enrollment token is unknown, expired or already used, or the proof is wrong."""


class AlreadyEnrolledError(EnrollmentError):
    """The key is enrolled already: ``device`` is its registry row and
    ``certificate_pem`` the chain stored with it ("" when none); ``token_spent_on_it``:
    the request's one-time token is spent, and it was spent enrolling this same key. So a
    replayed enrollment, or the device's retry after a lost answer, can be answered as
    the first was (`provenance.core.registry.answer_enrollment_again`)."""

    def __init__(
        self,
        message: str,
        device: Device,
        certificate_pem: str,
        token_spent_on_it: bool = False,
    ) -> None:
        super().__init__(message)
        self.device = device
        self.certificate_pem = certificate_pem
        self.token_spent_on_it = token_spent_on_it


class SequenceError(RegistryError):
    """A claim's sequence number does not advance past the device's last one."""


class AuthError(ProvenanceError):
    """A call lacks the admin credential or carries a wrong one."""


class ClaimError(ProvenanceError):
    """A claim is malformed or breaks a limit (metadata size, version, fields)."""


class DetectorError(ProvenanceError):
    """The detector cannot load its model or score an input."""


class DetectorTimeoutError(DetectorError):
    """The detector did not score an input within its deadline (a stuck device, a wedged
    worker, or more work than the deadline allows); the work was dropped, not retried."""


class WorkerError(ProvenanceError):
    """A worker process died while working (killed, out of memory): what it did is lost."""


class DecoderUnavailableError(WorkerError):
    """The server's video decoder process could not be started, or would not start a
    decode (an OSError spawning or talking to it): the server's fault, not the file's, so
    UNAVAILABLE; ``public`` names no server path, ``str(e)`` keeps the OSError for the
    server's log."""

    PUBLIC = "the server cannot decode video now; try again later"

    def __init__(self, message: str) -> None:
        super().__init__(message, public=self.PUBLIC)


class ConfigError(ProvenanceError):
    """Local configuration or state (paths, passphrases, settings) is missing or invalid."""


class TransportError(ProvenanceError):
    """The server could not be reached or answered with an error (client side).
    ``retry_after_s``: when the server said how long to wait before trying again;
    ``from_grpc``: the message is gRPC's own failure text, not a sentence our server
    wrote (for an operator's log rather than a web page's visitor); ``waited_s``: the
    client's own wait for the server ran out (DEADLINE_EXCEEDED) after this many seconds,
    the server saying nothing."""

    def __init__(
        self,
        message: str,
        code: str = "UNAVAILABLE",
        retry_after_s: float | None = None,
        *,
        from_grpc: bool = False,
        waited_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s
        self.from_grpc = from_grpc
        self.waited_s = waited_s


class DecodeBudgetError(MediaTooLargeError):
    """An image would need more memory to decode than the server's budget allows, a video
    more decoded pixels (`provenance.media.video.frames.MAX_SAMPLED_PIXELS`), a damaged
    video stream more time for its second, one-thread decode than its time limit leaves
    (`provenance.media.video.worker`), or a further decode of a video more time than the
    one limit of all of one request's decodes of it leaves
    (`provenance.media.video.decode.DecodeClock`), or an image is past one of the limits
    on its structure `provenance.media.image.decode_image` checks (JPEG scans and
    segments, PNG chunks and compressed text, GIF blocks)."""


class StructureLimitError(DecodeBudgetError):
    """An image past a limit on its structure that is a constant of this code, so every
    client and service of it holds the same one and no flag moves it (`prov serve
    --decode-budget-mb`, `--max-megapixels`, `--max-image-mb` do not): a JPEG's scans,
    marker segments, stray bytes or parsed metadata bytes, a PNG's chunks or compressed
    text, a GIF's blocks, a TIFF's strips or IFD entries (`provenance.media.image.
    decode_image`). A service refuses to judge such a file unless its exact bytes or
    its sidecar are logged, so `prov scan` does not send it to `prov verify`."""


class DecoderMemoryError(MediaTooLargeError):
    """A video decoder ran out of the memory its sandbox allows
    (`provenance.media.video.decode.DEFAULT_MAX_MEMORY_BYTES`)."""


class DecoderCrashError(MediaError):
    """A video decoding child ended by a signal it did not arm itself (SIGSEGV, SIGBUS,
    SIGABRT, ...): a decoder bug the file reached, or an allocation FFmpeg did not check
    failing under the child's address-space limit (``RLIMIT_AS``; seen in CI: SIGSEGV
    while keeping 16 frames' pixels of a 4K video under a 1.1 GB limit)."""


class LimitError(ProvenanceError):
    """A request exceeds a server limit on size, count, rate or concurrency (a busy
    server, a per-device quota, a reply too large): try again later or send less."""


class ForgeryPenaltyError(LimitError):
    """A client connection sent more submissions whose signatures did not verify than the
    server's budget allows (``prov serve --forgeries-per-minute``): its submissions are
    refused until ``retry_after_s`` seconds have passed (also in the message)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AuthPenaltyError(LimitError):
    """A client failed authentication (a wrong admin token, a refused enrollment) more
    often than the server's budget allows (``prov serve --auth-failures-per-minute``):
    its admin and Enroll calls are refused unchecked until ``retry_after_s`` seconds have
    passed (also in the message)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ReadRateError(LimitError):
    """A client made more device look-ups (GetDevice), or reads of the log, than the
    server's per-client rate allows (``prov serve --device-reads-per-minute``,
    ``--log-reads-per-minute``) and its next one would wait for its turn past the call's
    deadline: retry after ``retry_after_s`` seconds (also in the message)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BusyError(LimitError):
    """Every place for a kind of call (a Lookup) is taken by calls running and waiting:
    retry after ``retry_after_s`` seconds (also in the message)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UploadTimeoutError(LimitError):
    """An upload stream went idle, or ran past the server's per-upload deadline."""


class DeadlineError(LimitError):
    """A call ran past its time budget: the caller's deadline or the server's cap for that
    kind of call (a Lookup's ``--lookup-seconds``)."""


class IndexLoadingError(ProvenanceError):
    """The near-duplicate index is still loading at the server's start: a search of it now
    would scan every hash not yet in its tables; retry after ``retry_after_s`` seconds
    (also in the message)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WitnessError(LogError):
    """A witness refused a checkpoint (C2SP tlog-witness: a fork, a rollback, a bad
    proof) or could not be reached; or the server requests no cosignatures."""


class WitnessQuorumError(SignatureError):
    """Fewer witnesses than the policy's quorum cosigned the checkpoint of a receipt
    (C2SP tlog-cosignature); ``prov verify`` and ``prov receipt verify`` exit 14."""


class NoWitnessesError(WitnessQuorumError):
    """The server asked for its newest witness-cosigned checkpoint has no witnesses at
    all, so none is or will be cosigned: `prov receipt refresh` exits 14 (no cosigned
    checkpoint covers the receipt), saying so as what happened, not as a policy."""


class TimestampError(SignatureError):
    """An RFC 3161 timestamp could not be obtained from the timestamp authority, or a
    token does not verify (forged, over other bytes, from a TSA that is not trusted)."""


class LockWaitError(ProvenanceError):
    """Another process held a lock for longer than this command waits for it (the device
    folder's: `clients.devicelock`)."""
