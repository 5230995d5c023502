"""The log server's side of C2SP tlog-witness: ask witnesses to cosign new checkpoints.

`Cosigner` runs beside the group-commit writer. The writer hands it each new signed
checkpoint (`Cosigner.submit`, O(1), never blocks: a newer checkpoint replaces one not
yet sent, so batches committed while a round is in flight coalesce). A background
thread runs rounds: it sends the newest checkpoint to every witness at once
(``POST <url>/add-checkpoint``, c2sp.org/tlog-witness), with ``old <size>`` the size the
witness last cosigned for us and an RFC 9162 consistency proof from that size. When a
witness answers 409 Conflict with its own size (``text/x.tlog.size``), the request is
sent again once, from that size. Each cosignature line is verified against the
witness's key (c2sp.org/tlog-cosignature) before it is kept; as soon as ``quorum``
witnesses cosigned one checkpoint, the note with their lines appended becomes the
newest cosigned checkpoint (`Cosigner.cosigned`).

Outages: every request has a timeout; a witness that fails (unreachable, timeout, 5xx)
or refuses (4xx: a fork, a rollback, a proof that does not verify) is retried with
exponential backoff (0.5 s doubling up to ``max_backoff_s``) and skipped until then, so
one dead witness delays no round more than one timeout per backoff period and never the
writer. Each change of a witness's health is logged once (a refusal as an error: it
means a fork or a rollback), and counted in ``prov_witness_requests_total{witness,
outcome}``.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import http.client
import ipaddress
import logging
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from provenance import metrics
from provenance.cli.cutoff import Cutoff
from provenance.cli.files import open_regular
from provenance.cli.urls import PREFIX, url_problem, url_refusal
from provenance.core.errors import ConfigError, LogError, ProvenanceError, WitnessError
from provenance.core.files import file_kind
from provenance.core.networds import OverBudget, metered_connection
from provenance.log.checkpoint import parse_tree_size
from provenance.terminal import clipped_line, quoted, shown_line
from provenance.witness import (
    SIZE_CONTENT_TYPE,
    WitnessStatus,
    check_policy,
    parse_cosigner_vkey,
    verify_cosignature,
)

log = logging.getLogger(__name__)

#: Most cosignature lines a published checkpoint carries: c2sp.org/signed-note
#: "Format": verifiers "MUST accept at least up to 16 signatures", and the log's own
#: signature is one of them. So the quorum is at most this too.
MAX_PUBLISHED_LINES = 15

#: Seconds a witness may take to answer one request.
DEFAULT_TIMEOUT_S = 5.0
#: Longest wait before a failing witness is tried again, seconds.
MAX_BACKOFF_S = 30.0
_FIRST_BACKOFF_S = 0.5
#: Longest single wait on a condition, seconds (`Cosigner._wait_until` waits in such
#: steps): far below ``threading.TIMEOUT_MAX``, past which a wait raises OverflowError.
_LONGEST_WAIT_S = 3600.0

#: The most of a witness's answer read (bytes). A tlog-witness add-checkpoint answer is
#: a few cosignature lines of ~100 bytes, a tree size, or a short error text; a longer
#: one is refused, and its connection dropped so its unread rest is not read as the next
#: answer (c2sp.org/tlog-witness).
MAX_ANSWER_BYTES = 64 * 1024

#: Characters of a witness's answer a status or log line repeats (escaped: `clipped_line`).
SHOWN_ANSWER_CHARS = 300


@dataclass(frozen=True)
class WitnessSpec:
    """One witness of the policy: its URL prefix (``http(s)://HOST:PORT[/PATH]``; requests
    go to ``<url>/add-checkpoint``) and its cosigner verifier key ``NAME+ID+KEY``."""

    url: str
    vkey: str

    @property
    def name(self) -> str:
        """The witness's name (the first part of its key)."""
        return self.vkey.split("+", 1)[0]


#: The most bytes of a key file read (a verifier key is one line of about 100 bytes; a
#: file over this is no key file, and is not read whole).
MAX_KEY_FILE_BYTES = 16 * 1024


def names_a_file(path: Path) -> bool:
    """Whether ``path`` is a regular file; False for text that cannot be a file name
    (too long for one, or holding a NUL: an inline key, or garbage for the key's own
    checks to refuse). Raises OSError when it cannot be told."""
    try:
        return path.is_file()
    except ValueError:  # an embedded NUL
        return False
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            return False
        raise


