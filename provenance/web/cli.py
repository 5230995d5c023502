"""`prov web`: the verification page, log explorer and HTTP API, as a client of the
gRPC service. Registered on the `prov` app by clients/cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clients.api import default_server
from clients.options import verifier_key
from provenance.cli.openfiles import raise_open_files_limit
from provenance.cli.options import (
    MAX_WAIT_S,
    AllowedHostsOpt,
    ConnectionsPerClientOpt,
    HeaderSecondsOpt,
    MaxConnectionsOpt,
    MetricsAllowedHostsOpt,
    MetricsListenOpt,
    ServerOpt,
    TrustedProxyOpt,
    check_can_listen,
    finite,
    listen_address,
    nonempty_path,
    start_metrics,
)
from provenance.core.errors import TransportError


def _tiles_folder(value: str) -> Path:
    """``--tiles-dir`` as a path: not empty (`nonempty_path`) and not something other than a folder (one not
    there yet is taken: the export may come later). Typer ``parser``; with one, Typer
    no longer applies ``file_okay=False`` itself. Raises typer.BadParameter."""
    path = nonempty_path(value)
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(
            f"{value} is not a folder; give the folder `prov log export-tiles` writes into"
        )
    return path


def web(
    server: ServerOpt = default_server(),
    listen: Annotated[
        str, typer.Option(help="HTTP address to listen on, HOST:PORT (port 0 picks one).")
    ] = "127.0.0.1:8080",
    max_upload_mb: Annotated[
        int,
        typer.Option(
            help="Largest file relayed for verification, MiB (the service has its own limit).",
            min=1,
        ),
    ] = 2048,
    uploads_per_minute: Annotated[
        int,
        typer.Option(help="Uploads each client address may start a minute (0: no limit).", min=0),
    ] = 30,
    reads_per_minute: Annotated[
        int,
        typer.Option(
            help="Pages and API calls reading the log or the device registry (the log"
            " explorer's pages, /api/v1/ checkpoint, entries, proofs and devices,"
            " /manifests/) each client address may make a minute, in bursts of as many;"
            " past it, 429 with Retry-After, so one visitor cannot use up this page's"
            " share of the service's reads (0: no limit).",
            min=0,
        ),
    ] = 120,  # provenance.web.app.READS_PER_MINUTE (not imported here: it loads Starlette)
    upload_idle_seconds: Annotated[
        float,
        typer.Option(
            help="Refuse an upload (408) that sends nothing for this long.",
            min=0.1,
            callback=finite,
        ),
    ] = 60.0,
    upload_min_rate_kb: Annotated[
        int,
        typer.Option(
            help="KiB/s an upload must average, after its first --upload-idle-seconds, to"
            " keep its slot when all 8 are taken and another arrives (503 'upload cut');"
            " 0: none.",
            min=0,
        ),
    ] = 8,
    tiles_dir: Annotated[
        Path | None,
        typer.Option(
            help="Also serve this `prov log export-tiles` folder read-only as a C2SP tlog-tiles"
            " log under /tlog/ (checkpoint, tile/...), with cache headers.",
            parser=_tiles_folder,
        ),
    ] = None,
    service_timeout: Annotated[
        float,
        typer.Option(
            help="Answer 504 when the gRPC service keeps a call waiting this long, seconds:"
            " to answer a page or lookup, to take the next piece of an upload, or to say"
            " it has the whole file (a slow upload is not counted; decoding a long video"
            " after that is).",
            min=0.1,
            max=MAX_WAIT_S,
            callback=finite,
        ),
    ] = 20.0,
    header_seconds: HeaderSecondsOpt = 10.0,
    connections_per_client: ConnectionsPerClientOpt = 32,
    max_connections: MaxConnectionsOpt = 256,
    trusted_proxy: TrustedProxyOpt = None,
    allowed_hosts: AllowedHostsOpt = None,
    metrics_listen: MetricsListenOpt = None,
    metrics_allowed_hosts: MetricsAllowedHostsOpt = None,
    log_key: Annotated[
        str | None,
        typer.Option(
            envvar="PROV_LOG_KEY",
            help="The log's verifier key (text or a file holding it; `prov log key` prints"
            " it), as `prov verify --log-key`: the receipt of the claim a verdict cites"
            " (signed checkpoint, inclusion proof) is checked with it here, and a verdict"
            " whose evidence does not verify is answered 502, not shown; so is every"
            " checkpoint the explorer and the log API read (502 when it does not verify"
            " with this key, whatever key the service presents).",
            callback=verifier_key,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the verification page, the public log explorer and the JSON API
    (/api/v1/, /openapi.json, C2PA soft binding resolution) over HTTP, as a client of
    the gRPC service at --server. Stores no uploaded file. Stops on SIGINT/SIGTERM.

    It answers requests for IP addresses, localhost, the name it listens on and this
    machine's name; another Host name gets 421 (a DNS-rebinding page) unless
    --allowed-hosts names it: `prov web --listen 0.0.0.0:8080 --allowed-hosts
    prov.newsroom.example`.

    Every answer of the service is checked as `prov verify` checks it: a verdict resting
    on a claim that does not bind the uploaded bytes is answered 502, not shown; with
    --log-key (or $PROV_LOG_KEY) the claim's receipt must verify with that key too."""
    from clients.cited import read_log_key
    from provenance.core.ports import parse_allowed_hosts, parse_trusted_proxy
    from provenance.web.app import WebConfig
    from provenance.web.guard import HttpLimits
    from provenance.web.serve import run_web

    listen_address(listen, "--listen")  # a usage error (exit 2) before the probe below
    if metrics_listen is not None:
        check_can_listen(metrics_listen, "--metrics-listen")
    pinned = read_log_key(log_key) if log_key is not None else None
    _warn_if_unreachable(server, service_timeout, pinned)
    start_metrics(metrics_listen, metrics_allowed_hosts)
    raise_open_files_limit()  # a descriptor per connection, up to --max-connections
    run_web(
        listen,
        WebConfig(
            server,
            max_upload_bytes=max_upload_mb * 1024 * 1024,
            uploads_per_minute=uploads_per_minute,
            reads_per_minute=reads_per_minute,
            upload_idle_seconds=upload_idle_seconds,
            upload_cut_rate=upload_min_rate_kb * 1024,
            tiles_dir=tiles_dir,
            service_timeout_s=service_timeout,
            allowed_hosts=parse_allowed_hosts(allowed_hosts) if allowed_hosts else (),
            log_key=pinned,
        ),
        limits=HttpLimits(
            header_seconds=header_seconds,
            per_client=connections_per_client,
            max_connections=max_connections,
            trusted_proxies=tuple(parse_trusted_proxy(p) for p in trusted_proxy or ()),
        ),
    )


