"""``prov witness serve``: a C2SP tlog-witness that cosigns the log's checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from clients.options import (
    ConnectionsPerClientOpt,
    HeaderSecondsOpt,
    MaxConnectionsOpt,
    MetricsAllowedHostsOpt,
    MetricsListenOpt,
    TrustedProxyOpt,
    check_can_listen,
    folder_to_fill,
    nonempty_path,
    start_metrics,
    verifier_keys,
)
from provenance.cli.openfiles import raise_open_files_limit
from provenance.core.errors import ConfigError, LogError
from provenance.core.files import file_kind
from provenance.log.checkpoint import (
    check_own_key_name,
    generate_log_key,
    load_log_signer,
    remove_key_leftovers,
)
from provenance.witness import Witness
from provenance.witness.client import read_key_text

witness_app = typer.Typer(
    help="Witness a log: cosign its checkpoints after checking consistency (C2SP tlog-witness).",
    no_args_is_help=True,
)


def _check_new_name(name: str, key: Path) -> None:
    """A usage error (exit 2, before anything is written) if ``name`` is not a note key
    name of visible characters (`check_own_key_name`) and the witness is new (``key`` not
    there yet). A witness whose key was made under such a name before keeps it (its
    cosignatures are valid notes; the name is shown escaped): its name is part of the
    verifier key that logs were given, so it cannot change."""
    if key.exists():
        return
    try:
        check_own_key_name(name)
    except LogError as e:
        raise typer.BadParameter(str(e), param_hint="--name") from None


@witness_app.command("serve")
def serve(
    key: Annotated[
        Path,
        typer.Option(
            help="The witness's Ed25519 private key (PEM, mode 0600; created if missing)."
        ),
    ],
    log_key: Annotated[
        list[str],
        typer.Option(
            help="Verifier key of a log to witness (text or file; repeat for more logs).",
            metavar="KEY",
            callback=verifier_keys,
        ),
    ],
    state: Annotated[
        Path,
        typer.Option(
            help="Folder keeping the last checkpoint cosigned for each log.", parser=nonempty_path
        ),
    ],
    name: Annotated[
        str,
        typer.Option(
            help="The witness's name in its cosignatures (no spaces, no '+'; a new witness's"
            " no control or invisible characters).",
        ),
    ] = "witness.local/w1",
    listen: Annotated[
        str, typer.Option(help="Address to listen on, HOST:PORT (port 0 picks one).")
    ] = "127.0.0.1:8090",
    header_seconds: HeaderSecondsOpt = 10.0,
    connections_per_client: ConnectionsPerClientOpt = 32,
    max_connections: MaxConnectionsOpt = 256,
    trusted_proxy: TrustedProxyOpt = None,
    metrics_listen: MetricsListenOpt = None,
    metrics_allowed_hosts: MetricsAllowedHostsOpt = None,
) -> None:
    """Serve POST /add-checkpoint (c2sp.org/tlog-witness): verify the log's signature and
    a consistency proof from the last checkpoint cosigned, then answer an Ed25519
    cosignature/v1 line (c2sp.org/tlog-cosignature). Answers a stale old size with 409
    Conflict and the witness's size, a forked checkpoint with 422. Also serves GET
    /<SHA-256 of the log's origin, hex>/checkpoint: the checkpoint it last cosigned for
    that log, which `prov verify --witness-url` asks for. Prints the witness's verifier
    key ("witness key NAME+ID+KEY": give it to `prov serve --witness URL=KEY`; also kept
    in STATE/witness.vkey), then "witness on http://HOST:PORT". Stops on SIGINT/SIGTERM: requests in flight are
    answered, the state folder's lock released, "witness stopped" printed, exit 0."""
    from provenance.core.ports import parse_trusted_proxy
    from provenance.web.guard import HttpLimits
    from provenance.witness.http import run_witness

    _check_new_name(name, key)
    # the address first (exit 1 "cannot listen on ..."): nothing is created for a witness
    # that cannot start (before: the key and the state folder, and "witness key" printed)
    check_can_listen(listen, "--listen")
    if metrics_listen is not None:
        check_can_listen(metrics_listen, "--metrics-listen")
    folder_to_fill(state, "--state")
    if key.is_dir():
        raise typer.BadParameter(
            f"{key} is a folder; name the witness's key file (created if missing)",
            param_hint="--key",
        )
    if key.exists() and not key.is_file():  # a FIFO or device: was exit 1
        raise typer.BadParameter(
            f"{key} is {file_kind(key.stat().st_mode)}, not a regular file; name the"
            " witness's key file (created if missing)",
            param_hint="--key",
        )
    if not key.parent.is_dir():
        raise ConfigError(f"{key}: the folder {key.parent} does not exist")
    for leftover in remove_key_leftovers(key):  # as `prov serve` does for its log key
        logging.getLogger(__name__).warning(
            "removed %s, a copy of the witness key left by a start that was killed", leftover
        )
    signer = (
        load_log_signer(key, name, "witness key") if key.exists() else generate_log_key(key, name)
    )
    try:
        witness = Witness(signer, [read_key_text(v) for v in log_key], state)
    except LogError as e:  # two different keys of one log
        raise typer.BadParameter(str(e), param_hint="--log-key") from e
    print(f"witness key {witness.vkey()}", flush=True)
    start_metrics(metrics_listen, metrics_allowed_hosts)
    limits = HttpLimits(
        header_seconds=header_seconds,
        per_client=connections_per_client,
        max_connections=max_connections,
        trusted_proxies=tuple(parse_trusted_proxy(p) for p in trusted_proxy or ()),
    )
    raise_open_files_limit()  # a descriptor per connection, up to --max-connections
    try:
        run_witness(listen, witness, limits)
    finally:
        witness.close()
