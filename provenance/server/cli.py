"""`prov serve`: the gRPC server (and, with --http, the web page) on a SQLite file or a
PostgreSQL database. Registered on the `prov` app by clients/cli.py."""

from __future__ import annotations

import functools
import os
import signal
import stat
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec

import typer
from rich.text import Text

from provenance.cli.files import read_capped
from provenance.cli.openfiles import raise_open_files_limit
from provenance.cli.options import (
    MAX_WAIT_S,
    SIGNAL_POLL_S,
    MetricsAllowedHostsOpt,
    check_can_listen,
    check_distinct_listens,
    existing,
    finite,
    in_existing_folder,
    metrics_started,
    nonempty_file_path,
    stop_signals,
    trusted_proxies,
)
from provenance.cli.options import allowed_hosts as allowed_hosts_option
from provenance.core.errors import (
    ConfigError,
    ProvenanceError,
)
from provenance.core.files import file_kind
from provenance.core.keyhistory import check_admin_token
from provenance.terminal import SafeConsole, shown_line
from provenance.wire.contract import MAX_CLAIM_CHUNK_HASHES

if TYPE_CHECKING:  # imported when used: torch and the web stack load only on demand
    from detector.secret import SharedMeta
    from detector.serving import ServerDetector
    from provenance.c2pa.authority import Authority
    from provenance.media.assets import AssetLimits
    from provenance.server.rpc import AioServer
    from provenance.web.serve import WebServer

err = SafeConsole(stderr=True, soft_wrap=True)

#: ``--db`` of the in-memory store (`provenance.store.open_store`): it writes no file.
IN_MEMORY = ":memory:"

#: Exit status of `prov serve` stopped by SIGTERM while it starts: 128 + 15, as a shell
#: reports a process that SIGTERM ended (`prov scan`'s too); once started, SIGTERM shuts
#: it down cleanly with exit 0.
EXIT_TERMINATED = 143

P = ParamSpec("P")
#: Largest --admin-token-file read (a token, not a file named by mistake).
MAX_TOKEN_FILE_BYTES = 4096


#: `ServerLimits` fields and the `prov serve` flags that set them (a KiB flag's field is in
#: bytes, but its flag is declared min=0, so no byte value reaches a message)
_LIMIT_FLAGS = {
    "rpc_threads": "--rpc-threads",
    "max_uploads": "--max-uploads",
    "max_decodes": "--max-decodes",
    "decode_wait_s": "--decode-wait-seconds",
    "upload_idle_s": "--upload-idle-seconds",
    "upload_deadline_s": "--upload-deadline-seconds",
    "upload_min_rate": "--upload-min-rate-kb",
    "min_chunk_bytes": "--min-chunk-kb",
    "max_lookups": "--max-lookups",
    "max_lookup_queries": "--max-lookup-queries",
    "max_lookup_hashes": "--max-lookup-hashes",
    "lookup_s": "--lookup-seconds",
    "verify_search_s": "--verify-search-seconds",
    "quota_claims_per_minute": "--quota-claims-per-minute",
    "quota_bytes_per_minute": "--quota-claim-kb-per-minute",
    "forgeries_per_minute": "--forgeries-per-minute",
    "auth_failures_per_minute": "--auth-failures-per-minute",
    "device_reads_per_minute": "--device-reads-per-minute",
    "log_reads_per_minute": "--log-reads-per-minute",
    "max_pending_calls": "--max-pending-calls",
    "max_rpc_connections": "--max-rpc-connections",
    "connection_idle_s": "--connection-idle-seconds",
    "detector_timeout_s": "--detector-timeout",
}


def _load_ca(directory: Path, passphrase_file: Path | None) -> Authority:
    """The enrollment authority of ``--ca DIR``, its key decrypted with the passphrase
    from ``--ca-passphrase-file``, else $PROV_CA_PASSPHRASE, else a prompt in a terminal
    (asked only when the key is encrypted; a key written unencrypted loads as before).
    Raises typer.BadParameter (exit 2) when the key is encrypted and no passphrase can be
    had, the passphrase is wrong, or the folder holds no usable authority."""
    from provenance.c2pa.authority import authority_key_encrypted, load_authority
    from provenance.cli.options import UsageError
    from provenance.cli.passphrase import CA_PASSPHRASE_ENV, read_passphrase

    try:
        encrypted = authority_key_encrypted(directory)
    except ConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--ca") from None
    passphrase = None
    hint = "--ca"
    if encrypted:
        hint = "--ca-passphrase-file" if passphrase_file else f"${CA_PASSPHRASE_ENV}"
        try:
            passphrase = read_passphrase(
                env=CA_PASSPHRASE_ENV,
                what="the enrollment authority key",
                prompt="Enrollment authority key passphrase",
                file=passphrase_file,
                file_flag="--ca-passphrase-file",
            )
        except UsageError as e:
            raise UsageError(
                f"the enrollment authority key in {directory} is encrypted; {e.message}"
            ) from None
        hint = hint if passphrase_file or os.environ.get(CA_PASSPHRASE_ENV) else "the passphrase"
    elif passphrase_file is not None:
        raise typer.BadParameter(
            f"the enrollment authority key in {directory} is not encrypted: it needs no passphrase",
            param_hint="--ca-passphrase-file",
        )
    try:
        return load_authority(directory, passphrase)
    except ConfigError as e:  # a file of the folder, whatever the passphrase
        raise typer.BadParameter(str(e), param_hint="--ca") from None
    except ProvenanceError as e:
        raise typer.BadParameter(str(e), param_hint=hint) from None


