"""The log key a device trusts: the receipt a server answers checked against the key
pinned at enrollment, and what to say when a server answers another."""

from __future__ import annotations

from clients.api import ProvenanceClient
from provenance.core.claims import Receipt, SignedClaim
from provenance.core.errors import ProvenanceError, TransportError
from provenance.log.checkpoint import NoteVerifier
from provenance.log.receipt import verify_receipt
from provenance.wire.sidecar import Sidecar


def pinned_key_differs(address: str, pinned: str, served: str, enrolled: str = "") -> str:
    """What to say when the server at ``address`` answers the log key ``served`` and
    this device pinned ``pinned`` at enrollment with the server at ``enrolled`` (its
    device.json's; "" when unknown). No claim was sent: the key is asked first
    (`DeviceHome.check_log_key`). A server other than the enrolled one (--server or
    $PROV_SERVER naming another) is told as such, with the command that submits to the
    enrolled one."""
    if enrolled and enrolled != address:
        return (
            f"this device enrolled with {enrolled}, whose log key {_key_label(pinned)} it"
            f" pinned; the server at {address} answers another log key,"
            f" {_key_label(served)}, so its receipts would not be trusted: no claim was sent"
            f" to it, and the claims stay queued. Submit them to {enrolled}: `prov device"
            f" sync --server {enrolled}` (with neither --server nor $PROV_SERVER, `prov"
            f" device sync` and `prov sign` call {enrolled}); to log with {address}"
            f" instead, enroll there (`prov device enroll --server {address} --token"
            " TOKEN` pins its key)"
        )
    return (
        f"the server at {address} answers the log key {_key_label(served)}, which differs"
        f" from the one pinned at enrollment, {_key_label(pinned)}: its receipts are not"
        " trusted, so no claim was sent to it, and the claims stay queued. If its log was"
        " replaced on purpose, enroll this device there again (`prov device enroll --token"
        " TOKEN` pins the key it answers), or, when it says this key is already enrolled,"
        " make and enroll a new key (`prov device init --force`, then `prov device"
        " enroll`); otherwise something else answers at that address"
    )


def _key_label(vkey: str) -> str:
    """A verifier key's name and key id, ``NAME+ID``."""
    return "+".join(vkey.split("+", 2)[:2])


def _check_receipt(
    client: ProvenanceClient, receipt: Receipt, signed: SignedClaim, vkey: str
) -> None:
    """Check the receipt the server answered for ``signed`` with its log key ``vkey``
    before the claim is taken as logged. Raises TransportError (INTERNAL: the entry
    stays queued, set aside after MAX_FAILED_ATTEMPTS) when it does not verify: before,
    an empty or forged answer (a proxy, a broken server) was written into the sidecar
    as a receipt and the claim dropped from the queue though never logged."""
    try:
        verify_receipt(receipt, signed, NoteVerifier.from_vkey(vkey))
    except ProvenanceError as e:
        raise TransportError(
            f"the server at {client.address} answered a receipt that does not verify with"
            f" its log key ({e}): the claim is not taken as logged and stays queued",
            "INTERNAL",
        ) from None


def receipt_problem(sidecar: Sidecar, pinned: str) -> str:
    """Why the receipt of ``sidecar`` is not trusted ("" when it is, or there is none):
    it must verify with ``pinned``, the log key this device pinned at enrollment; on a
    device with none pinned yet, with the key the sidecar names, which catches a
    damaged, empty or forged answer written as a receipt, though not one a hostile
    server signed with its own key; with neither, it is not checked. Older versions
    wrote an answer that did not verify into the sidecar and dropped the claim from the
    queue (`_check_receipt` refuses it now)."""
    receipt = sidecar.receipt
    vkey = pinned or sidecar.log_verifier_key
    if receipt is None or not vkey:
        return ""
    try:
        verify_receipt(receipt, sidecar.signed_claim, NoteVerifier.from_vkey(vkey))
    except ProvenanceError as e:
        if not pinned:
            return f"its receipt does not verify with the log key it names ({e})"
        named = sidecar.log_verifier_key
        other = (
            f", which is not the key it names, {_key_label(named)}"
            if named and named != pinned
            else ""
        )
        return (
            "its receipt does not verify with the log key pinned at enrollment,"
            f" {_key_label(pinned)}{other} ({e})"
        )
    return ""
