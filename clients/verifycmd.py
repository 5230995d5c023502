"""``prov verify``: one file checked against the log with its sidecar (FILE.prov, or
--sidecar), the report printed as text or JSON, the exit code its verdict."""

from __future__ import annotations

import json
import shlex
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text
from typer.core import TyperCommand

from clients.api import ProvenanceClient, default_server
from clients.cited import check_evidence
from clients.cosigned import WitnessCheck, check_witnesses, needs_policy, policy_keys
from clients.derived import pixels_checked
from clients.device import sidecar_path
from clients.files import read_bounded
from clients.options import (
    ServerOpt,
    UsageError,
    WitnessOpt,
    WitnessQuorumOpt,
    WitnessUrlOpt,
    existing,
    verifier_key,
    witness_quorum_of,
)
from clients.report import (
    EXIT_CODES,
    EXIT_FILE_CHANGED,
    EXIT_WITNESS_QUORUM,
    report_to_json,
    report_to_text,
)
from provenance.core.errors import FileChangedError, ProvenanceError
from provenance.core.verify import VerificationReport
from provenance.terminal import SafeConsole, transient_bar
from provenance.wire.jsontext import path_to_json, unicode_only
from provenance.wire.sidecar import MAX_SIDECAR_BYTES, Sidecar, decode_sidecar

# text that is not ours is never read as markup or emoji codes (`SafeConsole`)
out = SafeConsole(soft_wrap=True)
err = SafeConsole(stderr=True, soft_wrap=True)


class OneFileCommand(TyperCommand):
    """`prov verify`: one FILE argument; more files are a usage error (exit 2) that points
    to `prov scan`, which checks many (Click's own error said only "Got unexpected extra
    argument")."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Click's Context
        ctx.allow_extra_args = True  # the extra files land in ctx.args, to be named below
        rest = super().parse_args(ctx, args)
        if ctx.args:
            given = [str(ctx.params.get("file")), *ctx.args]
            files = shlex.join(given[:3]) + (" ..." if len(given) > 3 else "")
            raise UsageError(
                f"`prov verify` checks one file, got {len(given)}; `prov scan {files}"
                " --report scan.jsonl` checks many (each file's verdict in one report)",
                ctx=ctx,
            )
        return rest


def _one_media_file(file: Path) -> Path:
    """``file`` unless it is a folder (a usage error pointing to `prov scan`) or a sidecar
    (FILE.prov: a usage error naming the media file to verify). Typer callback of `prov
    verify`'s FILE; first as `existing`. Raises typer.BadParameter."""
    existing(file)
    if file.is_dir():
        raise typer.BadParameter(
            f"{file} is a folder; `prov verify` checks one file. `prov scan"
            f" {shlex.quote(str(file))} --report scan.jsonl` checks every file in it",
            param_hint="FILE",
        )
    if file.name.endswith(".prov") and len(file.name) > len(".prov"):
        media = file.with_name(file.name.removesuffix(".prov"))
        beside = (
            f"verify the media file beside it, `prov verify {shlex.quote(str(media))}`, which"
            " reads this sidecar"
            if media.is_file()
            else f"verify the media file it describes ({media.name}); it reads FILE.prov"
            " beside it, or give --sidecar"
        )
        raise typer.BadParameter(f"{file} is a provenance sidecar: {beside}", param_hint="FILE")
    return file