def _forget_secrets() -> None:
    """Drop the secrets `prov serve` has read by now from its environment: the
    enrollment authority key's passphrase ($PROV_CA_PASSPHRASE) and the admin token
    ($PROV_ADMIN_TOKEN). The processes it starts next parse untrusted files (the C2PA
    reader workers, the video frame decoder) and are kept apart so that a bug in a
    parser cannot reach the server's secrets; they inherit this environment, and the
    passphrase with the key file (readable by the same user) is the authority itself."""
    from provenance.cli.passphrase import CA_PASSPHRASE_ENV

    for name in (CA_PASSPHRASE_ENV, "PROV_ADMIN_TOKEN"):
        os.environ.pop(name, None)


def _origin(value: str | None) -> str | None:
    """``value`` if it can name the log in its checkpoints (a signed-note key name of
    visible characters: `provenance.log.checkpoint.check_own_key_name`), or None (not
    given); else a usage error (exit 2), before the start begins. Typer callback of
    ``--origin``."""
    from provenance.log.checkpoint import check_own_key_name

    if value is None:
        return None
    try:
        check_own_key_name(value)
    except ProvenanceError as e:
        raise typer.BadParameter(f"{e}: the log's name in its checkpoints") from None
    return value


def _flag_named(message: str) -> str:
    """A `ServerLimits` ConfigError message ("max_uploads must be at least 1, got 0") with
    its field named by the flag the user typed ("--max-uploads must be ...")."""
    field, _, rest = message.partition(" ")
    return f"{_LIMIT_FLAGS[field]} {rest}" if field in _LIMIT_FLAGS else message


def _sigterm_stops_start(run: Callable[P, None]) -> Callable[P, None]:
    """`serve` with SIGTERM during its start (before "listening on", where its own
    handler takes over) stopping the start as Ctrl-C does: KeyboardInterrupt, so the
    start's own clean-up runs (a new SQLite database, its log key and detector secret
    are removed, as for any failed start), then "terminated (SIGTERM) while starting"
    and `EXIT_TERMINATED` (143). A second SIGTERM meanwhile is only noted, so that it
    cannot cut that clean-up short, and so is one while a Ctrl-C's KeyboardInterrupt is
    being handled (the clean-up of a start that Ctrl-C stopped: a SIGTERM raised there would leave
    the new database and log key behind under a line saying they were removed). A Ctrl-C
    after that SIGTERM is only noted too (its KeyboardInterrupt would cut the clean-up
    short the same way); SIGINT's handler is given back as the start ends. The signal's
    default action would end the process at once (-15), leaving a new database and log
    key half made. Off the main
    thread (where Python delivers no signals) it changes nothing."""

    @functools.wraps(run)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        if threading.current_thread() is not threading.main_thread():
            return run(*args, **kwargs)
        got: list[int] = []
        ctrl_c: list[int] = []  # Ctrl-Cs noted while a SIGTERM stops the start
        previous_int: list[Callable[[int, types.FrameType | None], object] | int | None] = []

        def on_int(signum: int, _frame: types.FrameType | None) -> None:
            ctrl_c.append(signum)

        def on_term(signum: int, _frame: types.FrameType | None) -> None:
            got.append(signum)
            if len(got) == 1:
                # from now on the line says the start's files are removed: a Ctrl-C
                # (its KeyboardInterrupt) must not cut their clean-up short either
                previous_int.append(signal.signal(signal.SIGINT, on_int))
            # not while a Ctrl-C's KeyboardInterrupt is handled: the start's clean-up
            if len(got) == 1 and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
                raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            run(*args, **kwargs)
        except KeyboardInterrupt:
            if not got:
                raise
            err.print(
                "terminated (SIGTERM) while starting: the server did not start, and a"
                " database or log key this start created is removed",
                highlight=False,
            )
            raise typer.Exit(EXIT_TERMINATED) from None
        finally:
            if signal.getsignal(signal.SIGTERM) is on_term:
                signal.signal(signal.SIGTERM, previous)
            if previous_int and signal.getsignal(signal.SIGINT) is on_int:
                signal.signal(signal.SIGINT, previous_int[0])

    return wrapper