def _kind_not_regular(path: Path) -> str | None:
    """What is at ``path`` in words ("a FIFO (named pipe)", "a device", "a folder":
    `file_kind`) when something is there but no regular file, judged by ``stat`` (a
    symbolic link by what it leads to; nothing opened); None when nothing is there, it is
    a regular file, or it cannot be told (text that is no file name: an inline key)."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None
    return None if stat.S_ISREG(mode) else file_kind(mode)


def read_key_text(value: str, what: str = "key") -> str:
    """A key given inline, or the stripped contents of the file ``value`` names. Raises
    ConfigError when that file cannot be read, is not UTF-8, or is over
    `MAX_KEY_FILE_BYTES`; the message quotes none of its text (a mistyped path may name a
    file of secrets), and of ``value`` only its start, escaped (`clipped_line`): a value
    too long to be a file name is taken for an inline key (before: 'cannot read the key
    file' repeated all of a megabyte given). ConfigError too when ``value`` names a FIFO,
    a device or a folder: "PATH is a FIFO (named pipe), not a file holding a WHAT"
    (``what``: the key named, e.g. "log verifier key"), nothing opened (before: taken for
    an inline key, then refused as no key nor a file holding one); a regular file is read
    through `open_regular` (a FIFO swapped in meanwhile is refused, not waited on)."""
    path = Path(value)
    shown = clipped_line(value, 200)
    if value and (kind := _kind_not_regular(path)):  # Path("") is ".": no folder named
        raise ConfigError(f"{shown} is {kind}, not a file holding a {what}")
    try:
        if names_a_file(path):
            with open_regular(path, ConfigError) as f:
                data = f.read(MAX_KEY_FILE_BYTES + 1)
            if len(data) > MAX_KEY_FILE_BYTES:
                raise ConfigError(
                    f"the key file {shown} is over {MAX_KEY_FILE_BYTES // 1024} KiB: a key"
                    " is one line of about 100 bytes"
                )
            return data.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else "not UTF-8 text"
        raise ConfigError(f"cannot read the key file {shown}: {why}") from e
    return value.strip()


_EXAMPLE = "e.g. http://127.0.0.1:8090=NAME+ID+KEY"


def parse_witness_option(value: str) -> WitnessSpec:
    """Parse ``prov serve --witness URL=KEY``: KEY is the witness's cosigner verifier key
    as ``prov witness serve`` prints it (``witness key NAME+ID+KEY``), inline or in a file.
    URL is a witness's URL prefix as `parse_witness_url` takes it (`provenance.cli.urls`:
    http(s), at most 1,024 characters of printable ASCII, no query, fragment or user
    name), without its trailing slashes.

    Raises ConfigError naming what is wrong (no ``=`` or no URL before it, a URL
    `provenance.cli.urls.url_problem` refuses, a bad key), quoting at most the start of
    what was given. The witness's name is its operator's: taken as c2sp.org/signed-note
    allows (a name with a control or invisible character is shown escaped,
    `provenance.terminal.shown_line`)."""
    url, sep, key = value.partition("=")
    if not sep or not url:
        raise ConfigError(f"--witness {quoted(value)} is not URL=KEY ({_EXAMPLE})")
    url = parse_witness_url(url, "--witness")
    vkey = read_key_text(key)
    try:
        parse_cosigner_vkey(vkey)
    except LogError as e:
        raise ConfigError(f"--witness {url}: {e}") from e
    return WitnessSpec(url, vkey)


def parse_witness_url(value: str, option: str = "--witness-url") -> str:
    """Parse a ``--witness-url URL`` of `prov verify`/`prov receipt refresh` (and the URL
    of `prov serve --witness URL=KEY`, ``option`` naming the flag): a witness's URL prefix
    (``http(s)://HOST:PORT[/PATH]``), without its trailing slashes. The witness is asked
    at ``<prefix>/add-checkpoint`` and ``<prefix>/<origin hash>/checkpoint``
    (c2sp.org/tlog-witness), so the prefix holds no query or fragment
    (`provenance.cli.urls.PREFIX`). Raises ConfigError "OPTION 'URL': WHY"
    (`provenance.cli.urls.url_problem`)."""
    if problem := url_problem(value, PREFIX):
        raise ConfigError(f"{option} {url_refusal(value, problem)}")
    return value.rstrip("/")


def distinct_witness_urls(urls: list[str]) -> list[str]:
    """``urls`` (`parse_witness_url` prefixes) less those naming a witness given before:
    the scheme and host compared in any case, an IPv6 address in any of its spellings
    (``[::1]``, ``[0:0:0:0:0:0:0:1]``), the default port (80, 443) written or not; the
    path as it is (case-sensitive). Each kept as first given, in order."""
    seen: set[tuple[str, str, int, str]] = set()
    kept: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or (443 if scheme == "https" else 80)
        host = (parts.hostname or "").lower()
        if ":" in host:  # `parse_witness_url` took it: an IPv6 address
            host = str(ipaddress.IPv6Address(host))
        key = (scheme, host, port, parts.path)
        if key not in seen:
            seen.add(key)
            kept.append(url)
    return kept


def fetch_cosigned_checkpoint(url: str, origin: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """The newest checkpoint the witness at ``url`` (a `parse_witness_url` prefix) cosigned
    of the log ``origin``, as it serves it: ``GET <url>/<origin hash>/checkpoint``, the
    origin hash SHA-256 of ``origin`` in lowercase hex (c2sp.org/tlog-witness "Monitor
    Retrieval Mechanism"); the note text, its signatures unchecked. One request, its whole
    answer within ``timeout_s`` seconds and `MAX_ANSWER_BYTES` (headers and framing
    included). Raises WitnessError saying why otherwise: unreachable, too slow, too large,
    cut short (the connection closed before its Content-Length or last chunk: bytes short of the
    Content-Length are not taken as the whole answer), 404 (it
    never cosigned a checkpoint of that log; a 404 web page: no witness), a redirect (3xx:
    not followed), another
    status (with the start of its text)."""
    path = f"{urlsplit(url).path}/{hashlib.sha256(origin.encode()).hexdigest()}/checkpoint"
    with Cutoff(timeout_s) as cutoff:
        try:
            status, text, location = _get(url, path, cutoff, timeout_s)
        except WitnessError:
            if cutoff.expired.is_set():
                raise WitnessError(f"no complete answer within {timeout_s:g} s") from None
            raise
    if cutoff.expired.is_set():  # cut mid-body: what was read is not the whole answer
        raise WitnessError(f"no complete answer within {timeout_s:g} s")
    said = clipped_line(text.strip(), SHOWN_ANSWER_CHARS)
    if status == 404 and text.lstrip()[:1] == "<":  # a witness's 404 is plain text
        raise WitnessError(
            "it answered HTTP 404 with a web page (HTML), as no witness does: check that"
            " the URL is a witness's (the URL `prov witness serve` prints), not a web"
            " page's such as `prov web`'s"
        )
    if status == 404:
        raise WitnessError(
            f"it has cosigned no checkpoint of the log {origin!r} (HTTP 404: {said}); check"
            " that the URL is a witness of this log's server"
        )
    if 300 <= status < 400:  # http.client follows none: nor should a check of the witness
        raise _not_followed(status, location)
    if status != 200:
        raise WitnessError(f"HTTP {status}: {said}")
    return text


#: Most witnesses `fetch_cosigned_checkpoints` asks at once (threads); more wait their turn.
MAX_PARALLEL_FETCHES = 16


def fetch_cosigned_checkpoints(
    urls: list[str], origin: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Iterator[tuple[str, str | WitnessError]]:
    """`fetch_cosigned_checkpoint` of each of ``urls`` (`parse_witness_url` prefixes), up
    to `MAX_PARALLEL_FETCHES` at once, so N slow witnesses cost about the slowest one's
    time (at most ``timeout_s`` seconds each), not the sum.
    Yields (URL, its note text or the WitnessError saying why not) in the order of
    ``urls``, each once its fetch and all before it ended: a caller stopping at the first
    failure stops where asking one after another would have, with the same message. Any
    other exception of a fetch is raised here, in its turn. The fetches run on daemon
    threads: one still under way when the caller stops ends within its timeout and holds
    no exit of the process."""
    results: list[str | BaseException | None] = [None] * len(urls)
    done = [threading.Event() for _ in urls]
    todo = iter(range(len(urls)))
    lock = threading.Lock()
    stopped = threading.Event()  # the caller stopped: no witness more is asked

    def work() -> None:
        while True:
            with lock:
                i = None if stopped.is_set() else next(todo, None)
            if i is None:
                return
            try:
                results[i] = fetch_cosigned_checkpoint(urls[i], origin, timeout_s)
            except BaseException as e:  # noqa: BLE001 - handed to the caller in its turn
                results[i] = e
            done[i].set()

    for _ in range(min(len(urls), MAX_PARALLEL_FETCHES)):
        threading.Thread(target=work, name="witness-checkpoint", daemon=True).start()
    try:
        for i, url in enumerate(urls):
            done[i].wait()
            got = results[i]
            if isinstance(got, WitnessError | str):
                yield url, got
            else:
                assert got is not None  # set before its event
                raise got
    finally:
        stopped.set()


def _get(url: str, path: str, cutoff: Cutoff, timeout_s: float) -> tuple[int, str, str]:
    """GET ``path`` of the witness at ``url`` on a connection of its own (closed after),
    its socket under ``cutoff``: (status, text, its Location header or ""). Raises
    WitnessError."""
    conn, where = _connection(url, timeout_s), _where(url)
    try:
        _connect(conn, where, timeout_s, cutoff)
        if conn.sock is not None:
            cutoff.watch(conn.sock)
        conn.request("GET", path)
        r = conn.getresponse()
        data = r.read(MAX_ANSWER_BYTES + 1)
    except OverBudget as e:
        raise WitnessError(f"witness at {where}: {e}") from None
    except (OSError, http.client.HTTPException) as e:
        raise WitnessError(_exchange_failure(e, where, timeout_s, once=True)) from e
    finally:
        conn.close()
    if len(data) > MAX_ANSWER_BYTES:
        raise WitnessError(f"its answer is over {MAX_ANSWER_BYTES // 1024} KiB")
    if r.length:  # fewer bytes than its Content-Length: http.client's read(n) says nothing
        cut = http.client.IncompleteRead(data, r.length)
        raise WitnessError(_exchange_failure(cut, where, timeout_s, once=True))
    return r.status, data.decode("utf-8", "replace"), r.getheader("Location", "")


def _not_followed(status: int, location: str) -> WitnessError:
    """The error for a witness's redirect (HTTP ``status`` 3xx to ``location``, its
    Location header or ""), which no request follows: the policy and ``--witness-url``
    name the witness's own URL."""
    to = clipped_line(location, SHOWN_ANSWER_CHARS) or "nowhere named"
    return WitnessError(
        f"HTTP {status}, a redirect (to {to}), not followed: give the witness's own URL"
    )


def _where(url: str) -> str:
    """``HOST:PORT`` of the witness at ``url`` as messages name it (an IPv6 address in
    brackets, the scheme's default port written out)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    shown_host = f"[{host}]" if ":" in host else host  # an IPv6 address, as in a URL
    return f"{shown_host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _connection(url: str, timeout_s: float) -> http.client.HTTPConnection:
    """A connection (not yet made: `_connect`) to the witness at ``url``, each socket read
    and write under ``timeout_s`` seconds, its answer's headers, chunk framing and
    trailers bounded with its body by `MAX_ANSWER_BYTES` (before, an endless trailer was
    read, and dropped, for the whole timeout)."""
    return metered_connection(url, timeout_s, MAX_ANSWER_BYTES)


def _connect(
    conn: http.client.HTTPConnection, where: str, timeout_s: float, cutoff: Cutoff
) -> None:
    """Connect ``conn`` (`_connection`) to the witness at ``where``, each socket watched
    by ``cutoff`` from before its connect (`Cutoff.create_connection`): a stop
    (`Cosigner.close`) ends a connect still in progress at once. Raises WitnessError
    saying plainly why it is not reachable (refused, no such host, no route, no answer
    within ``timeout_s``), the connection closed; ssl.SSLError as it is (it answered: TLS
    failed)."""
    # http.client's hook for making the socket, which typeshed does not list
    conn._create_connection = cutoff.create_connection  # type: ignore[attr-defined]
    try:
        conn.connect()
    except OSError as e:
        if isinstance(e, ssl.SSLError):
            raise
        conn.close()
        why = e.strerror or str(e) or "the system gave no reason (check the URL)"
        if isinstance(e, TimeoutError):
            why = f"no answer within {timeout_s:g} s"
        raise WitnessError(f"witness at {where} is not reachable: {why}") from e


@dataclass
class _Peer:
    """A witness and what the cosigner knows of it (touched by one round at a time)."""

    spec: WitnessSpec
    known_size: int = 0  # the size the witness holds for us, as far as we know
    signed_size: int = 0  # the size of the newest checkpoint it cosigned for us
    line: str = ""  # its cosignature line on that checkpoint
    problem: str = ""
    backoff_s: float = 0.0
    retry_at: float = 0.0
    conn: http.client.HTTPConnection | None = None


class _Refused(WitnessError):
    """The witness answered, and refused the checkpoint (4xx)."""


class _Stopped(WitnessError):
    """The exchange was cut by this server stopping (`Cosigner.close`): not the
    witness's failure, so no problem of it is recorded or logged."""


class _Behind(WitnessError):
    """The witness holds a newer checkpoint of this log than the one sent (another server
    over the same database appended it): not a failure; the newer one is sent next."""


class Cosigner:
    """See module docstring.

    ``witnesses``: the policy; ``quorum``: cosignatures a checkpoint needs to be published
    (1..len(witnesses)); ``consistency(old, new)``: the RFC 9162 consistency proof between
    two sizes of this log (32-byte hashes); ``latest()``: the newest (size, signed note)
    in the store, which may be newer than what this process committed when several
    servers share the database; ``timeout_s``: per request; ``interval_s``:
    least time between two rounds (batches in between coalesce). A published checkpoint
    carries at most `MAX_PUBLISHED_LINES` cosignature lines (the first witnesses of the
    policy that cosigned it). Raises ConfigError for an empty policy, two witnesses of
    one name or one public key, or a quorum out of range (above the witnesses, or above
    `MAX_PUBLISHED_LINES`).
    """

    def __init__(
        self,
        witnesses: list[WitnessSpec],
        quorum: int,
        consistency: Callable[[int, int], list[bytes]],
        latest: Callable[[], tuple[int, str] | None],
        timeout_s: float = DEFAULT_TIMEOUT_S,
        interval_s: float = 0.0,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        if not witnesses:
            raise ConfigError("a witness policy needs at least one witness")
        names = [w.name for w in witnesses]
        if len(set(names)) != len(names):
            raise ConfigError(
                f"two witnesses of the policy share a name: {names} (each `prov witness"
                " serve` needs its own --name; its key changes with the name)"
            )
        try:
            check_policy([w.vkey for w in witnesses])
        except LogError as e:
            raise ConfigError(f"--witness: {e}") from e
        if not 1 <= quorum <= len(witnesses):
            raise ConfigError(
                f"--witness-quorum {quorum} is not between 1 and the {len(witnesses)} witnesses"
            )
        if quorum > MAX_PUBLISHED_LINES:
            raise ConfigError(
                f"--witness-quorum {quorum} is more than {MAX_PUBLISHED_LINES}: a cosigned"
                " checkpoint carries the log's signature and one line per witness, and"
                " C2SP signed-note verifiers need accept only 16 signatures"
            )
        self.quorum = quorum
        self._peers = [_Peer(w) for w in witnesses]
        self._consistency = consistency
        self._latest = latest
        self._timeout_s = timeout_s
        self._interval_s = interval_s
        self._max_backoff_s = max_backoff_s
        self._lock = threading.Condition()
        self._pending: tuple[int, str] | None = None  # newest checkpoint handed in
        self._cosigned: tuple[int, str] | None = None  # newest with the quorum
        self._stop = False
        # the exchanges under way, each under its deadline: `close` ends them at once
        self._exchanges: set[Cutoff] = set()
        self._pool = ThreadPoolExecutor(len(witnesses), thread_name_prefix="witness")
        self._thread = threading.Thread(target=self._run, name="cosigner", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ public

    def submit(self, size: int, note: str) -> None:
        """Hand in the log's newest signed checkpoint (``note``, of tree ``size``); returns
        at once. An older size than one handed in before is ignored."""
        with self._lock:
            if self._pending is None or size >= self._pending[0]:
                self._pending = (size, note)
                self._lock.notify_all()

    def cosigned(self) -> str | None:
        """The newest checkpoint cosigned by the quorum: the log's signed note with the
        witnesses' cosignature lines appended; None before the first."""
        with self._lock:
            return None if self._cosigned is None else self._cosigned[1]

    def statuses(self) -> list[WitnessStatus]:
        """How each witness of the policy is doing, in policy order."""
        with self._lock:
            return [
                WitnessStatus(p.spec.name, p.spec.url, p.signed_size, p.problem)
                for p in self._peers
            ]

    def wait_cosigned(self, size: int, timeout: float) -> bool:
        """Wait until a checkpoint of at least ``size`` is cosigned by the quorum (for
        benchmarks and tests); False when ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._cosigned is None or self._cosigned[0] < size:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop:
                    return False
                self._lock.wait(left)
            return True

    def close(self) -> None:
        """Stop the rounds: the requests in flight are cut at once (before, each was
        waited for, up to its timeout: a witness that never answers held a stop of `prov
        serve` for all of ``--witness-timeout``), those still connecting too (`_connect`:
        a witness whose TCP handshake never completes holds no stop); only a name lookup
        under way is waited for. A cut exchange records no problem of its witness
        (`_Stopped`)."""
        with self._lock:
            self._stop = True
            self._lock.notify_all()
            for cutoff in self._exchanges:
                cutoff.cut()
        self._thread.join()
        self._pool.shutdown(wait=True)
        for p in self._peers:
            if p.conn is not None:
                p.conn.close()

    # ------------------------------------------------------------ rounds

    def _due(self, size: int, now: float) -> list[_Peer]:
        return [p for p in self._peers if p.signed_size != size and p.retry_at <= now]

    def _next_round(self) -> tuple[int, str, list[_Peer]] | None:
        """Wait for a checkpoint some witness still has to cosign and may be asked now;
        None when stopping."""
        with self._lock:
            while not self._stop:
                now = time.monotonic()
                if self._pending is not None:
                    size, note = self._pending
                    due = self._due(size, now)
                    if due:
                        return size, note, due
                    waiting = [
                        p.retry_at for p in self._peers if p.signed_size != size and p.retry_at
                    ]
                    self._lock.wait(max(0.01, min(waiting) - now) if waiting else None)
                else:
                    self._lock.wait()
            return None

    def _run(self) -> None:
        last: float | None = None  # when the last round started; the first goes at once
        while True:
            got = self._next_round()
            if got is None:
                return
            size, note, due = got
            if last is not None and time.monotonic() < last + self._interval_s:
                # coalesce: the newest checkpoint after the interval
                if not self._wait_until(last + self._interval_s):
                    return
                with self._lock:
                    if self._pending is not None and self._pending[0] > size:
                        size, note = self._pending
                        due = self._due(size, time.monotonic())
            last = time.monotonic()
            self._round(size, note, due)

    def _wait_until(self, deadline: float) -> bool:
        """Wait until ``time.monotonic()`` reaches ``deadline`` (the round interval's end);
        False, at once, when the cosigner is stopping (`close`). Before, the interval was
        slept out: a server stopping waited for it (an hour's for ``--witness-interval-ms
        3600000``), and one past what ``time.sleep`` takes ended the rounds for good in an
        OverflowError."""
        with self._lock:
            while not self._stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    return True
                self._lock.wait(min(left, _LONGEST_WAIT_S))
            return False

    def _round(self, size: int, note: str, due: list[_Peer]) -> None:
        """Send ``note`` to the ``due`` witnesses at once; publish once the quorum signed
        it (counting those that cosigned it in an earlier round)."""
        futures = {self._pool.submit(self._ask, p, size, note): p for p in due}
        for fut in as_completed(futures):
            peer = futures[fut]
            try:
                line = fut.result()
            except _Behind:
                continue  # the newer checkpoint is pending: the next round sends it
            except _Stopped:
                continue  # cut by this server stopping: not the witness's failure
            except Exception as e:  # a bug must not end the rounds: report it as a problem
                self._failed(peer, size, e)
                continue
            self._succeeded(peer, size, line)
            self._publish(size, note)

    def _publish(self, size: int, note: str) -> None:
        with self._lock:
            lines = [p.line for p in self._peers if p.signed_size == size]
            if len(lines) < self.quorum:
                return
            # the first in policy order: with the log's, at most the 16 signatures every
            # signed-note verifier must accept (before, all: a policy of 17 published 18)
            lines = lines[:MAX_PUBLISHED_LINES]
            if self._cosigned is not None and self._cosigned[0] > size:
                return
            new = self._cosigned is None or self._cosigned[0] < size
            self._cosigned = (size, note + "".join(lines))
            self._lock.notify_all()
        if new:
            metrics.COSIGNED_CHECKPOINTS.inc()
            metrics.COSIGNED_TREE_SIZE.set(size)

    def _succeeded(self, peer: _Peer, size: int, line: str) -> None:
        if peer.problem:
            log.warning(
                "witness %s (%s) cosigns again, at size %d",
                shown_line(peer.spec.name),
                peer.spec.url,
                size,
            )
        with self._lock:
            peer.signed_size = size
            peer.line = line
            peer.problem = ""
            peer.backoff_s = 0.0
            peer.retry_at = 0.0
        metrics.WITNESS_REQUESTS.labels(peer.spec.name, "cosigned").inc()
        metrics.WITNESS_SIZE.labels(peer.spec.name).set(size)

    def _failed(self, peer: _Peer, size: int, error: Exception) -> None:
        """Record ``peer``'s problem with checkpoint ``size`` and back off. An error of no
        kind foreseen (a bug of this server) is said in words; its traceback goes to the
        log with the warning, and at DEBUG each time it comes again."""
        refused = isinstance(error, _Refused)
        foreseen = refused or isinstance(error, ProvenanceError)
        problem = shown_line(  # all of it escaped: a name (a bidi mark) inside it too
            f"refused checkpoint {size}: {error}"
            if refused
            else f"did not cosign checkpoint {size}: {error}"
            if foreseen
            else f"failed on checkpoint {size}: this server failed while asking the witness"
            " (an internal error; this server's log has the details)"
        )
        with self._lock:
            changed = problem != peer.problem
            peer.problem = problem
            peer.backoff_s = min(self._max_backoff_s, max(_FIRST_BACKOFF_S, peer.backoff_s * 2))
            peer.retry_at = time.monotonic() + peer.backoff_s
        metrics.WITNESS_REQUESTS.labels(peer.spec.name, "refused" if refused else "failed").inc()
        if changed:
            (log.error if refused else log.warning)(
                "witness %s (%s) %s; retrying with backoff (up to %g s)",
                shown_line(peer.spec.name),
                peer.spec.url,
                problem,
                self._max_backoff_s,
                exc_info=None if foreseen else error,
            )
        elif not foreseen:
            log.debug(
                "witness %s: the same failure again", shown_line(peer.spec.name), exc_info=error
            )

    # ------------------------------------------------------------ one witness

    def _ask(self, peer: _Peer, size: int, note: str) -> str:
        """Have ``peer`` cosign ``note``; returns its verified cosignature line. Raises
        _Refused (a 4xx answer) or WitnessError (unreachable, timeout, 5xx, a bad line)."""
        t0 = time.perf_counter()
        try:
            for _ in range(3):  # the first try, and again after each 409 size hint
                old = peer.known_size
                newer = self._latest() if old > size else None
                if newer is not None and newer[0] >= old:
                    self.submit(*newer)  # another server of this log appended: catch up
                    raise _Behind(f"the witness has {old} entries, this note {size}")
                if old > size:
                    raise _Refused(
                        f"the witness holds a tree of {old} entries, more than this log's"
                        f" {size}: this log was rolled back or forked"
                    )
                proof = self._consistency(old, size) if 0 < old < size else []
                head = "".join(f"{line}\n" for line in (f"old {old}", *map(_b64, proof)))
                status, ctype, text, location = self._post(peer, (head + "\n" + note).encode())
                if status == 200:
                    line = _own_line(note, text, peer.spec.vkey)
                    peer.known_size = size
                    return line
                # a media type's type and subtype are case-insensitive (RFC 9110 8.3.1)
                if status == 409 and ctype.split(";")[0].strip().lower() == SIZE_CONTENT_TYPE:
                    hint = _size_hint(text)
                    # it holds this size already, with another root: older versions of
                    # `prov witness serve` said so with 409; tlog-witness says 422 (below)
                    if hint == old:
                        raise _Refused(
                            f"409 Conflict: the witness cosigned another tree head of size"
                            f" {old}: this log is forked"
                        )
                    peer.known_size = hint
                    continue
                if status == 422 and old == size:  # tlog-witness: same size, other root
                    raise _Refused(
                        f"422: the witness cosigned another tree head of size {old}: this"
                        " log is forked"
                    )
                if status == 422:
                    raise _Refused(
                        f"422: the consistency proof from the {old} entries the witness"
                        " cosigned does not verify: this log is forked"
                    )
                said = clipped_line(text.strip(), SHOWN_ANSWER_CHARS)  # escaped, cut
                if 300 <= status < 400:  # before, only "HTTP 308:" and its empty body
                    raise _not_followed(status, location)
                if 400 <= status < 500:
                    raise _Refused(f"{status}: {said}")
                raise WitnessError(f"HTTP {status}: {said}")
            raise _Refused("it keeps answering 409 Conflict with other sizes")
        finally:
            metrics.WITNESS_SECONDS.labels(peer.spec.name).observe(time.perf_counter() - t0)

    def _post(self, peer: _Peer, body: bytes) -> tuple[int, str, str, str]:
        """POST ``body`` to the witness's add-checkpoint on a kept-alive connection;
        (status, content type, text, Location header or ""). Raises WitnessError when it
        cannot be reached or has not answered in full within the timeout (a whole-answer
        deadline: the socket timeout alone bounds each read, and an answer dripped a byte
        at a time would hold the round for as long as the witness likes)."""
        with Cutoff(self._timeout_s) as cutoff:
            with self._lock:
                self._exchanges.add(cutoff)
                if self._stop:  # stopping already: no exchange starts
                    cutoff.cut()
            try:
                answer = self._exchange(peer, body, cutoff)
            except WitnessError:
                if cutoff.expired.is_set():
                    raise self._cut_short() from None
                raise
            finally:
                with self._lock:
                    self._exchanges.discard(cutoff)
        if cutoff.expired.is_set():  # cut mid-body: what was read is not the whole answer
            if peer.conn is not None:
                peer.conn.close()
                peer.conn = None
            raise self._cut_short()
        return answer

    def _cut_short(self) -> WitnessError:
        """The error of an exchange whose `Cutoff` expired: _Stopped when this server is
        stopping (`close`), else the witness too slow."""
        if self._stop:
            return _Stopped("no answer before this server stopped")
        return WitnessError(f"no complete answer within {self._timeout_s:g} s")

    def _exchange(self, peer: _Peer, body: bytes, cutoff: Cutoff) -> tuple[int, str, str, str]:
        """One POST of ``body`` (see `_post`), each socket it uses under ``cutoff`` (the
        response may own the socket, not the connection)."""
        where = _where(peer.spec.url)
        retried = False
        while True:  # a kept-alive connection the witness closed: reconnect once
            if peer.conn is None:
                peer.conn = _connection(peer.spec.url, self._timeout_s)
            try:
                if peer.conn.sock is None:
                    _connect(peer.conn, where, self._timeout_s, cutoff)  # closed: next round again
                cutoff.watch(peer.conn.sock)
                peer.conn.request(
                    "POST",
                    urlsplit(peer.spec.url).path + "/add-checkpoint",
                    body,
                    {"Content-Type": "text/plain; charset=utf-8"},
                )
                r = peer.conn.getresponse()
                data = r.read(MAX_ANSWER_BYTES + 1)
                if not r.isclosed():  # its rest is unread: the next answer would start there
                    peer.conn.close()
                    peer.conn = None
                if len(data) > MAX_ANSWER_BYTES:
                    raise WitnessError(f"its answer is over {MAX_ANSWER_BYTES // 1024} KiB")
                if r.length:  # short of its Content-Length: http.client's read(n) is silent
                    raise http.client.IncompleteRead(data, r.length)
                text = data.decode("utf-8", "replace")
                return (
                    r.status,
                    r.headers.get("Content-Type", ""),
                    text,
                    r.getheader("Location", ""),
                )
            except OverBudget as e:
                if peer.conn is not None:
                    peer.conn.close()
                    peer.conn = None
                raise WitnessError(f"witness at {where}: {e}") from None
            except (OSError, http.client.HTTPException) as e:
                if peer.conn is not None:
                    peer.conn.close()
                    peer.conn = None
                stale = isinstance(e, http.client.RemoteDisconnected | BrokenPipeError)
                if retried or not stale:
                    raise WitnessError(_exchange_failure(e, where, self._timeout_s)) from e
                retried = True


def _exchange_failure(
    e: OSError | http.client.HTTPException, where: str, timeout_s: float, *, once: bool = False
) -> str:
    """What a failed exchange with the witness at ``where`` (HOST:PORT) says to a person:
    what happened, and what to check. ``once``: a one-off fetch (`fetch_cosigned_checkpoint`),
    which nothing asks again (an answer cut short does not say "it is asked again
    later", true only of the `Cosigner`'s rounds)."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return (
            f"witness at {where}: its TLS certificate is not trusted ({e.verify_message});"
            " give a URL whose certificate this machine's CAs vouch for"
        )
    if isinstance(e, ssl.SSLError):
        reason = (e.reason or e.strerror or "no reason given").replace("_", " ").lower()
        return (
            f"witness at {where}: the TLS handshake failed ({reason}); check that it serves"
            " https at this address (or give its http:// URL)"
        )
    if isinstance(e, TimeoutError):
        return f"witness at {where} did not answer within {timeout_s:g} s"
    if isinstance(e, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return (
            f"witness at {where} closed the connection without answering; check that a"
            " witness (`prov witness serve`) runs at this URL"
        )
    if isinstance(e, http.client.BadStatusLine):
        # an HTTP/2 server's first frame: SETTINGS (type 4) on stream 0, as gRPC sends
        line = str(e.args[0]) if e.args else ""
        if line[3:4] == "\x04" and line[5:9] == "\x00" * 4:
            return (
                f"witness at {where} answered as an HTTP/2 server (gRPC: is it a `prov"
                " serve` address?), not as a witness; give the URL `prov witness serve`"
                " prints, http://HOST:PORT"
            )
        first = str(e).strip()[:60]  # its first line
        return (
            f"witness at {where} answered something that is not HTTP ({first!r}); check"
            " that the URL is a witness's"
        )
    if isinstance(e, http.client.IncompleteRead):
        if once:
            return (
                f"witness at {where} ended its answer before its end (the connection closed"
                " early); ask again, and check that a witness (`prov witness serve`) runs at"
                " this URL"
            )
        return f"witness at {where} ended its answer before its end; it is asked again later"
    if isinstance(e, http.client.HTTPException):
        return (
            f"witness at {where} sent an answer that is not valid HTTP; check that the URL"
            " is a witness's"
        )
    why = e.strerror or str(e) or "no reason given by the system (check the URL)"
    return f"exchange with the witness at {where} failed: {why}"


def _own_line(note: str, text: str, vkey: str) -> str:
    """The line of a witness's 200 answer ``text`` that is its valid cosignature (by
    ``vkey``) on ``note``, with its newline. The answer is one or more note signature
    lines (c2sp.org/tlog-witness "add-checkpoint"); only that one line is kept, so
    whatever else a witness sends (lines in another witness's name, a blank line, a line
    without its dash) never reaches the published checkpoint. Raises WitnessError when
    no line is a valid cosignature."""
    prefix = f"\u2014 {vkey.split('+', 1)[0]} "
    problem = "no signature line in its name"
    for line in text.split("\n"):
        if not line.startswith(prefix):
            continue
        try:
            verify_cosignature(note + line + "\n", vkey)
        except ProvenanceError as e:
            problem = str(e)
            continue
        return line + "\n"
    raise WitnessError(f"its answer is not a valid cosignature: {problem}")


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def _size_hint(text: str) -> int:
    """The witness's own tree size in a 409 answer's body (``<size>\\n``, ASCII digits:
    `parse_tree_size`). Raises WitnessError quoting the body otherwise."""
    try:
        return parse_tree_size(text.strip(" \t\r\n"))
    except LogError:
        raise WitnessError(
            f"its 409 answer carries no tree size: {text[:100]!r} (want ASCII decimal digits)"
        ) from None