def verify(
    file: Annotated[
        Path,
        typer.Argument(help="The file to verify.", callback=_one_media_file, readable=False),
    ],
    sidecar: Annotated[
        Path | None,
        typer.Option(
            help="Sidecar to check (default: FILE.prov when it exists).",
            callback=existing,
            dir_okay=False,
        ),
    ] = None,
    server: ServerOpt = default_server(),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    detect: Annotated[bool, typer.Option(help="Ask for the advisory detector's score.")] = True,
    no_sidecar: Annotated[
        bool, typer.Option("--no-sidecar", help="Ignore FILE.prov beside the file.")
    ] = False,
    log_key: Annotated[
        str | None,
        typer.Option(
            envvar="PROV_LOG_KEY",
            help="The log's verifier key (text or a file holding it; `prov log key` prints"
            " it): the evidence of a verdict citing a logged claim is checked with it here"
            " (signed checkpoint, inclusion proof); exit 3 when it does not verify.",
            callback=verifier_key,
            show_default=False,
        ),
    ] = None,
    witness: WitnessOpt = None,
    witness_quorum: WitnessQuorumOpt = None,
    witness_url: WitnessUrlOpt = None,
) -> None:
    """Verify a file against the log and print the report.

    Without --log-key or --witness, the verdict and its evidence are the server's word.
    With --log-key, the receipt of the claim a verdict cites (SIGNED_ORIGINAL, DERIVED,
    REVOKED_KEY) must verify with that key: a checkpoint it signed and an inclusion
    proof of the claim's leaf in that checkpoint's tree.

    With --witness, the matched claim's receipt must be cosigned by the policy's quorum;
    a receipt issued before its checkpoint was cosigned is first brought up to the
    server's newest cosigned checkpoint (all proofs checked here). The receipt of each
    claim listed as also signed is proven too; one the witnesses have not cosigned yet is
    shown so, and does not fail the policy.

    With --witness-url, each witness named is also asked for the checkpoint it last
    cosigned, and every receipt checked must be of one append-only log with it: the
    server alone cannot then hide a fork behind an old cosigned checkpoint.

    Exit codes: 0 SIGNED_ORIGINAL, 10 DERIVED, 11 UNSIGNED, 12 REVOKED_KEY,
    13 TAMPERED; 14 when --witness is given and fewer than --witness-quorum of them
    cosigned the receipt's checkpoint, or a --witness-url's checkpoint cannot be fetched
    or checked; 3 when the server's answer cites a claim of other bytes, or its evidence
    does not verify with --log-key (or, with --witness, with the log's key), or a
    receipt is not of one log with a --witness-url's checkpoint (a fork); 15 when FILE changed
    while it was being verified (verify it again); 1 when the file or server could not
    be checked; 2 usage errors.
    """
    if no_sidecar and sidecar is not None:
        raise UsageError(
            "--no-sidecar judges the file without any sidecar, and --sidecar names one to"
            " check: give one of them"
        )
    policy = policy_keys(witness or [])
    quorum = witness_quorum_of(len(policy), witness_quorum)
    needs_policy(witness_url, policy)
    found, unread = (None, None) if no_sidecar else _read_sidecar(file, sidecar)
    cosigned: WitnessCheck | None = None
    vkey = _read_key_text(log_key) if log_key is not None else None
    checked: int | None = None  # the tree size the evidence was proven in, with --log-key
    try:
        # on a terminal, a bar (stderr) while a large file goes up and the server checks it
        with ProvenanceClient(server) as c, transient_bar(err) as bar:
            task = bar.add_task("uploading", total=None)

            def sent(done: int, size: int) -> None:
                if done < size:
                    bar.update(task, completed=done, total=size)
                else:  # all sent: the server's part, of unknown length
                    bar.update(task, total=None, description="checking (the server decodes it)")

            report = c.verify_with_sidecar(file, found, detect=detect, progress=sent)
            if vkey is not None:
                checked = check_evidence(report, vkey, server)
            if policy:
                cosigned = check_witnesses(c, report, found, policy, quorum, vkey, witness_url)
    except ProvenanceError as e:
        if as_json:  # scripts always get a JSON object on stdout
            failed = {"status": None, **path_to_json(str(file)), "error": str(e)}
            print(json.dumps(unicode_only(failed), indent=2))
        if isinstance(e, FileChangedError):  # no fault of the file's or the server's
            err.print(Text.assemble(("error:", "red"), f" {e}"))
            raise typer.Exit(EXIT_FILE_CHANGED) from None
        raise
    pixels = pixels_checked(report)  # read before any reason of our own is added
    if unread is not None:
        report = replace(report, reasons=(*report.reasons, unread))
    # proven in a checkpoint that met the policy: not when it was not met (exit 14), as the
    # proof may not have been made (--json does not say "witness" then)
    witnessed = cosigned is not None and cosigned.leaf_index is not None and not cosigned.error
    if as_json:
        doc = report_to_json(report, str(file))
        doc["evidence_checked"] = (
            "log-key" if checked is not None else "witness" if witnessed else None
        )
        doc["pixels_checked"] = pixels
        if cosigned is not None:
            doc["witnesses"] = cosigned.to_json()
            flags = cosigned.also_cosigned  # each "also" claim: its receipt cosigned yet?
            for i, entry in enumerate(doc["evidence"]["other_claims"]):
                entry["witness_cosigned"] = flags[i] if i < len(flags) else None
        print(json.dumps(unicode_only(doc), indent=2))  # a reason may name FILE.prov
    else:
        here = _checked_line(report, vkey, checked, witnessed)
        flags = cosigned.also_cosigned if cosigned is not None else ()
        text = report_to_text(report, str(file), checked_here=here, also_cosigned=flags)
        out.print(text, highlight=False)
        if cosigned is not None:
            (err if cosigned.error else out).print(cosigned.text(), highlight=False)
    if cosigned is not None and cosigned.error:
        raise typer.Exit(EXIT_WITNESS_QUORUM)
    raise typer.Exit(EXIT_CODES[report.status])