@_sigterm_stops_start
def serve(
    db: Annotated[
        str,
        typer.Option(
            help="SQLite database file (created if missing; one server per file), or"
            " postgresql://USER@HOST:PORT/DB for a database several servers share (needs --log-key),"
            " or :memory: for a log kept in memory that writes no file (its log key too, unless"
            " --log-key names one)."
        ),
    ],
    listen: Annotated[
        str, typer.Option(help="Address to listen on, HOST:PORT (port 0 picks one).")
    ] = "127.0.0.1:50051",
    admin_token_file: Annotated[
        Path | None,
        typer.Option(
            help="File holding the admin token (else $PROV_ADMIN_TOKEN; else admin calls are refused).",
            callback=existing,
            dir_okay=False,
        ),
    ] = None,
    log_key: Annotated[
        Path | None,
        typer.Option(
            help="The log's Ed25519 private key (PEM, created on first start; every server of"
            " one log uses the same file). Default with a SQLite --db: DB.logkey.pem",
            parser=nonempty_file_path,
        ),
    ] = None,
    origin: Annotated[
        str | None,
        typer.Option(
            help="The log's name in its checkpoints (no spaces, no '+', no control or"
            " invisible characters), given at its first start. Default: the name the"
            " database holds, else media-provenance.local/log.",
            callback=_origin,
        ),
    ] = None,
    max_upload_mb: Annotated[
        int, typer.Option(help="Largest file accepted for verification, MiB.", min=1)
    ] = 2048,
    max_megapixels: Annotated[
        int, typer.Option(help="Largest image decoded, megapixels.", min=1)
    ] = 100,
    detector: Annotated[
        bool, typer.Option(help="Load the advisory detector (needs torch).")
    ] = True,
    detector_model: Annotated[
        str, typer.Option(help="Detector registry model (see `prov detector --help`).")
    ] = "default",
    detector_device: Annotated[
        str | None,
        typer.Option(help="Detector device: cpu, cuda, cuda:1 (default: CUDA if present)."),
    ] = None,
    detector_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds the detector may take to score one file (less if the call's"
            " deadline is sooner); past it the verdict is returned without a score, saying"
            " why, and the file's queued detector work is dropped.",
        ),
    ] = 30.0,
    fast_start: Annotated[
        bool,
        typer.Option(
            help="Skip re-hashing the entries appended since the last verified mark at start"
            " (the root is still checked)."
        ),
    ] = False,
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks one)."
        ),
    ] = None,
    metrics_allowed_hosts: MetricsAllowedHostsOpt = None,
    health_listen: Annotated[
        str | None,
        typer.Option(
            help="Also answer grpc.health.v1.Health (Check, Watch) alone on HOST:PORT, for a"
            " load balancer's probes: a flood of health checks on the service's port, or"
            " from the balancer's own address, cannot fail them there (port 0 picks one;"
            " keep it off the public network)."
        ),
    ] = None,
    full_check: Annotated[
        bool,
        typer.Option(
            help="Re-hash every log entry at start, not only those since the last verified mark."
        ),
    ] = False,
    ca: Annotated[
        Path | None,
        typer.Option(
            help="Enrollment authority folder (`prov admin ca init`): certify enrolled keys for C2PA export.",
            callback=existing,
            file_okay=False,
        ),
    ] = None,
    ca_passphrase_file: Annotated[
        Path | None,
        typer.Option(
            help="File holding the passphrase of the --ca authority's key when it is"
            " encrypted (default: $PROV_CA_PASSPHRASE, else prompted in a terminal).",
            dir_okay=False,
        ),
    ] = None,
    c2pa_trust_anchors: Annotated[
        Path | None,
        typer.Option(
            help="PEM bundle of C2PA trust anchors for verification (default: the --ca root, if any).",
            callback=existing,
            dir_okay=False,
        ),
    ] = None,
    c2pa_trust_config: Annotated[
        Path | None,
        typer.Option(
            help="Extra signer EKUs (one OID per line, c2pa-rs store.cfg format) accepted,"
            " beside the reader's defaults, for signers chaining to the C2PA trust anchors:"
            " --c2pa-trust-anchors, else the --ca root (one of them is needed).",
            callback=existing,
            dir_okay=False,
        ),
    ] = None,
    c2pa_workers: Annotated[
        int, typer.Option(help="Processes reading C2PA manifests (0: do not read C2PA).", min=0)
    ] = 2,
    tsa_trust_anchors: Annotated[
        Path | None,
        typer.Option(
            help="PEM bundle of the RFC 3161 timestamp authorities trusted to date C2PA"
            " signatures (`prov sign --c2pa --tsa-url`). Without it timestamps are reported"
            " as untrusted and the log receipt or the current time is used.",
            callback=existing,
            dir_okay=False,
        ),
    ] = None,
    max_image_mb: Annotated[
        int, typer.Option(help="Largest image file decoded, MiB (refused as it arrives).", min=1)
    ] = 256,
    decode_budget_mb: Annotated[
        int,
        typer.Option(
            help="Memory one image decode (pixels + PDQ) may use, MiB, estimated from the"
            " header: larger JPEGs are decoded at 1/2-1/8 scale, other formats refused.",
            min=1,
        ),
    ] = 384,
    rpc_threads: Annotated[int, typer.Option(help="Threads serving RPCs.")] = 32,
    max_uploads: Annotated[
        int,
        typer.Option(
            help="Uploads (VerifyFile, DetectFile) received at once; more are refused"
            " (RESOURCE_EXHAUSTED). At most --rpc-threads minus 4, so other calls always run."
        ),
    ] = 8,
    max_decodes: Annotated[
        int, typer.Option(help="Uploads decoded at once (pixels, video frames, C2PA).")
    ] = 2,
    decode_wait_seconds: Annotated[
        float, typer.Option(help="How long an upload waits for a decode slot before refusal.")
    ] = 10.0,
    upload_idle_seconds: Annotated[
        float, typer.Option(help="An upload silent this long is cut (DEADLINE_EXCEEDED).")
    ] = 30.0,
    upload_deadline_seconds: Annotated[
        float, typer.Option(help="An upload still arriving after this long is cut.")
    ] = 600.0,
    upload_min_rate_kb: Annotated[
        int,
        typer.Option(
            help="KiB/s an upload must average, after its first --upload-idle-seconds, to"
            " keep its slot when all --max-uploads are taken and another arrives; 0: none.",
            min=0,
        ),
    ] = 8,
    min_chunk_kb: Annotated[
        int,
        typer.Option(
            help="Smallest upload message but the last, KiB; also the smallest chunk of a"
            " sidecar's or embedded claim's chunked binding the server hashes chunk by"
            " chunk (whatever this says, never a file of more chunks than a claim can"
            f" list, {MAX_CLAIM_CHUNK_HASHES:,}).",
            min=0,
        ),
    ] = 64,
    max_lookups: Annotated[
        int,
        typer.Option(
            help="Lookup calls served at once, in their own threads outside --rpc-threads;"
            " as many more wait, each client address in turn; beyond that refused"
            " (RESOURCE_EXHAUSTED, retry in 1 s)."
        ),
    ] = 4,
    max_lookup_queries: Annotated[int, typer.Option(help="Files in one Lookup call.")] = 1000,
    max_lookup_hashes: Annotated[
        int, typer.Option(help="Perceptual hashes (video frames) in one Lookup call.")
    ] = 16384,
    lookup_seconds: Annotated[
        float,
        typer.Option(
            help="Longest a Lookup call may run (less if the caller's deadline is sooner);"
            " beyond it DEADLINE_EXCEEDED."
        ),
    ] = 30.0,
    verify_search_seconds: Annotated[
        float,
        typer.Option(
            help="Longest one VerifyFile's near-duplicate (PDQ) search may run (less if the"
            " caller's deadline is sooner); beyond it the verdict is given on the near copies"
            " found so far, marked near_search_cut. Exact and signature verdicts are not"
            " affected."
        ),
    ] = 5.0,
    quota_claims_per_minute: Annotated[
        int, typer.Option(help="Submissions accepted per device per minute (0: no quota).")
    ] = 600,
    quota_claim_kb_per_minute: Annotated[
        int,
        typer.Option(help="Signed-claim KiB accepted per device per minute (0: no quota).", min=0),
    ] = 32768,
    forgeries_per_minute: Annotated[
        int,
        typer.Option(
            help="Submissions with a signature that does not verify, or naming a device"
            " nobody enrolled, that one client (IPv4 address, IPv6 /64; all its"
            " connections) may send per minute (bursts up to a"
            " minute's worth); past it the client's submissions are refused unverified"
            " (RESOURCE_EXHAUSTED) until it has waited (0: no limit).",
        ),
    ] = 60,
    auth_failures_per_minute: Annotated[
        int,
        typer.Option(
            help="Failed authentications (admin calls with a wrong or missing admin token,"
            " refused enrollments, enrollments answered again: a replay of a logged one)"
            " one client (IPv4 address, IPv6 /64) may make per minute"
            " (bursts up to a minute's worth); past it the client's admin and Enroll calls"
            " are refused unchecked (RESOURCE_EXHAUSTED) until it has waited (0: no limit).",
        ),
    ] = 20,
    device_reads_per_minute: Annotated[
        int,
        typer.Option(
            help="Device look-ups (GetDevice) one client (IPv4 address, IPv6 /64) may make"
            " per minute (bursts up to a minute's worth); past it its look-ups wait their"
            " turn, and one that would wait past its deadline or 30 s is refused"
            " (RESOURCE_EXHAUSTED) (0: no limit).",
            min=0,
        ),
    ] = 6000,
    log_reads_per_minute: Annotated[
        int,
        typer.Option(
            help="Reads of the log (GetCheckpoint, GetInclusionProof, GetConsistencyProof,"
            " GetLogKey: one each; GetEntries: one per 200 entries asked for, a page of"
            " 1,000 five) one client (IPv4 address, IPv6 /64) may make per minute (bursts"
            " up to a minute's worth); past it its reads wait their turn, and one that"
            " would wait past its deadline or 30 s is refused (RESOURCE_EXHAUSTED)"
            " (0: no limit).",
            min=0,
        ),
    ] = 6000,
    max_pending_calls: Annotated[
        int,
        typer.Option(
            help="Calls of one method arrived and not yet taken up that grpc core keeps"
            " (about 11 KiB each, more for large requests); past it grpc drops calls"
            " (CANCELLED)."
        ),
    ] = 10000,
    max_rpc_connections: Annotated[
        int,
        typer.Option(
            help="Client connections held open at once, on the gRPC port and on the"
            " health port each; more are closed when accepted (UNAVAILABLE). A connection"
            " can hold 2,048 calls waiting for their request, about 42 MiB: the worst"
            " case is this many times 42 MiB."
        ),
    ] = 1000,
    connection_idle_seconds: Annotated[
        float,
        typer.Option(
            help="Seconds a client connection may go with no call open (up to 10% more)"
            " before the server closes it (GOAWAY); a client reconnects at its next call."
        ),
    ] = 600.0,  # provenance.server.limits.CONNECTION_IDLE_S (not imported for --help)
    max_queued_claims: Annotated[
        int,
        typer.Option(
            help="Submissions the log's writer holds at most, queued or being written (a"
            " few KiB each); past it new captures are refused (UNAVAILABLE), as they pile"
            " up while the database cannot be reached. A capture sent again while held"
            " joins it.",
            min=1,
        ),
    ] = 20_000,  # provenance.server.writer.MAX_HELD (not imported for --help)
    db_connect_wait: Annotated[
        float,
        typer.Option(
            help="With a PostgreSQL --db: seconds a database call waits for a pooled"
            " connection while the database cannot be reached (the pool reconnecting"
            " meanwhile) before it fails; the log's writer and the device key reads try"
            " again within the call's deadline.",
            min=0.1,
            max=600.0,  # provenance.store.postgres.CONNECTION_WAIT_MAX_S
            callback=finite,
            metavar="SECONDS",
        ),
    ] = 30.0,  # provenance.store.postgres.CONNECTION_WAIT_S
    db_answer_wait: Annotated[
        float,
        typer.Option(
            help="With a PostgreSQL --db: seconds a database call waits for a lock another"
            " session holds on the log's tables (a LOCK TABLE, VACUUM FULL or ALTER TABLE;"
            " PostgreSQL's lock_timeout, unless the URL sets its own), and a statement, a"
            " read's or a write's, for the database's answer (2 s more: a database server"
            " stopped but still connected). Past it the captures waiting are answered"
            ' UNAVAILABLE, "the log database did not answer in N s; nothing was logged: send'
            ' it again", the server reports itself not serving on its health checks, and'
            " the next capture tries again; a read (Lookup, VerifyFile, the log's entries"
            ' and proofs) is answered UNAVAILABLE, "...; try again", and the log\'s'
            " checkpoint from the server's memory (the newest it holds); once the server's"
            " probe knows the database does not answer, such reads are answered at once,"
            ' "the log database is not answering now; try again".',
            min=0.5,  # provenance.store.postgres.ANSWER_WAIT_MIN_S
            max=600.0,  # provenance.store.postgres.ANSWER_WAIT_MAX_S
            callback=finite,
            metavar="SECONDS",
        ),
    ] = 10.0,  # provenance.store.postgres.ANSWER_WAIT_S
    submit_wait: Annotated[
        float,
        typer.Option(
            help="Seconds a capture's call that carries no deadline waits for the log to"
            ' confirm it before it is answered UNAVAILABLE, "not confirmed ... submit it'
            ' again"; a call with a deadline is answered so a second before it (a tenth'
            " of it under 10 s). The log's writer keeps the capture, and its device's"
            " quota room, until it is logged or refused. Lower it when the devices or a"
            " proxy in front give up on calls sent without a deadline sooner.",
            min=0.1,  # provenance.server.service.SUBMIT_WAIT_MIN_S
            max=600.0,  # provenance.server.service.SUBMIT_WAIT_MAX_S
            callback=finite,
            metavar="SECONDS",
        ),
    ] = 30.0,  # provenance.server.service.SUBMIT_WAIT_S
    http: Annotated[
        str | None,
        typer.Option(
            help="Also serve the web page, log explorer and HTTP API on HOST:PORT (as `prov"
            " web`), its uploads under --max-upload-mb, --upload-idle-seconds and"
            " --upload-min-rate-kb as the service's, and the options below."
        ),
    ] = None,
    uploads_per_minute: Annotated[
        int,
        typer.Option(
            help="With --http: uploads each client address may start a minute on the page"
            " (0: no limit), as `prov web`'s.",
            min=0,
        ),
    ] = 30,
    header_seconds: Annotated[
        float,
        typer.Option(
            help="With --http: close a page connection whose request line and headers have"
            " not all arrived within this many seconds (408 if part came), as `prov web`'s.",
            min=0.1,
            callback=finite,
        ),
    ] = 10.0,
    connections_per_client: Annotated[
        int,
        typer.Option(
            help="With --http: page connections one client (IPv4 address, IPv6 /64) may"
            " hold open; more get 503. As `prov web`'s.",
            min=1,
        ),
    ] = 32,
    max_connections: Annotated[
        int,
        typer.Option(
            help="With --http: page connections open at once in all; more get 503. As"
            " `prov web`'s.",
            min=1,
        ),
    ] = 256,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            help="With --http: a reverse proxy (IP address or CIDR network; repeat) whose"
            " X-Forwarded-For names the page's client, as `prov web`'s.",
            callback=trusted_proxies,
            metavar="ADDRESS",
        ),
    ] = None,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(
            help="With --http: Host names the page answers besides IP addresses, localhost"
            " and the name it is bound to or this machine's name (comma-separated; '*': every"
            " name); others get 421, as `prov web`'s.",
            callback=allowed_hosts_option,
            metavar="NAMES",
        ),
    ] = None,
    witness: Annotated[
        list[str] | None,
        typer.Option(
            help="A witness to ask for cosignatures after each commit, URL=KEY (repeat):"
            " its http(s) prefix and its cosigner key NAME+ID+KEY as `prov witness serve`"
            " prints it (text or a file). C2SP tlog-witness.",
            metavar="URL=KEY",
        ),
    ] = None,
    witness_quorum: Annotated[
        int,
        typer.Option(
            help=(
                "Cosignatures a checkpoint needs to be published as cosigned (0: all"
                " --witness; at most 15, the lines a published checkpoint carries)."
            ),
            min=0,
        ),
    ] = 0,
    witness_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a witness may take to answer.", min=0.1, max=MAX_WAIT_S, callback=finite
        ),
    ] = 5.0,
    witness_interval_ms: Annotated[
        int,
        typer.Option(
            help="Least time between two cosigning rounds, ms (commits in between coalesce).",
            min=0,
            max=int(MAX_WAIT_S * 1000),
        ),
    ] = 0,
) -> None:
    """Run the gRPC server until SIGINT/SIGTERM, on a SQLite file (one server) or a
    PostgreSQL database (several servers, one log; see docs/deploy.md).

    Every request has a bounded cost: the limits below are listed, with their gRPC
    status codes, in the README's "Limits and errors" table.

    An address it cannot listen on is refused before anything is created (exit 2 for
    one that is not HOST:PORT, a host name that does not exist, a --listen or
    --health-listen host gRPC does not read such as 0 or 127.1, or two of --listen,
    --http, --metrics-listen and --health-listen on one port; 1 for one in use or not
    this machine's), as are a file or
    folder option naming nothing and a bad --witness (exit 2); a start that
    fails later removes the files it created itself (a new SQLite database, its log key
    and detector secret), never another server's, and leaves the database's lock file
    (harmless, and another server may hold it).
    """
    # before any file is created or anything slow is loaded
    check_distinct_listens(
        {
            "--listen": listen,
            "--metrics-listen": metrics_listen,
            "--health-listen": health_listen,
            "--http": http,
        }
    )
    check_can_listen(listen, "--listen", grpc=True)
    if metrics_listen is not None:
        check_can_listen(metrics_listen, "--metrics-listen")
    if health_listen is not None:
        check_can_listen(health_listen, "--health-listen", grpc=True)
    if http is not None:
        check_can_listen(http, "--http")
    if c2pa_trust_config is not None and c2pa_trust_anchors is None and ca is None:
        raise typer.BadParameter(
            "it lists extra signer EKUs for the C2PA trust anchors, and there are none: add"
            " --c2pa-trust-anchors PEM (or --ca DIR, whose root is then the anchor)",
            param_hint="--c2pa-trust-config",
        )
    from provenance.c2pa.pool import ReaderPool
    from provenance.c2pa.reader import C2paTrust, read_trust_config, with_tsa_roots
    from provenance.c2pa.signing_time import SigningTimePolicy
    from provenance.c2pa.timestamp import TsaTrust
    from provenance.core.ports import parse_allowed_hosts
    from provenance.log.checkpoint import DEFAULT_KEY_SUFFIX
    from provenance.media.assets import AssetLimits
    from provenance.media.inspect import InspectConfig
    from provenance.media.video.decode import start_decoder
    from provenance.metrics import serve_metrics
    from provenance.server.allocator import collect_cycles_rarely, keep_freed_memory
    from provenance.server.limits import ServerLimits
    from provenance.server.rpc import ServerConfig, create_server
    from provenance.server.service import ProvenanceService, ServiceConfig
    from provenance.store import is_postgres_url
    from provenance.witness.client import MAX_PUBLISHED_LINES, parse_witness_option

    try:  # usage errors (exit 2), as the same options of the clients'
        witnesses = tuple(parse_witness_option(w) for w in witness or [])
    except ConfigError as e:
        raise typer.BadParameter(str(e).removeprefix("--witness "), param_hint="--witness") from e
    if witness_quorum > len(witnesses):
        raise typer.BadParameter(
            f"{witness_quorum} is more than the {len(witnesses)} --witness given",
            param_hint="--witness-quorum",
        )
    if (witness_quorum or len(witnesses)) > MAX_PUBLISHED_LINES:
        raise typer.BadParameter(
            f"{witness_quorum or len(witnesses)} cosignatures"
            f"{'' if witness_quorum else ' (all --witness given)'} is more than a cosigned"
            f" checkpoint can show: at most {MAX_PUBLISHED_LINES} (a C2SP signed-note"
            " verifier need accept only 16 signatures, and one is the log's); give"
            f" --witness-quorum {MAX_PUBLISHED_LINES} or less",
            param_hint="--witness-quorum",
        )
    authority = _load_ca(ca, ca_passphrase_file) if ca is not None else None
    keep_freed_memory()  # upload buffers reused instead of faulted in again
    raise_open_files_limit()  # a descriptor per client connection
    try:
        limits = ServerLimits(
            rpc_threads=rpc_threads,
            max_uploads=max_uploads,
            max_decodes=max_decodes,
            decode_wait_s=decode_wait_seconds,
            upload_idle_s=upload_idle_seconds,
            upload_deadline_s=upload_deadline_seconds,
            upload_min_rate=upload_min_rate_kb * 1024,
            min_chunk_bytes=min_chunk_kb * 1024,
            max_lookups=max_lookups,
            max_lookup_queries=max_lookup_queries,
            max_lookup_hashes=max_lookup_hashes,
            lookup_s=lookup_seconds,
            verify_search_s=verify_search_seconds,
            quota_claims_per_minute=quota_claims_per_minute,
            quota_bytes_per_minute=quota_claim_kb_per_minute * 1024,
            forgeries_per_minute=forgeries_per_minute,
            auth_failures_per_minute=auth_failures_per_minute,
            device_reads_per_minute=device_reads_per_minute,
            log_reads_per_minute=log_reads_per_minute,
            max_pending_calls=max_pending_calls,
            max_rpc_connections=max_rpc_connections,
            connection_idle_s=connection_idle_seconds,
            detector_timeout_s=detector_timeout,
        )
    except ConfigError as e:  # a flag's value out of range: a usage error (exit 2)
        raise typer.BadParameter(_flag_named(str(e))) from e
    if log_key is not None:
        if log_key.is_dir():  # before: '.' and '/' ended in a traceback (no file name)
            raise typer.BadParameter(
                f"{log_key} is a folder; name the log's key file (created on first start),"
                f" e.g. --log-key {log_key / 'log.pem'}",
                param_hint="--log-key",
            )
        in_existing_folder(log_key, "--log-key")
    token = os.environ.get("PROV_ADMIN_TOKEN")
    if admin_token_file is not None:
        # bytes that are not UTF-8 are refused below (not visible ASCII), never shown
        raw = read_capped(admin_token_file, MAX_TOKEN_FILE_BYTES, "admin token file")
        token = raw.decode(errors="surrogateescape").strip()
    if not token:
        err.print(
            Text.assemble(
                ("warning:", "yellow"),
                " no admin token configured: enrollment tokens and revocations are refused"
                " (start it with $PROV_ADMIN_TOKEN or --admin-token-file FILE)",
            )
        )
    else:
        try:
            check_admin_token(token)
        except ConfigError as e:
            raise typer.BadParameter(
                str(e),
                param_hint="--admin-token-file" if admin_token_file else "$PROV_ADMIN_TOKEN",
            ) from None
    if is_postgres_url(db):
        if log_key is None:
            raise typer.BadParameter(
                "none given, and it is required with a PostgreSQL --db: every server of"
                " the log signs with the same key file",
                param_hint="--log-key",
            )
        target: str | Path = db
    elif db == IN_MEMORY:
        target = db
    else:
        target = in_existing_folder(Path(db), "--db", through_link=True)
        if target.is_dir():  # `--db .` raised a ValueError traceback; `--db DIR` SQLite's error
            raise typer.BadParameter(
                f"{db} is a folder; name the SQLite database file (created if missing),"
                f" e.g. --db {target / 'provenance.db'}",
                param_hint="--db",
            )
        try:
            mode = target.stat().st_mode
        except OSError:  # not there yet (created), or SQLite's open says why not
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            # a FIFO held SQLite's open for good, deaf to SIGTERM and Ctrl-C; a device
            # (a link to one) was written to by SQLite, then a traceback
            raise typer.BadParameter(
                f"{db} is {file_kind(mode)}, not a database file; name the SQLite"
                " database file (created if missing), e.g. --db provenance.db",
                param_hint="--db",
            )
    key_file: Path | None
    secret_file: Path | None
    if target == IN_MEMORY:
        # nothing on disk for a store that keeps nothing: the log key (unless --log-key
        # names a file) and the detector's crop secret are drawn at start, in memory
        key_file, secret_file = log_key, None
    else:
        key_file = log_key or Path(db).with_name(Path(db).name + DEFAULT_KEY_SUFFIX)
        # The crop secret lives beside the database (SQLite) or the shared log key
        # (PostgreSQL).
        beside = Path(db) if isinstance(target, Path) else Path(log_key or "")
        secret_file = beside.with_name(beside.name + ".detector-secret")
    # A start that fails removes only what it created itself, decided and done while it
    # holds the database's lock (the service, for the database, log key and memo; here,
    # for the crop secret): a start refused at the lock, or one that fails on a database
    # another server made or shares, removes nothing of theirs.
    service: ProvenanceService | None = None
    pool: ReaderPool | None = None
    server: AioServer | None = None
    web: WebServer | None = None
    made_secret = False
    # the handler only appends: it runs in this thread between two bytecodes, also while
    # this thread holds a lock, and one that set a threading.Event waited on here could
    # block for good on the Event's own lock (`serve_until_signalled`, prov web's twin)
    signals: list[int] = []
    try:
        service = ProvenanceService(
            ServiceConfig(
                db=target,
                log_key=key_file,
                origin=origin,
                verify_on_start=not fast_start,
                authority=authority,
                full_check=full_check,
                admin_token=token or None,
                witnesses=witnesses,
                witness_quorum=witness_quorum,
                witness_timeout_s=witness_timeout,
                witness_interval_s=witness_interval_ms / 1000,
                max_queued_claims=max_queued_claims,
                db_connect_wait_s=db_connect_wait,
                db_answer_wait_s=db_answer_wait,
                submit_wait_s=submit_wait,
            )
        )
        trust = None
        if c2pa_trust_anchors is not None:
            trust = C2paTrust.from_files(c2pa_trust_anchors, c2pa_trust_config)
        elif service.authority is not None:
            trust = C2paTrust(
                service.authority.certificate_pem, read_trust_config(c2pa_trust_config)
            )
        tsa_trust = TsaTrust.from_file(tsa_trust_anchors) if tsa_trust_anchors else None
        trust = with_tsa_roots(trust, tsa_trust)
        signing_time = SigningTimePolicy(tsa_trust=tsa_trust, log_verifier=service.verifier)
        _forget_secrets()  # before the first child: the reader workers, the decoder
        pool = ReaderPool(workers=c2pa_workers) if c2pa_workers > 0 else None
        start_decoder()  # the video decoder process, imports done before the first upload
        # a SQLite database's secret, absent while this start holds its lock, is this
        # start's to remove; one beside a shared (PostgreSQL) log key may be another's
        made_secret = (
            detector
            and secret_file is not None
            and not service.store.shared
            and not os.path.lexists(secret_file)
        )
        det = (
            _load_detector(
                detector_model,
                detector_device,
                secret_file,
                service.store if service.store.shared else None,
            )
            if detector
            else None
        )
        config = ServerConfig(
            admin_token=token,
            inspect=InspectConfig(
                limits=AssetLimits(
                    max_bytes=max_upload_mb * 1024 * 1024,
                    max_image_bytes=max_image_mb * 1024 * 1024,
                    max_pixels=max_megapixels * 1_000_000,
                    max_decode_bytes=decode_budget_mb * 1024 * 1024,
                ),
                c2pa_pool=pool,
                c2pa_trust=trust,
                c2pa_signing_time=signing_time,
                min_chunk_bytes=limits.min_chunk_bytes,
            ),
            detector=det,
            limits=limits,
        )
        metrics_port = (
            serve_metrics(
                metrics_listen,
                allowed=parse_allowed_hosts(metrics_allowed_hosts) if metrics_allowed_hosts else (),
            )
            if metrics_listen is not None
            else None
        )
        server, port = create_server(listen, service, config, health_listen)
        host = listen.rsplit(":", 1)[0]
        try:  # the web app last: a failure here (its port taken since the check) ends it all
            web = (
                _start_web(
                    http,
                    host,
                    port,
                    max_upload_mb=max_upload_mb,
                    uploads_per_minute=uploads_per_minute,
                    upload_idle_seconds=upload_idle_seconds,
                    upload_min_rate_kb=upload_min_rate_kb,
                    header_seconds=header_seconds,
                    connections_per_client=connections_per_client,
                    max_connections=max_connections,
                    trusted_proxy=trusted_proxy or [],
                    allowed_hosts=allowed_hosts,
                    image_limits=config.inspect.limits,
                )
                if http
                else None
            )
        except BaseException:
            server.stop(grace=None)
            server = None
            raise
        collect_cycles_rarely()  # the started server's heap frozen; young collections rarer
        # the start's last step: a SIGINT or SIGTERM before it (during the heap's
        # collection too) stops the start, removing what it made (before, one there came
        # outside this clean-up: the new database and log key were left); one after
        # stops the started server (below)
        for sig in stop_signals():  # SIGINT left ignored in a shell's background job
            signal.signal(sig, lambda signum, _frame: signals.append(signum))
    except BaseException:
        if web is not None:
            web.stop()
        if server is not None:  # no call in flight on the files removed below
            server.stop(grace=None).wait()
        if pool is not None:
            pool.close()
        if service is not None:  # (a failed ProvenanceService removed its files itself)
            if made_secret and secret_file is not None:
                secret_file.unlink(missing_ok=True)  # the database's lock still held
            service.discard()
        raise
    print(f"listening on {host}:{port}", flush=True)
    # escaped: a log named before its name was held to check_own_key_name may hold a
    # bidirectional override (the spec allows it), which would turn the rest of the line
    print(f"log key: {shown_line(service.signer.verifier_key())}", flush=True)
    for w in witnesses:
        print(f"witness {shown_line(w.name)} at {w.url}", flush=True)
    if metrics_port is not None and metrics_listen is not None:
        print(metrics_started(metrics_listen, metrics_port, metrics_allowed_hosts), flush=True)
    if web is not None:
        print(f"web on http://{web.address}", flush=True)
        print(web.hosts_line, flush=True)
    if health_listen is not None:
        print(f"health on {health_listen.rsplit(':', 1)[0]}:{server.health_port}", flush=True)
    while not signals:
        time.sleep(SIGNAL_POLL_S)
    print("shutting down", flush=True)
    service.stopping()  # the upkeep's and writer's waits overlap the calls' grace
    if web is not None:
        web.stop()
    server.stop(grace=5).wait()
    service.close()
    if pool is not None:
        pool.close()


