"""Command-line options shared by every `prov` command that talks to a server, and checks
of option values that Typer cannot express. Those that provenance/'s own commands (`prov
serve`, `prov web`) share with these are defined in `provenance.cli.options` and
re-exported here; the device folder and the log's and witnesses' keys are the clients'."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from provenance.cli.options import MAX_WAIT_S as MAX_WAIT_S
from provenance.cli.options import SIGNAL_POLL_S as SIGNAL_POLL_S
from provenance.cli.options import ConnectionsPerClientOpt as ConnectionsPerClientOpt
from provenance.cli.options import HeaderSecondsOpt as HeaderSecondsOpt
from provenance.cli.options import MaxConnectionsOpt as MaxConnectionsOpt
from provenance.cli.options import MetricsAllowedHostsOpt as MetricsAllowedHostsOpt
from provenance.cli.options import MetricsListenOpt as MetricsListenOpt
from provenance.cli.options import ServerOpt as ServerOpt
from provenance.cli.options import TrustedProxyOpt as TrustedProxyOpt
from provenance.cli.options import UsageError as UsageError
from provenance.cli.options import check_can_listen as check_can_listen
from provenance.cli.options import check_listen_form as check_listen_form
from provenance.cli.options import existing as existing
from provenance.cli.options import finite as finite
from provenance.cli.options import folder_to_fill as folder_to_fill
from provenance.cli.options import in_existing_folder as in_existing_folder
from provenance.cli.options import listen_address as listen_address
from provenance.cli.options import listens_clash as listens_clash
from provenance.cli.options import nonempty_file_path as nonempty_file_path
from provenance.cli.options import nonempty_path as nonempty_path
from provenance.cli.options import nonempty_place as nonempty_place
from provenance.cli.options import server_address as server_address
from provenance.cli.options import start_metrics as start_metrics
from provenance.cli.options import trusted_proxies as trusted_proxies


def device_folder(path: Path) -> Path:
    """``path`` unless something other than a folder is there (a file, FIFO, device, or a
    link to one): a usage error (exit 2) naming ``--home``. Before, `prov device init`
    said "error: File exists", the other device commands "Not a directory" or "no device
    key ... run `prov device init` first" (exit 1). A folder not made yet passes: `prov
    device init` creates it, parents too. Typer callback of ``--home``. Raises
    typer.BadParameter."""
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise typer.BadParameter(
            f"{path} is not a folder: the device folder (--home, or $PROV_HOME) holds the"
            " key, state and queue; name a folder (created if missing)",
            param_hint="--home",
        )
    return path


def files_not_folders(
    command: str, does: str, whole: str = ""
) -> Callable[[list[Path]], list[Path]]:
    """The Typer callback of the FILES... argument of ``prov COMMAND``: the paths, when
    each exists (`existing`) and none is a folder. A folder is a usage error (exit 2)
    naming it and saying what to give: "DIR is a folder; `prov COMMAND` DOES: name them,
    e.g. `prov COMMAND DIR/*.jpg`", then ``whole`` (``{dir}``: the folder, quoted for a
    shell), what handles a whole folder. Before, Click said "file 'DIR' is a directory."
    alone. The callback raises typer.BadParameter."""

    def check(paths: list[Path]) -> list[Path]:
        existing(paths)
        for path in paths:
            if path.is_dir():
                folder = shlex.quote(os.fspath(path).rstrip("/") or "/")
                also = f"; {whole.format(dir=folder)}" if whole else ""
                raise typer.BadParameter(
                    f"{path} is a folder; `prov {command}` {does}: name them, e.g."
                    f" `prov {command} {folder}/*.jpg`{also}",
                    param_hint="FILES",
                )
        return paths

    return check


#: ``--home DIR``: the device folder (key, state, queue), read from PROV_HOME when not
#: given, else ~/.prov (`clients.device.default_home`).
HomeOpt = Annotated[
    Path,
    typer.Option(
        "--home",
        envvar="PROV_HOME",
        help="Device folder with key, state and queue (default: $PROV_HOME or ~/.prov)."
        " A command that finds another prov command using it waits up to $PROV_LOCK_WAIT"
        " seconds (default 600), then exits 1.",
        show_default=False,
        callback=device_folder,
        parser=nonempty_path,
    ),
]


#: ``--server HOST:PORT`` of the commands that submit this device's claims (`prov sign`,
#: `prov device sync`): when neither it nor PROV_SERVER is given, the server the device
#: enrolled with (`clients.devicecommon.device_server`).
DeviceServerOpt = Annotated[
    str,
    typer.Option(
        "--server",
        envvar="PROV_SERVER",
        help="Server address HOST:PORT (default: $PROV_SERVER, else the server this device"
        " enrolled with, else 127.0.0.1:50051).",
        show_default=False,
        callback=server_address,
    ),
]


def _shown(value: str) -> str:
    """``value`` as a usage error quotes it: at most 80 characters."""
    return value if len(value) <= 80 else value[:77] + "..."


def _unquoted(e: Exception, text: str) -> str:
    """``e``'s message with the quoted ``text`` of a key file left out: a mistyped path
    may name a file of secrets (/etc/shadow, a private key), which a usage error would
    put in a terminal's scrollback or a service's log."""
    return str(e).replace(repr(text), "read from that file")


def verifier_key(value: str | None) -> str | None:
    """``value`` if it is a log's verifier key NAME+ID+KEY (as `prov log key` and `prov
    serve` print it), or names a readable file holding one; else a usage error (exit 2).
    Typer callback of ``--log-key`` where it means the log's public key. Raises
    typer.BadParameter."""
    from provenance.core.errors import ProvenanceError
    from provenance.log.checkpoint import NoteVerifier
    from provenance.witness.client import read_key_text

    if value is None:
        return None
    try:
        text = read_key_text(value, "log verifier key")
    except ProvenanceError as e:
        raise typer.BadParameter(str(e), param_hint="--log-key") from None
    try:
        NoteVerifier.from_vkey(text)
    except ProvenanceError as e:
        why = _unquoted(e, text) if text != value.strip() else str(e)
        raise typer.BadParameter(
            f"{_shown(value)!r} is not a log verifier key NAME+ID+KEY nor a file holding one ({why});"
            " `prov log key` prints the key, as does `prov serve` in its 'log key:' line",
            param_hint="--log-key",
        ) from None
    return value


def verifier_keys(values: list[str]) -> list[str]:
    """Each of ``values`` checked by `verifier_key`: the Typer callback of a repeated
    ``--log-key``. Raises typer.BadParameter (exit 2) for the first that is no key."""
    for value in values:
        verifier_key(value)
    return values


#: A witness's cosigner key as `prov witness serve` prints it (its name, key id in hex,
#: and base64 key: `provenance.witness.cosigner_vkey`), shown in ``--witness`` errors.
WITNESS_KEY_EXAMPLE = "witness.example/w1+7e136b5c+BAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"


def witness_keys(values: list[str] | None) -> list[str] | None:
    """``values`` if each is a witness's cosigner key as `clients.cosigned.policy_key`
    reads it (NAME+ID+KEY or NAME=NAME+ID+KEY, text or a file); else a usage error (exit 2)
    before any call. Typer callback of ``--witness`` on the commands that check
    cosignatures. Raises typer.BadParameter."""
    from clients.cosigned import policy_key
    from provenance.core.errors import ConfigError, ProvenanceError
    from provenance.witness.client import read_key_text

    for value in values or []:
        try:
            policy_key(value)
        except ProvenanceError as e:
            named = value.partition("=")[2]
            file = (
                value if Path(value).is_file() else named if named and Path(named).is_file() else ""
            )
            why = str(e)
            if file and not isinstance(e, ConfigError):
                why = _unquoted(e, read_key_text(file))
            raise typer.BadParameter(
                f"{_shown(value)!r}: {why}; give the whole cosigner key NAME+ID+KEY that `prov"
                " witness serve` prints in its 'witness key' line, inline or in a file (e.g."
                f" {WITNESS_KEY_EXAMPLE}); as NAME=NAME+ID+KEY (or NAME=FILE) the name must be"
                " the key's own",
                param_hint="--witness",
            ) from None
    return values


#: ``--witness KEY`` (repeat): a witness policy's cosigner keys, for the commands that
#: check cosignatures (`clients.cosigned.policy_key` reads each value).
WitnessOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--witness",
        help="A witness's whole cosigner key NAME+ID+KEY, as `prov witness serve` prints it"
        " (e.g. witness.example/w1+7e136b5c+BAAB...), inline or in a file; NAME=NAME+ID+KEY"
        " is taken too; repeat for each witness of the policy (C2SP tlog-cosignature).",
        metavar="KEY",
        callback=witness_keys,
    ),
]


def witness_urls(values: list[str] | None) -> list[str] | None:
    """``values`` as witness URL prefixes (`provenance.witness.client.parse_witness_url`:
    `provenance.cli.urls.url_problem`'s http(s) URLs with no query or fragment, trailing
    slashes dropped), each witness once (`distinct_witness_urls`: ``URL`` and ``URL/``
    asked once); else a usage error (exit 2) before any call, "'URL': WHY". Typer
    callback of ``--witness-url``. Raises typer.BadParameter."""
    from provenance.core.errors import ConfigError
    from provenance.witness.client import distinct_witness_urls, parse_witness_url

    try:
        return distinct_witness_urls([parse_witness_url(v) for v in values]) if values else values
    except ConfigError as e:
        said = str(e).removeprefix("--witness-url ")  # the flag is named once, by Typer
        raise typer.BadParameter(said, param_hint="--witness-url") from None


#: ``--witness-url URL``, repeatable: witnesses asked directly for the checkpoint they
#: last cosigned, each proven of one log with the receipts checked (`clients.cosigned`).
WitnessUrlOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--witness-url",
        help="A witness's URL (http(s)://HOST:PORT, as `prov witness serve` prints it): the"
        " checkpoint it last cosigned is fetched from it, must carry a --witness key's"
        " cosignature, and must be of one append-only log with the receipt's checkpoint"
        " (else exit 3, a fork; exit 14 when it cannot be fetched or checked); repeat for"
        " each witness to ask. Needs --witness.",
        metavar="URL",
        callback=witness_urls,
    ),
]
#: ``--witness-quorum K``: cosignatures required among ``--witness``.
WitnessQuorumOpt = Annotated[
    int | None,
    typer.Option(
        "--witness-quorum",
        help="Cosignatures required among --witness: 1 to the number of --witness given"
        " (default: all of them).",
    ),
]


def witness_quorum_of(witnesses: int, quorum: int | None) -> int:
    """The cosignatures a policy of ``witnesses`` keys requires: ``quorum``, or all of them
    when None. Raises typer.BadParameter (exit 2) when ``quorum`` is more than the keys,
    or 0 or less: a quorum of 0 would require no cosignature, so ``--witness`` would
    check none (and `prov serve --witness-quorum 0` means all: a user carrying that over
    would get none).
    Above `MAX_PUBLISHED_LINES` (15), warns on stderr that no `prov serve` checkpoint can
    meet it (it carries at most 15 cosignatures; c2sp.org/signed-note verifiers need
    accept only 16 signatures): not an error, as another log's checkpoints may carry
    more."""
    from provenance.witness.client import MAX_PUBLISHED_LINES

    if quorum is not None and quorum < 1:
        give = (
            f"give 1 to {witnesses} (the --witness given), or leave it out to require all"
            " of them (what `prov serve --witness-quorum 0` means)"
            if witnesses
            else "it counts cosignatures among --witness keys, and none is given"
        )
        raise typer.BadParameter(
            f"a quorum of {quorum} requires no cosignature, so --witness would check none; {give}",
            param_hint="--witness-quorum",
        )
    if quorum is not None and quorum > witnesses:
        raise typer.BadParameter(
            f"{quorum} is more than the {witnesses} --witness given",
            param_hint="--witness-quorum",
        )
    required = witnesses if quorum is None else quorum
    if required > MAX_PUBLISHED_LINES:
        typer.echo(
            f"warning: a quorum of {required} cosignatures"
            f"{' (all --witness given)' if quorum is None else ''}: a checkpoint from `prov"
            f" serve` carries at most {MAX_PUBLISHED_LINES}, so it can never meet it (give"
            f" --witness-quorum {MAX_PUBLISHED_LINES} or less); C2SP signed-note verifiers"
            " need accept only 16 signatures in all",
            err=True,
        )
    return required
