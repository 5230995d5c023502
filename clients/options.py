"""Command-line options shared by every `prov` command that talks to a server."""

from __future__ import annotations

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