def _start_web(
    listen: str,
    grpc_host: str,
    grpc_port: int,
    *,
    max_upload_mb: int,
    uploads_per_minute: int,
    upload_idle_seconds: float,
    upload_min_rate_kb: int,
    header_seconds: float,
    connections_per_client: int,
    max_connections: int,
    trusted_proxy: list[str],
    allowed_hosts: str | None = None,
    image_limits: AssetLimits | None = None,
) -> WebServer:
    """`prov serve --http`: the web app in a thread, a client of this process's gRPC port,
    under the limits `prov web` takes as flags of the same names: this server's
    --max-upload-mb, --upload-idle-seconds (the page's idle window, as the service's
    streams': before, the page kept `prov web`'s 60 s whatever the flag said) and
    --upload-min-rate-kb (its relay slots' pace, `provenance.web.upload.Relayer`), and the
    page's own --uploads-per-minute, --header-seconds, --connections-per-client,
    --max-connections and --trusted-proxy (`provenance.web.guard.HttpLimits`) and
    --allowed-hosts (`provenance.web.security.AllowedHosts`), and this server's image
    limits (``image_limits``: --max-megapixels, --max-image-mb, --decode-budget-mb),
    within which the page decodes a near copy's upload to check its answer. Raises
    ConfigError when ``listen`` cannot be bound."""
    from provenance.core.ports import parse_allowed_hosts, parse_trusted_proxy
    from provenance.web.app import WebConfig
    from provenance.web.guard import HttpLimits
    from provenance.web.serve import start_web

    local = "127.0.0.1" if grpc_host in ("0.0.0.0", "", "[::]") else grpc_host
    return start_web(
        listen,
        WebConfig(
            f"{local}:{grpc_port}",
            max_upload_bytes=max_upload_mb * 1024 * 1024,
            uploads_per_minute=uploads_per_minute,
            upload_idle_seconds=upload_idle_seconds,
            upload_cut_rate=upload_min_rate_kb * 1024,
            allowed_hosts=parse_allowed_hosts(allowed_hosts) if allowed_hosts else (),
            image_limits=image_limits,
        ),
        HttpLimits(
            header_seconds=header_seconds,
            per_client=connections_per_client,
            max_connections=max_connections,
            trusted_proxies=tuple(parse_trusted_proxy(p) for p in trusted_proxy),
        ),
    )