def _read_key_text(value: str) -> str:
    """`provenance.witness.client.read_key_text`, loaded only when --log-key is given."""
    from provenance.witness.client import read_key_text

    return read_key_text(value)


def _checked_line(
    report: VerificationReport, vkey: str | None, size: int | None, witnessed: bool
) -> str:
    """What the client itself checked of the cited claim's receipt, for the report's
    ``checked`` line: proven with --log-key in a tree of ``size`` entries, left to
    --witness's line, not checked with --log-key as the verdict (TAMPERED) vouches for
    nothing, or not checked at all; "" when the report cites no logged claim."""
    cited = report.evidence.claim
    if cited is None or cited.receipt is None:
        return ""
    if vkey is not None and size is not None:
        name = vkey.split("+", 1)[0]
        return (
            f"receipt verified here with --log-key (log {name}): checkpoint signed by that"
            f" key, leaf {cited.receipt.leaf_index} proven in its tree of {size} entries"
        )
    if witnessed:
        return ""  # the witnesses' line says what was checked
    if vkey is not None:  # a verdict that vouches for nothing (TAMPERED): `check_evidence`
        return (
            f"the receipt of a {report.status} verdict's claim is not checked with --log-key"
            " (the verdict vouches for nothing): the receipt line above is the server's word"
        )
    return (
        "the server's evidence was not checked against a pinned log key (--log-key or"
        " --witness): the receipt line above is the server's word"
    )


def _read_sidecar(file: Path, given: Path | None) -> tuple[Sidecar | None, str | None]:
    """The sidecar to check and, when FILE.prov was found but cannot be used, the reason
    the report gets (the file is then judged on its own bytes: README, "Verifying").

    FILE.prov is looked for beside the file unless --sidecar names one; an unreadable
    --sidecar is a usage error (UsageError, exit 2), as the user asked for it. Read with
    `clients.files.read_bounded`: a FIFO or device is refused without blocking, and at
    most MAX_SIDECAR_BYTES are read."""
    path = given if given is not None else sidecar_path(file)
    if given is None and not path.exists():
        return None, None
    try:
        return decode_sidecar(read_bounded(path, MAX_SIDECAR_BYTES, "sidecar")), None
    except OSError as e:
        problem = f"cannot read it: {e.strerror or e}"
    except ProvenanceError as e:
        problem = str(e)
    if given is not None:
        raise UsageError(f"--sidecar {path} is not a usable sidecar ({problem})")
    return None, (
        f"the sidecar found beside the file ({path.name}) is not usable ({problem});"
        " it was not used"
    )