#: How long `prov web` waits for the gRPC service's answer at start, in seconds.
PROBE_SECONDS = 3.0


def _not_ours(e: TransportError) -> str | None:
    """Why the answer to the start-up probe shows that what answered is not a provenance
    gRPC service (bytes that are not HTTP/2, a gRPC server without our Log service, a
    log key that is no verifier key), in words; None when nothing answered (refused,
    timed out) or our service answered with an error of its own."""
    text = str(e)
    if "Failed parsing HTTP/2" in text or "http1.x server" in text:
        return "it does not speak gRPC: its answer is not HTTP/2"
    if e.code == "UNIMPLEMENTED":
        return f"it has no provenance Log service: {text}"
    if e.code == "INTERNAL" and "no verifier key" in text:
        return f"its log key is no verifier key: {text}"
    return None


def _warn_if_unreachable(server: str, service_timeout_s: float, pinned: str | None = None) -> None:
    """Print a warning on stderr when the gRPC service at ``server`` does not answer a
    LogKey call within PROBE_SECONDS: the page still starts (the service may come up
    later), but every request that needs it gets 503 until it can be reached, or, when
    it takes connections but keeps them waiting, 504 after ``service_timeout_s``. With
    ``pinned`` (``--log-key``, the key's text), also when the service presents another
    log key: each verdict citing a logged claim will then be answered 502."""
    from clients.api import ProvenanceClient

    try:
        with ProvenanceClient(server, timeout=PROBE_SECONDS) as c:
            presented = c.log_key()[0]
        if pinned is not None and presented.strip() != pinned.strip():
            typer.echo(
                f"warning: the service at {server} presents the log key {presented}, not the"
                f" one pinned with --log-key ({pinned}); the page starts anyway, but answers"
                " 502 for each verdict whose receipt that key did not sign (is --log-key the"
                " key of this service's log? `prov log key` prints it)",
                err=True,
            )
    except TransportError as e:
        why = _not_ours(e)
        if why is not None:
            typer.echo(
                f"warning: something at {server} answered, but not as a provenance service"
                f" ({why}); the page starts anyway, but cannot verify or show the log until"
                " --server or $PROV_SERVER names a `prov serve`",
                err=True,
            )
            return
        if e.code == "DEADLINE_EXCEEDED":
            typer.echo(
                f"warning: the gRPC service at {server} takes connections but did not answer"
                f" within {PROBE_SECONDS:g} s; the page starts anyway, and each request that"
                f" needs the service waits --service-timeout ({service_timeout_s:g} s), then"
                " is answered 504, until it answers (is `prov serve` running there, or"
                " stopped? --server or $PROV_SERVER names it)",
                err=True,
            )
            return
        typer.echo(
            f"warning: the gRPC service at {server} does not answer ({e}); the page starts"
            " anyway and answers 503 until it does (is `prov serve` running there? --server"
            " or $PROV_SERVER names it)",
            err=True,
        )