def _load_detector(
    model: str,
    device: str | None,
    secret_file: Path | None,
    shared_meta: SharedMeta | None = None,
) -> ServerDetector | None:
    """The server's detector, or None (with a notice) when torch or the weights are missing.
    Its crop secret lives in secret_file (created on first start, mode 0600); None: a
    random secret for this process. shared_meta: a shared database's store, whose meta table
    keeps the secret of all its servers (`detector.secret.shared_secret`; secret_file,
    where it exists, seeds it).

    Raises DetectorError when the secret cannot be read or created or is damaged (short,
    open to others, not a regular file): the operator's file to mend, so the start ends
    naming it (before: the server ran with its detector off behind a note, and a FIFO
    there held the start for good)."""
    # the secret first: a damaged one refuses the start before torch loads (seconds)
    from detector.secret import load_or_create_secret, shared_secret

    secret: bytes | None = None
    if shared_meta is not None:
        secret = shared_secret(shared_meta, secret_file)
    elif secret_file is not None:
        secret = load_or_create_secret(secret_file)
    try:
        from detector.serving import server_detector
    except ImportError as e:
        _no_detector(e)
        return None
    try:
        return server_detector(model, device, secret=secret)
    except (ImportError, ProvenanceError) as e:
        _no_detector(e)
        return None


def _no_detector(e: Exception) -> None:
    """Say that the detector is not loaded, and why (`_load_detector`)."""
    err.print(
        Text.assemble(("note:", "yellow"), f" detector not loaded ({e}); reports will say so")
    )
