"""The Starlette application: configuration, shared state, routes and middleware.

`create_app(config)` returns an ASGI app that talks to the gRPC service at
``config.server``; run it with `provenance.web.serve.run_web` (``prov web``) or next
to the service in one process (``prov serve --http``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from clients.api import ProvenanceClient
from provenance.core.allowed_hosts import AllowedHosts
from provenance.core.fair_turns import FairTurns
from provenance.media.assets import DEFAULT_MAX_BYTES, AssetLimits
from provenance.media.image import SUPPORTED_FORMATS
from provenance.web import api, pages, present, softbinding, tlogtiles
from provenance.web.ratelimit import RateLimiter
from provenance.web.security import CrossSiteGuard, HostCheck, SecurityHeaders
from provenance.web.upload import SERVICE_TIMEOUT_S, Relayer, UploadLimits

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent

#: The default of ``prov web --reads-per-minute``: each client address's pages and API
#: calls that read the log or the device registry, a minute (bursts of as many). The
#: web is one gRPC client of the service, whose budget per client is 6,000 log reads a
#: minute (``prov serve --log-reads-per-minute``) and as many device look-ups; an entry
#: page takes 3 log reads (checkpoint, entry, inclusion proof; the log key is kept) and
#: a device look-up, so 2,000 such pages a minute in all. `/log` takes 2 (checkpoint,
#: its page of entries) and `/api/v1/checkpoint` 1, each 1 more when the log grew since
#: the page's last checkpoint (its consistency proof) and 1 more for the cosigned
#: checkpoint (paced as a log read too, asked even of a service without witnesses) once
#: per `logviews.COSIGNED_KEEP_S` (5 s, one call for the requests at once that find it
#: not kept; a new cosigned checkpoint smaller than the page's costs its consistency
#: proof once): counted through a relay in front of a real
#: `prov serve` (the cosigned read asked every view instead: 3 and 2). A visitor
#: reading /log at this pace takes
#: about 252 of those reads a minute, 4 % (240 and 12 cosigned; 372, 6 %, as the log
#: grows), so it takes 23 (16) flooding at once to spend them; a person browsing opens a page every few seconds, and `make
#: web`'s demo and the browser tests pass under it (bench/bench_web_reads.py measures a flood against it).
READS_PER_MINUTE = 120


#: The longest wait, in seconds, between the web's attempts to reach a service that is
#: not answering: under the 5 s its 503 asks visitors to wait (`errors.BUSY_RETRY_AFTER`).
#: gRPC's own backoff grows to 120 s, and the page answered 503 for 77 s after a 200 s
#: outage of its service had ended (tests/test_web_service_back.py).
RECONNECT_S = 2.0


@dataclass(frozen=True)
class WebConfig:
    """``server``: the gRPC service HOST:PORT; ``max_upload_bytes``: the largest file
    relayed (default as the service's, 2 GiB); ``uploads_per_minute``: per client
    address (0: no limit); ``max_concurrent_uploads``: relayed at once (more get 503);
    ``uploads_per_client``: running at once from one address (more get 429);
    ``upload_idle_seconds``: a body that stalls this long gets 408;
    ``upload_grace_seconds``, ``upload_min_rate``: a body must arrive within the grace
    plus one second per ``upload_min_rate`` bytes received, or it gets 408 (a client
    dripping bytes cannot hold an upload slot);
    ``upload_cut_rate``: bytes a second an upload must average, once it has run for
    ``upload_idle_seconds``, to keep its slot when every slot is taken and another
    arrives (`provenance.web.upload.Relayer`; ``--upload-min-rate-kb``, as the
    service's); 0: none;
    ``upload_hold_bytes``: a file up to this size is held in memory until its form ends
    (larger ones are relayed as they arrive);
    ``tiles_dir``: a `prov log export-tiles` folder served read-only under /tlog/;
    ``reads_per_minute``: pages and API calls that read the log or the device registry
    (the explorer, its entry, device and proof pages, ``/api/v1/`` checkpoint, entries,
    proofs and devices, ``/manifests/``) one client address may make a minute, in
    bursts of as many (`READS_PER_MINUTE`; 0: no limit);
    ``service_timeout_s``: the longest a call to the service may wait for it, in seconds:
    a small call's answer, an upload's next piece taken or its receipt (a slow upload is
    not counted; `UploadLimits.answer_s`); past it, 504;
    ``allowed_hosts``: the Host names answered besides IP addresses and localhost
    (`provenance.web.security.AllowedHosts`; ``*``: every name), others get 421;
    `provenance.web.serve` adds the name it is bound to and the machine's name;
    ``log_key``: the log's verifier key NAME+ID+KEY pinned with ``prov web --log-key``
    (or ``PROV_LOG_KEY``): the receipt of the claim a verdict cites must verify with it
    (`clients.cited.check_evidence`), else 502, as must each lookup verdict's
    (`provenance.web.api.check_lookup_cited`), and every checkpoint the explorer and
    the log API read is checked with it, not with the key the service presents
    (`provenance.web.logviews.latest_checkpoint`), else 502; None: the claim's binding
    alone is checked here (`clients.cited.check_cited`), the checkpoints with the key
    the service presents;
    ``image_limits``: the limits a near copy's upload is decoded within for its check
    (`provenance.web.upload.UploadLimits.image`; None: the defaults); `prov serve --http`
    gives its service's, which a standalone `prov web` cannot know."""

    server: str
    max_upload_bytes: int = DEFAULT_MAX_BYTES
    uploads_per_minute: int = 30
    max_concurrent_uploads: int = 8
    uploads_per_client: int = 2
    upload_idle_seconds: float = 60.0
    upload_grace_seconds: float = 120.0
    upload_min_rate: float = 32 * 1024
    upload_cut_rate: float = 8 * 1024
    tiles_dir: Path | None = None
    upload_hold_bytes: int = 8 * 1024 * 1024
    service_timeout_s: float = SERVICE_TIMEOUT_S
    reads_per_minute: int = READS_PER_MINUTE
    allowed_hosts: tuple[str, ...] = ()
    log_key: str | None = None
    image_limits: AssetLimits | None = None


@dataclass
class WebState:
    """What every request handler shares (``request.app.state.web``)."""

    config: WebConfig
    client: ProvenanceClient
    relayer: Relayer
    limiter: RateLimiter
    #: each client's reads of the log and registry (``reads_per_minute``; `api.metered`)
    reads: RateLimiter
    templates: Jinja2Templates
    #: the worker threads that parse JSON bodies and run lookups (`api.JSON_WORKERS`)
    json_workers: anyio.CapacityLimiter
    #: the turns at those workers, handed to each client in rotation (`api.json_work`)
    json_turns: FairTurns
    #: each client's JSON body bytes in memory (`api.json_body`; no waiting for a share)
    json_shares: tlogtiles.TileShares


def create_app(config: WebConfig) -> Starlette:
    """The web application for ``config``. Opens one gRPC channel (lazily connected) and
    closes it at shutdown. Raises ConfigError for a malformed server address."""
    client = ProvenanceClient(
        config.server, timeout=config.service_timeout_s, reconnect_s=RECONNECT_S
    )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE / "templates"),
        autoescape=True,
        finalize=present.shown_text,
    )
    present.install(env)
    env.globals["supported_formats"] = SUPPORTED_FORMATS  # the CLI's list, for the page
    templates = Jinja2Templates(env=env)
    state = WebState(
        config=config,
        client=client,
        relayer=Relayer(
            client,
            UploadLimits(
                config.max_upload_bytes,
                idle_s=config.upload_idle_seconds,
                hold_bytes=config.upload_hold_bytes,
                per_client=config.uploads_per_client,
                grace_s=config.upload_grace_seconds,
                min_rate=config.upload_min_rate,
                cut_rate=config.upload_cut_rate,
                answer_s=config.service_timeout_s,
                image=config.image_limits,
            ),
            config.max_concurrent_uploads,
            config.log_key,
        ),
        limiter=RateLimiter(config.uploads_per_minute),
        reads=RateLimiter(
            config.reads_per_minute,
            what="pages and API calls reading the log or devices",
            flag="--reads-per-minute",
        ),
        templates=templates,
        json_workers=anyio.CapacityLimiter(api.JSON_WORKERS),
        json_turns=FairTurns(api.JSON_WORKERS),
        json_shares=tlogtiles.TileShares(api.JSON_BYTES_PER_CLIENT, wait=0.0),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.relayer.close()
            client.close()

    app = Starlette(
        routes=[
            *api.routes(),
            *softbinding.routes(),
            *pages.routes(),
            *(tlogtiles.routes(config.tiles_dir) if config.tiles_dir else []),
            Mount("/static", StaticFiles(directory=PACKAGE / "static"), name="static"),
        ],
        # outermost first: the 421 and the guard's 403 carry the security headers too
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(HostCheck, allowed=AllowedHosts(config.allowed_hosts)),
            Middleware(CrossSiteGuard),
        ],
        exception_handlers=pages.exception_handlers(),
        lifespan=lifespan,
    )
    # a path with a trailing slash is redirected by `pages.slash_redirect`, to the path
    # alone: Starlette's own redirect named the request's Host header as the site
    app.router.redirect_slashes = False
    app.state.web = state
    return app
