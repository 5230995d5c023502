"""Command-line options shared by every `prov` command that talks to a server, and
checks of option values that Typer cannot express."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

#: ``--server HOST:PORT``, read from PROV_SERVER when not given.
ServerOpt = Annotated[
    str,
    typer.Option(
        "--server",
        envvar="PROV_SERVER",
        help="Server address HOST:PORT (default: $PROV_SERVER or 127.0.0.1:50051).",
        show_default=False,
    ),
]

#: ``--witness KEY`` (repeat): a witness policy's cosigner keys, for the commands that
#: check cosignatures (`clients.cosigned.policy_key` reads each value).
WitnessOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--witness",
        help="A witness's cosigner key NAME+ID+KEY (as `prov witness serve` prints it), or"
        " NAME=KEY; text or a file; repeat for each witness of the policy (C2SP"
        " tlog-cosignature).",
    ),
]
#: ``--witness-quorum K``: cosignatures required among ``--witness``.
WitnessQuorumOpt = Annotated[
    int | None,
    typer.Option(
        "--witness-quorum", help="Cosignatures required among --witness (default: all).", min=0
    ),
]


def in_existing_folder(path: Path, option: str) -> Path:
    """``path`` if the folder it would be created in exists; else a usage error (exit
    2, a clean message naming ``option``) instead of a traceback later, when the file is
    first written. Raises typer.BadParameter."""
    folder = path.parent
    if not folder.is_dir():
        raise typer.BadParameter(
            f"{path}: the folder {folder} does not exist (create it first)", param_hint=option
        )
    return path


#: ``--header-seconds``, ``--connections-per-client``, ``--max-connections``: the
#: connection limits of an HTTP server (`prov web`, `prov witness serve`; see
#: `provenance.web.guard`).
HeaderSecondsOpt = Annotated[
    float,
    typer.Option(
        help="Close a connection whose request line and headers have not all arrived within"
        " this many seconds (408 if part came).",
        min=0.1,
    ),
]
ConnectionsPerClientOpt = Annotated[
    int,
    typer.Option(
        help="Connections one client may hold open (one IPv4 address, or one IPv6 /64);"
        " more get 503.",
        min=1,
    ),
]
MaxConnectionsOpt = Annotated[
    int, typer.Option(help="Connections open at once in all; more get 503.", min=1)
]
