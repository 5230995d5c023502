"""``prov sign``: captures signed on this device, each claim submitted (or queued) and
its sidecar written, optionally exported with Content Credentials; one line a file and a
closing summary."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from clients.api import CANNOT_REACH, ProvenanceClient, default_server
from clients.device import DeviceHome, SidecarExistsError, check_embeddable, default_home
from clients.devicecommon import (
    device_passphrase,
    device_server,
    naming_where_the_passphrase_came_from,
    not_enrolled_text,
    print_sync_problems,
)
from clients.interrupt import EXIT_INTERRUPTED, StopBetweenFiles
from clients.options import DeviceServerOpt, HomeOpt, files_not_folders
from provenance.cli.urls import ENDPOINT, url_problem, url_refusal
from provenance.core.claims import Claim
from provenance.core.errors import MediaTooLargeError, ProvenanceError, TimestampError
from provenance.core.keys import DeviceKey
from provenance.core.verify import too_flat, usable_for_near_copies
from provenance.media.budget import decode_budget_problem
from provenance.terminal import SafeConsole, shown_line

if TYPE_CHECKING:  # imported when used: only `prov sign --tsa-url` needs it
    from provenance.c2pa.timestamp import TimestampAuthority

# text that is not ours is never read as markup or emoji codes (`SafeConsole`)
out = SafeConsole(soft_wrap=True)
err = SafeConsole(stderr=True, soft_wrap=True)


#: `prov sign`'s exit code when every file was signed (or already was) but a claim is only
#: queued on the device, not logged (the server unreachable, not enrolled there, answering
#: another log key than the one pinned, deferring it): a script tells it from 0, logged.
#: A failure (1) or a kept sidecar (2) comes first.
EXIT_QUEUED = 4


def tsa_url(value: str | None) -> str | None:
    """``value`` if it is a URL a timestamp authority can be asked at
    (`provenance.cli.urls.url_problem` with `provenance.cli.urls.ENDPOINT`: http(s), a
    query taken); else a usage error (exit 2) before any file is signed, "'URL': WHY".
    Typer callback of ``--tsa-url``. Raises typer.BadParameter."""
    if value is not None and (problem := url_problem(value, ENDPOINT)):
        raise typer.BadParameter(url_refusal(value, problem), param_hint="--tsa-url")
    return value


#: Seconds `prov sign --tsa-url` waits for the timestamp authority unless --tsa-timeout.
TSA_TIMEOUT_S = 10.0


def sign(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Argument(help="Captures to sign.", callback=files_not_folders("sign", "signs files")),
    ],
    server: DeviceServerOpt = default_server(),
    home: HomeOpt = default_home(),
    c2pa: Annotated[
        bool,
        typer.Option(
            "--c2pa",
            help="Also embed a C2PA manifest (signed with the device key, holding the claim, receipt and checkpoint) into each logged file, in place. Needs the certificate from enrollment with an authority.",
        ),
    ] = False,
    tsa_url: Annotated[
        str | None,
        typer.Option(
            help="With --c2pa: RFC 3161 timestamp authority URL. The C2PA signature gets a"
            " timestamp (sigTst2), so it stays valid after the device certificate expires."
            " If the TSA fails, the manifest is embedded without one, with a warning and"
            " exit 1.",
            callback=tsa_url,
        ),
    ] = None,
    tsa_timeout: Annotated[
        float | None,
        typer.Option(
            help=f"With --tsa-url: seconds to wait for the TSA [default: {TSA_TIMEOUT_S:g}].",
            min=0.1,
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Sign even when FILE.prov already holds a log receipt or another device's"
            " claim: the old sidecar is first copied to FILE.prov.bak.",
        ),
    ] = False,
) -> None:
    """Sign captures: write FILE.prov beside each and submit it to the log.

    A FILE.prov that already describes the unchanged file (logged, or queued) is kept
    and the file is not signed again. One holding a log receipt for other content, or
    another device's claim, is never replaced without --force (exit 2).

    When the server cannot be reached the signed claim is queued on disk;
    `prov device sync` submits it later. A file that fails (not media, over a limit,
    refused by the server, C2PA export impossible) is reported and the rest go on.
    Over several files the last line (on stderr) sums up: how many were signed and
    logged, already signed, queued, refused or not signed. Exit 0 when every file was
    signed and logged or already was, 1 when one failed, else 2 when a sidecar was kept
    instead of signing, else 4 when a claim was signed but only queued (not logged: it
    says so, and `prov device sync` submits it).
    """
    if tsa_url is not None and not c2pa:
        raise typer.BadParameter("--tsa-url timestamps the C2PA manifest: add --c2pa")
    if tsa_timeout is not None and tsa_url is None:
        raise typer.BadParameter(
            "it bounds the wait for the timestamp authority, and none is asked: add"
            " --tsa-url URL (with --c2pa), or drop --tsa-timeout",
            param_hint="--tsa-timeout",
        )
    from provenance.c2pa.timestamp import TimestampAuthority

    tsa = TimestampAuthority(tsa_url, tsa_timeout or TSA_TIMEOUT_S) if tsa_url else None
    h = DeviceHome(home)
    h.require_key()  # before the prompt
    server = device_server(ctx, server, h)
    passphrase = device_passphrase()  # asked before the lock: no command waits on a prompt
    with naming_where_the_passphrase_came_from():
        h.check_passphrase(passphrase)  # a wrong one said now, not after the wait
    failed = refused = 0
    tally: Counter[str] = Counter()  # each file's outcome, for the closing summary
    not_enrolled = False
    key_changed = ""  # why no claim was sent: the server answers another log key
    stop = StopBetweenFiles("Ctrl-C: stopping after this file (Ctrl-C again to stop at once)")
    try:
        # the lock first: Ctrl-C while waiting for it stops at once, nothing signed
        # (before: "stopping after this file", and the wait went on). The key is read
        # under it: a `prov device init --force` that ran while this command waited
        # replaced it, and the old key would sign claims numbered in the new device's
        # state (a number the old key had already used)
        with h.locked(), stop, ProvenanceClient(server) as c:
            with naming_where_the_passphrase_came_from():
                key = h.load_key(passphrase)
            chain = h.certificate() if c2pa else b""
            stopped = ""  # why claims stay queued (server unreachable, a transient refusal)
            for f in files:
                name = shown_line(str(f))  # one line per file: a name's newline cannot forge one
                stop.check()
                try:
                    if c2pa:  # before a sequence number is used: the export must be possible
                        check_embeddable(f)
                    signed = h.sign_file(key, f, force=force)
                except SidecarExistsError as e:
                    err.print(Text.assemble((f"{name}: not signed:", "red"), f" {e}"))
                    refused += 1
                    tally[KEPT] += 1
                    continue
                except ProvenanceError as e:
                    err.print(Text.assemble((f"{name}: not signed:", "red"), f" {e}"))
                    failed += 1
                    tally[FAILED] += 1
                    continue
                sidecar, spath = signed.sidecar, signed.sidecar_path
                verb = "already signed" if signed.already else "signed"
                if signed.note:
                    err.print(
                        Text.assemble(("note:", "yellow"), f" {name}: {shown_line(signed.note)}")
                    )
                if not signed.already and (flat := _flat_note(signed.sidecar.claim)):
                    err.print(Text.assemble(("note:", "yellow"), f" {name}: {flat}"))
                if not signed.already and (over := _over_budget_note(f, signed.sidecar.claim)):
                    err.print(Text.assemble(("note:", "yellow"), f" {name}: {over}"))
                if signed.backup:
                    err.print(
                        f"{name}: the old sidecar is kept as {shown_line(str(signed.backup))}",
                        style="yellow",
                    )
                if signed.already and sidecar.receipt is not None:
                    out.print(
                        f"{name}: already signed (#{sidecar.claim.sequence}) and logged at leaf"
                        f" {sidecar.receipt.leaf_index} -> {shown_line(spath.name)}; not signed again",
                    )
                    tally[ALREADY] += 1
                    if c2pa and not _embed_c2pa(h, key, f, spath, chain, tsa):
                        failed += 1
                        tally[NO_C2PA] += 1
                    continue
                if signed.sidecar_problem:
                    err.print(
                        f"{name}: {signed.sidecar_problem}; the sidecar is kept at {shown_line(str(spath))}",
                        style="yellow",
                        highlight=False,
                    )
                seq, ch = sidecar.claim.sequence, sidecar.signed_claim.claim_hash
                if not stopped:
                    done = h.sync(c)  # earlier queued claims first, then this one
                    if done.unreachable and done.unreachable.startswith(CANNOT_REACH):
                        stopped = f"server {server} unreachable"
                    elif done.unreachable:  # reached: its own words (a database outage)
                        stopped = f"the server at {server} cannot log it now ({done.unreachable})"
                    elif done.not_enrolled:
                        stopped = "this device is not enrolled with the server"
                        not_enrolled = True
                    elif done.key_changed and done.deferred:
                        stopped = "the server answers another log key than this device pinned"
                        key_changed = done.deferred
                    elif done.key_unread and done.deferred:
                        stopped = done.deferred  # it says what failed and that nothing was sent
                    elif done.deferred:
                        stopped = f"the server deferred {done.deferred}"
                    if ch in done.logged:
                        leaf = done.logged[ch].leaf_index
                        out.print(
                            f"{name}: {verb} (#{seq}) and logged at leaf {leaf} -> {shown_line(spath.name)}"
                        )
                        tally[ALREADY if signed.already else LOGGED] += 1
                        if ch in done.notes:
                            err.print(Text.assemble(("note:", "yellow"), f" {done.notes.pop(ch)}"))
                        if c2pa and not _embed_c2pa(h, key, f, spath, chain, tsa):
                            failed += 1
                            tally[NO_C2PA] += 1
                        print_sync_problems(h, done, server, stops=False)
                        continue
                    if ch in done.refused:
                        # the reason starts with the file's name, as `prov device sync` says it
                        reason = done.refused.pop(ch).removeprefix(f"{f.name}: ")
                        err.print(
                            Text.assemble(
                                (f"{name}: {verb} (#{seq}) but refused by the server:", "red"),
                                f" {reason} (set aside in {h.set_aside_dir})",
                            )
                        )
                        failed += 1
                        tally[REFUSED] += 1
                        print_sync_problems(h, done, server, stops=False)
                        continue
                    print_sync_problems(h, done, server, stops=False)
                later = (
                    "enroll it (below)"
                    if not_enrolled
                    else "see below"
                    if key_changed
                    else "run `prov device sync` later"
                )
                out.print(
                    f"{name}: {verb} (#{seq}), queued: {stopped}; {later} -> {shown_line(spath.name)}"
                )
                tally[QUEUED] += 1
                if c2pa:  # asked for and not made: a failure, though the claim is safe in the queue
                    err.print(
                        Text.assemble(
                            (f"{name}: C2PA manifest not embedded:", "red"),
                            " it needs the log receipt; once the claim is logged (`prov device"
                            " sync`), run `prov sign --c2pa` on the file again",
                        )
                    )
                    failed += 1
                    tally[NO_C2PA] += 1
    except KeyboardInterrupt:  # Ctrl-C: what was done, what is queued, what is left
        err.print(_sign_interrupted(h, files, tally), highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if not_enrolled:
        err.print(Text.assemble(("not logged:", "red"), f" {not_enrolled_text(h, server)}"))
    if key_changed:
        err.print(Text.assemble(("not logged:", "red"), f" {key_changed}"))
    code = 1 if failed else 2 if refused else EXIT_QUEUED if tally[QUEUED] else 0
    if tally[QUEUED]:  # said whatever the exit code: a script or a person sees it
        n = tally[QUEUED]
        err.print(
            Text.assemble(
                ("not logged:", "red"),
                f" {n} signed claim{'s' if n != 1 else ''} queued on this device, not in the"
                " log yet"
                + (f" (exit {EXIT_QUEUED})" if code == EXIT_QUEUED else "")
                + "; `prov device sync` submits the queue",
            )
        )
    if len(files) > 1:
        err.print(sign_summary(len(files), tally), highlight=False)
    if code:
        raise typer.Exit(code)


def _flat_note(claim: Claim) -> str:
    """What a claim whose perceptual hashes are all too flat to match (a blank image, an
    all-black video: the verifier's `too_flat`) means for its copies; "" for a claim
    with a usable one, or none (not an image or video)."""
    hashes = claim.soft_bindings
    if not hashes or usable_for_near_copies(hashes):
        return ""
    return (
        f"{too_flat(claim.media_type)}: only exact copies of this file will verify as"
        " signed; re-encoded copies cannot be recognised"
    )


def _over_budget_note(path: Path, claim: Claim) -> str:
    """What the server will do with an image signed here whose decode is over its default
    decode budget (`provenance.media.budget.decode_budget_problem`): the device hashes it
    whatever its size (its PDQ hash still matches a copy the server can decode), but the
    server matches the exact file by its SHA-256 only and cannot compare a copy as large;
    "" for an image within the budget, or a video."""
    if not claim.media_type.startswith("image/"):
        return ""
    problem = decode_budget_problem(path, claim.media_type)
    if not problem:
        return ""
    return (
        f"over the server's default decode budget ({problem}): this exact file is matched"
        " by its SHA-256, but a copy is matched as derived only where the server can decode"
        " it (a smaller copy, or a baseline JPEG)"
    )


def _sign_interrupted(h: DeviceHome, files: list[Path], tally: Counter[str]) -> str:
    """The last line of a `prov sign` stopped by Ctrl-C: how many files were done (with
    the summary's counts), how many signed claims wait in the device queue for `prov
    device sync` (a claim signed when Ctrl-C came is queued, its sidecar written), and
    that the same command signs the rest without signing a file twice."""
    done = sum(n for outcome, n in tally.items() if outcome != NO_C2PA)
    counts = sign_summary(len(files), tally).split(": ", 1)[1] if tally else "none signed"
    queued = len(h.pending())
    waiting = (
        f"; {queued} signed claim{'s' if queued != 1 else ''} queued on this device:"
        " `prov device sync` submits them"
        if queued
        else ""
    )
    return (
        f"interrupted after {done} of {len(files)} files ({counts}){waiting}; the same"
        " command signs the rest (a file already signed is not signed again)"
    )


#: The outcomes `prov sign` counts, in the order its summary names them.
LOGGED, ALREADY, QUEUED, REFUSED, FAILED, KEPT, NO_C2PA = (
    "signed and logged",
    "already signed",
    "queued for `prov device sync`",
    "refused by the server",
    "not signed (failed)",
    "not signed (sidecar kept)",
    "without a C2PA manifest",
)


def sign_summary(files: int, tally: Counter[str]) -> str:
    """The closing line of `prov sign` over several files: how many of each outcome (those
    that happened), e.g. "summary of 5 files: 3 signed and logged, 2 not signed (failed)"."""
    parts = [
        f"{tally[k]} {k}"
        for k in (LOGGED, ALREADY, QUEUED, REFUSED, FAILED, KEPT, NO_C2PA)
        if tally[k]
    ]
    return f"summary of {files} files: {', '.join(parts)}"


def _embed_c2pa(
    h: DeviceHome,
    key: DeviceKey,
    f: Path,
    spath: Path,
    chain: bytes,
    tsa: TimestampAuthority | None,
) -> bool:
    """Embed the C2PA manifest into a logged capture; report a failure (a file that
    already carries another manifest, say) and return False so a batch goes on. A file
    that already carries this claim's manifest (a second run) is left as it is: True,
    or False with a warning when ``tsa`` asked for a timestamp that manifest lacks.
    When the timestamp authority fails, embed without a timestamp, warn, and return
    False."""
    stamped = ", timestamped by the TSA" if tsa else ""
    try:
        try:
            if (found := h.embed_c2pa(key, f, spath, chain, tsa)) is not None:
                if tsa is not None and found.signed_at is None:
                    err.print(
                        Text.assemble(
                            (f"{f}: C2PA manifest already embedded WITHOUT a timestamp;", "yellow"),
                            " left as it is: --tsa-url timestamps a new export only, and"
                            " this claim's manifest is never replaced",
                        )
                    )
                    return False
                out.print(f"{f}: C2PA manifest already embedded for this claim; left as it is")
                return True
        except TimestampError as e:
            h.embed_c2pa(key, f, spath, chain, None)
            err.print(
                Text.assemble(
                    (f"{f}: C2PA manifest embedded WITHOUT a timestamp:", "yellow"),
                    f" {e}; its signing time rests on the log receipt inside it",
                )
            )
            return False
    except MediaTooLargeError as e:
        err.print(
            Text.assemble(
                (f"{f}: C2PA manifest not embedded:", "red"),
                f" {e}; the claim is made without it, and its hard binding covers the"
                " file's bytes: sign such files without --c2pa",
            )
        )
        return False
    except ProvenanceError as e:
        err.print(Text.assemble((f"{f}: C2PA manifest not embedded:", "red"), f" {e}"))
        return False
    out.print(f"{f}: C2PA manifest embedded (Content Credentials signed by this device{stamped})")
    return True
