"""Domain-separated signing: DSSE's pre-authentication encoding over (payload type, bytes).

A device signs PAE(payload_type, payload), never the payload alone, so a signature made
for one kind of message (a claim) can never be replayed as another (an enrollment
proof). Source: DSSE protocol v1, https://github.com/secure-systems-lab/dsse
(protocol.md, "Signature Definition").
"""

from __future__ import annotations

from provenance.core.errors import KeyMaterialError, SignatureError
from provenance.core.keys import DeviceKey, verify_strict

#: Payload type of a serialized `provenance.v1.Claim` message.
PAYLOAD_TYPE_CLAIM = "application/vnd.provenance.claim.v1+protobuf"
#: Payload type of the proof of possession a device signs when it enrolls with a token
#: (over the one-time token, which only the server that issued it accepts, once).
PAYLOAD_TYPE_ENROLL = "application/vnd.provenance.enroll.v1"
#: Payload type of the proof of possession a device signs when it enrolls with a
#: certificate (`provenance.core.registry.certificate_enrollment_statement`: the log's
#: verifier key and the time, so that it counts for one log and a few minutes only).
PAYLOAD_TYPE_ENROLL_CERTIFICATE = "application/vnd.provenance.enroll-certificate.v1"
#: Payload type of a serialized `provenance.v1.KeyEvent` (a logged enrollment or
#: revocation), signed by the admin key or the enrollment authority.
PAYLOAD_TYPE_KEY_EVENT = "application/vnd.provenance.key-event.v1+protobuf"


def pae(payload_type: str, payload: bytes) -> bytes:
    """Return DSSEv1's pre-authentication encoding of (payload_type, payload).

    "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, where type is the UTF-8 encoding
    of payload_type and LEN is the byte length in ASCII decimal without leading zeros.
    """
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def sign_payload(key: DeviceKey, payload_type: str, payload: bytes) -> bytes:
    """Return the 64-byte Ed25519 signature of PAE(payload_type, payload)."""
    return key.sign(pae(payload_type, payload))


def verify_payload(
    public_key: bytes,
    payload_type: str,
    payload: bytes,
    signature: bytes,
    *,
    release_gil: bool = False,
) -> None:
    """Verify a `sign_payload` signature strictly; return None or raise.

    Raises SignatureError if the signature does not verify for exactly this payload type
    and payload, or if the public key is refused (malformed, non-canonical, small order;
    the KeyMaterialError is chained as the cause), so a caller checking a signed object
    handles one error class. ``release_gil``: as `keys.verify_strict`.
    """
    try:
        verify_strict(public_key, pae(payload_type, payload), signature, release_gil=release_gil)
    except KeyMaterialError as e:
        raise SignatureError(f"public key refused: {e}") from e
