"""What `prov sign` and the `prov device` commands share: the device key's passphrase,
the server a device calls, and what a sync could not do, said on stderr."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.text import Text

from clients.device import DeviceHome, SyncResult
from provenance.cli.passphrase import from_variable, read_passphrase
from provenance.core.errors import WrongPassphraseError
from provenance.terminal import SafeConsole

# text that is not ours is never read as markup or emoji codes (`SafeConsole`)
err = SafeConsole(stderr=True, soft_wrap=True)


#: The environment variable holding the device key's passphrase (for scripts).
PASSPHRASE_ENV = "PROV_PASSPHRASE"


def device_passphrase(confirm: bool = False) -> bytes:
    """The device key's passphrase: PROV_PASSPHRASE, else a hidden prompt
    (`provenance.cli.passphrase.read_passphrase`). Raises UsageError (exit 2) when neither is
    possible (no variable, no terminal)."""
    return read_passphrase(
        env=PASSPHRASE_ENV,
        what="the device key",
        prompt="Device key passphrase",
        confirm=confirm,
    )


@contextmanager
def naming_where_the_passphrase_came_from() -> Iterator[None]:
    """Around decrypting the device key with `device_passphrase`: a WrongPassphraseError
    raised inside is raised again saying where the passphrase came from ($PROV_PASSPHRASE
    or the prompt) and what to do; other errors pass unchanged."""
    try:
        yield
    except WrongPassphraseError as e:
        where = (
            f"the passphrase came from ${PASSPHRASE_ENV}: set it to the device key's, or unset"
            " it to be asked"
            if from_variable(PASSPHRASE_ENV)
            else "the passphrase was typed at the prompt: run again and type the device key's"
        )
        raise WrongPassphraseError(f"{e} ({where})") from e


def print_sync_problems(h: DeviceHome, done: SyncResult, server: str, stops: bool = True) -> None:
    """Say what a sync could not do, and where the claims concerned are (``stops``: also
    why it stopped early; `prov sign` says that on each file's line instead)."""
    for note in done.notes.values():
        err.print(Text.assemble(("note:", "yellow"), f" {note}"))
    for reason in (*done.refused.values(), *done.set_aside.values()):
        err.print(Text.assemble(("set aside:", "red"), f" {reason}"))
    if done.revoked:  # signing again with this key is refused as well
        err.print(
            f"claims set aside are kept in {h.set_aside_dir} (`prov device show` lists them);"
            " this device's key is revoked, so the log takes none of its claims, old or new:"
            " make a new key (`prov device init --force`; this device's claims are kept),"
            " enroll it with a new token from the operator, and sign the files again",
        )
    elif done.refused or done.set_aside:
        err.print(
            f"claims set aside are kept in {h.set_aside_dir} (`prov device show` lists them);"
            " sign the file again for a new claim, or `prov device sync --retry-set-aside`"
            " once the cause is fixed",
        )
    if stops and done.unreachable:
        err.print(Text.assemble(("stopped:", "red"), f" {done.unreachable}; the rest stays queued"))
    if stops and done.not_enrolled:
        err.print(Text.assemble(("stopped:", "red"), f" {not_enrolled_text(h, server)}"))
    elif stops and done.key_changed:  # it says that the claims stay queued, and why
        err.print(Text.assemble(("stopped:", "red"), f" {done.deferred}"))
    elif stops and done.deferred:
        err.print(
            Text.assemble(
                ("stopped:", "red"),
                f" {done.deferred}; it and the rest stay queued for the next sync",
            )
        )


def not_enrolled_text(h: DeviceHome, server: str) -> str:
    """What happened when ``server`` answered that it has no such device, and what to do
    (the enrollment command), given where this device says it enrolled."""
    state = h.state()
    device = f"this device ({state.device_id[:16]}…)"
    if state.server and state.server != server:
        return (
            f"{device} is enrolled with {state.server}, not with {server}; its claims stay"
            f" queued. Submit them there: `prov device sync --server {state.server}` (with"
            f" neither --server nor $PROV_SERVER, `prov device sync` and `prov sign` call"
            f" {state.server}, the server this device enrolled with)"
        )
    if state.server:
        lost = (
            f"the server at {server} no longer knows {device}, which enrolled there (its"
            " database was replaced?)"
        )
    else:
        lost = f"{device} is not enrolled with the server at {server}"
    return (
        f"{lost}; its claims stay queued. Ask the server's operator for a one-time token"
        f" (`prov admin enroll-token`), enroll with `prov device enroll --server {server}"
        " --token TOKEN`, then `prov device sync` submits what is queued"
    )


def device_server(ctx: typer.Context, server: str, h: DeviceHome) -> str:
    """The server a device command (`prov sign`, `prov device sync`) calls: the one
    --server or $PROV_SERVER names, else the one this device enrolled with (recorded in
    its device.json by `prov device enroll`), else ``server`` (127.0.0.1:50051). Says on
    stderr when it is the enrolled one; warns when the one named is not the enrolled one
    (used all the same: the user's choice; a server that does not know the device keeps
    its claims queued). Raises ConfigError when there is no device or its state is
    damaged (`DeviceHome.state`)."""
    enrolled = h.state().server
    # by name: Typer's Context is its vendored Click's, whose enum is not click's
    source = getattr(ctx.get_parameter_source("server"), "name", "DEFAULT")
    named = {"COMMANDLINE": "--server", "ENVIRONMENT": "$PROV_SERVER"}
    if source not in named:
        if enrolled:
            err.print(
                f"server: {enrolled}, the one this device enrolled with (--server or"
                " $PROV_SERVER to call another)",
                highlight=False,
            )
            return enrolled
        return server
    if enrolled and server != enrolled:
        err.print(
            Text.assemble(
                ("warning:", "yellow"),
                f" this device enrolled with {enrolled}; {named[source]} names {server},"
                " and this command calls it. A server this device did not enroll with"
                f" refuses its claims (they stay queued); leave out {named[source]} to call"
                f" {enrolled}",
            )
        )
    return server
