"""RFC 3161 timestamps on the claim signature of a C2PA manifest (C2PA ``sigTst2``).

A C2PA claim signature is a COSE_Sign1 (RFC 8152) in the ``c2pa.signature`` box of the
active manifest. C2PA Technical Specification 2.1, section 10.3.2.5 "Time-stamps":

* 10.3.2.5.2 / 10.3.2.5.3: a v2 timestamp is requested *after* signing; its
  MessageImprint hashes the RFC 8152 section 4.4 ``ToBeSigned`` of a Sig_structure with
  context ``"CounterSignature"``, the signature's protected header bucket, an empty
  external_aad and, as payload, the COSE signature value. As c2pa-rs does (and
  validates), the payload is the signature as a serialized CBOR byte string, hashed with
  SHA-256. ``certReq`` is set so the TSA's chain comes back in the token.
* 10.3.2.5.4: the token (the ``timeStampToken`` of the TSA's TimeStampResp) is stored
  in the COSE *unprotected* header under the text label ``sigTst2`` as a tstContainer
  ``{"tstTokens": [{"val": token}]}``.

The unprotected header is outside the COSE signature, and c2pa-rs reserves room for
it with a ``pad`` byte string, so the token is added in place: the new header plus a
shorter pad encode to exactly the old length, no offset or hard binding in the file
moves, and a PNG chunk CRC is recomputed. Requests and replies go through
``rfc3161-client``; validation checks that the token covers these exact bytes and
chains to a TSA root the verifier configured (14.4.3: the C2PA signer trust list does
not apply to timestamps).
"""

from __future__ import annotations

import hashlib
import http.client
import struct
import urllib.parse
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import cbor2
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from rfc3161_client import (
    HashAlgorithm,
    PKIStatus,
    TimestampRequestBuilder,
    TimeStampResponse,
    Verifier,
    VerifierBuilder,
    decode_timestamp_response,
)

from provenance.c2pa.container import PNG_TYPES, manifest_store
from provenance.cli.cutoff import Cutoff
from provenance.cli.files import read_capped
from provenance.cli.urls import ENDPOINT, url_problem, url_refusal
from provenance.core.errors import ConfigError, MediaError, TimestampError
from provenance.core.networds import OverBudget, exchange_failure, metered_connection

#: Unprotected-header label of a v2 timestamp (C2PA 2.1, 10.3.2.5.4).
SIGTST2 = "sigTst2"
#: Label of a v1 timestamp (over the claim, not the signature); read, never written.
SIGTST = "sigTst"
#: COSE header label of the certificate chain (RFC 9360).
X5CHAIN = 33
#: Largest TSA reply read, bytes.
MAX_REPLY_BYTES = 1 << 20
#: Largest timestamp token checked, bytes (real ones are 1-10 KB; C2PA reserves about
#: 10 KB of pad for it). The header holding it is outside every signature.
MAX_TOKEN_BYTES = 64 << 10
#: Most certificates a token may carry (real ones: the TSA's chain, 1-4). OpenSSL's
#: chain building costs about N^2 over N certificates named alike (6,000: 10 s).
MAX_TOKEN_CERTIFICATES = 16
#: Largest claim signature box (COSE_Sign1, its x5chain and headers) decoded to judge a
#: file's signing time, bytes. The fixtures' are 2.4-18 KB (an x5chain of 2-4
#: certificates, the timestamp's pad); the box is the file writer's to fill, and decoding
#: parses every certificate of its x5chain in the server's own process.
MAX_SIGNATURE_BYTES = 1 << 20
#: Largest bundle of trust anchors read (`TsaTrust`, `provenance.c2pa.reader.C2paTrust`):
#: a PEM bundle of every public root is about 250 KB.
MAX_ANCHORS_BYTES = 16 << 20
#: What a trust anchors file that does not parse lacks, said in place of the PEM parser's
#: words (`TsaTrust`, `provenance.c2pa.reader.C2paTrust`).
NOT_PEM = "no readable '-----BEGIN CERTIFICATE-----' block"
_SIGNATURE_LABEL = "c2pa.signature"
_HASHES = {
    "2.16.840.1.101.3.4.2.1": hashlib.sha256,
    "2.16.840.1.101.3.4.2.2": hashlib.sha384,
    "2.16.840.1.101.3.4.2.3": hashlib.sha512,
}


@dataclass(frozen=True)
class TimestampAuthority:
    """Where an exporter gets its timestamps: ``url`` of an RFC 3161 TSA (HTTP POST of
    ``application/timestamp-query``, RFC 3161 section 3.4) and ``timeout_s``, the
    wall-clock limit of one request in seconds (connect and reply). Raises ConfigError
    on construction for a URL `provenance.cli.urls.url_problem` refuses (with
    `provenance.cli.urls.ENDPOINT`: a query is sent with the request) or a timeout that
    is not positive."""

    url: str
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if problem := url_problem(self.url, ENDPOINT):
            raise ConfigError(f"the TSA URL {url_refusal(self.url, problem)}")
        if not self.timeout_s > 0:
            raise ConfigError(f"the TSA timeout must be positive, not {self.timeout_s}")


@dataclass(frozen=True)
class TsaTrust:
    """Roots of the timestamp authorities a verifier trusts (PEM bundle). Raises
    ConfigError on construction when it holds no parsable certificate."""

    roots_pem: bytes
    roots: tuple[x509.Certificate, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            roots = tuple(x509.load_pem_x509_certificates(self.roots_pem))
        except ValueError as e:  # not the parser's words: "MalformedFraming", a FAQ URL
            raise ConfigError(f"TSA trust anchors are not PEM certificates: {NOT_PEM}") from e
        if not roots:
            raise ConfigError("TSA trust anchors hold no certificate")
        object.__setattr__(self, "roots", roots)

    @classmethod
    def from_file(cls, path: Path) -> TsaTrust:
        """Load a PEM bundle (at most `MAX_ANCHORS_BYTES`); ConfigError, naming the file,
        if unreadable, larger, empty or holding no PEM certificate."""
        pem = read_capped(path, MAX_ANCHORS_BYTES, "TSA trust anchors")
        try:
            return cls(pem)
        except ConfigError as e:
            raise ConfigError(f"{e} in {path}") from e


@dataclass(frozen=True)
class ClaimSignature:
    """The COSE_Sign1 claim signature of a file's active C2PA manifest.

    start, end: its byte range in the file, None when the store was put back together
    from several JPEG segments; protected: the serialized protected header bucket;
    unprotected: the unprotected header map (text labels as in C2PA); signature: the
    signature value; chain: the x5chain certificates, signer first.
    """

    start: int | None
    end: int | None
    protected: bytes
    unprotected: dict[Any, Any]
    signature: bytes
    chain: tuple[x509.Certificate, ...]

    def countersign_tbs(self) -> bytes:
        """The bytes a v2 timestamp's MessageImprint hashes (C2PA 2.1, 10.3.2.5.3):
        CBOR ``["CounterSignature", protected, h'', bstr(signature) as CBOR]``."""
        return cbor2.dumps(["CounterSignature", self.protected, b"", cbor2.dumps(self.signature)])

    def token(self) -> tuple[str, bytes] | None:
        """(label, token) of the first timestamp token in the unprotected header, or None.

        Raises MediaError when the header is present but not a tstContainer.
        """
        for label in (SIGTST2, SIGTST):
            if label in self.unprotected:
                tokens = _dict(self.unprotected[label]).get("tstTokens")
                first = _dict(tokens[0]) if isinstance(tokens, (list, tuple)) and tokens else {}
                val = first.get("val")
                if not isinstance(val, bytes):
                    raise MediaError(f"the {label} header is not a tstContainer with a token")
                return label, val
        return None


@dataclass(frozen=True)
class VerifiedTimestamp:
    """A token that verified: ``gen_time`` (timezone-aware UTC) and ``tsa``, the common
    name of the TSA certificate that signed it (its full subject when it has none)."""

    gen_time: datetime
    tsa: str


def read_claim_signature(data: bytes, media_type: str) -> ClaimSignature:
    """Find and decode the active manifest's claim signature in a JPEG, PNG or BMFF file.

    Walks the JUMBF boxes (ISO/IEC 19566-5) of the manifest store: the active manifest
    is the store's last manifest box (C2PA 2.1, 11.1.4.2), its ``c2pa.signature`` box
    holds the COSE_Sign1_Tagged as CBOR. Raises MediaError when there is no store, the
    boxes are malformed, the signature box is over MAX_SIGNATURE_BYTES (not decoded), or
    the signature is not a COSE_Sign1 with an x5chain.
    """
    jumbf, offset = manifest_store(data, media_type)
    store = _box(jumbf, 0, len(jumbf))
    if store is None or store[0] != b"jumb":
        raise MediaError("the C2PA manifest store is not a JUMBF superbox")
    manifests = [b for b in _children(jumbf, store[1], store[2]) if b[0] == b"jumb"]
    if not manifests:
        raise MediaError("the C2PA manifest store holds no manifest")
    _, body, end = manifests[-1]
    for kind, inner, inner_end in _children(jumbf, body, end):
        if kind == b"jumb" and _label(jumbf, inner, inner_end) == _SIGNATURE_LABEL:
            for ckind, payload, payload_end in _children(jumbf, inner, inner_end):
                if ckind == b"cbor":
                    if payload_end - payload > MAX_SIGNATURE_BYTES:
                        raise MediaError(
                            f"the C2PA claim signature box is {payload_end - payload:,} bytes,"
                            f" over the {MAX_SIGNATURE_BYTES:,} bytes read here"
                        )
                    sig = _decode_cose(jumbf[payload:payload_end])
                    if offset is None:
                        return sig
                    return replace(sig, start=offset + payload, end=offset + payload_end)
    raise MediaError("the active C2PA manifest has no claim signature box")


def request_token(tbs: bytes, tsa: TimestampAuthority) -> bytes:
    """Ask the TSA to timestamp ``tbs``; return the DER timeStampToken (RFC 3161 2.4.2).

    The request carries a SHA-256 MessageImprint of tbs, a nonce and certReq (C2PA 2.1,
    10.3.2.5.3); the reply must be HTTP 200, at most MAX_REPLY_BYTES, granted, over the
    same imprint and nonce, and its CMS signature must verify with the certificates it
    carries (whether that TSA is trusted is the verifier's decision). Raises TimestampError naming the TSA when it cannot be
    reached within tsa.timeout_s or answers anything else.
    """
    request = TimestampRequestBuilder(
        data=tbs, hash_algorithm=HashAlgorithm.SHA256, nonce=True, cert_req=True
    ).build()
    body = _post(tsa, request.as_bytes())
    if len(body) > MAX_REPLY_BYTES:
        raise TimestampError(f"the timestamp authority {tsa.url} sent over {MAX_REPLY_BYTES} bytes")
    try:
        response = decode_timestamp_response(body)
        info = response.tst_info
    except Exception as e:  # hostile DER: ValueError, KeyError, ...
        raise TimestampError(f"{tsa.url} did not answer with a TimeStampResp: {e}") from e
    _check_certificate_count(len(response.signed_data.certificates))
    if response.status not in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS):
        raise TimestampError(
            f"the timestamp authority {tsa.url} refused the request (status {response.status}:"
            f" {'; '.join(response.status_string) or 'no reason given'})"
        )
    if info.message_imprint.message != hashlib.sha256(tbs).digest():
        raise TimestampError(f"the timestamp from {tsa.url} covers other bytes than requested")
    if info.nonce != request.nonce:
        raise TimestampError(f"the timestamp from {tsa.url} does not echo the request's nonce")
    try:  # a damaged token is refused now, not found out by every later verifier
        embedded = tuple(
            x509.load_der_x509_certificate(c) for c in response.signed_data.certificates
        )
        _verifier(embedded).verify(response, info.message_imprint.message)
    except Exception as e:  # VerificationError, or what hostile DER makes the checks raise
        raise TimestampError(
            f"the timestamp from {tsa.url} does not verify with its own certificates: {e}"
        ) from e
    return response.time_stamp_token()


def _post(tsa: TimestampAuthority, query: bytes) -> bytes:
    """POST an RFC 3161 query to the TSA (RFC 3161 section 3.4); the reply body, at most
    MAX_REPLY_BYTES + 1 bytes. tsa.timeout_s bounds the whole exchange: at the deadline a
    `Cutoff` shuts the socket down, so a TSA that drips its headers or body a byte at a time
    is cut off (a per-read socket timeout alone would wait for each byte). Raises
    TimestampError naming the TSA when it is unreachable, too slow or not HTTP 200."""
    parts = urllib.parse.urlsplit(tsa.url)
    # its port a number, its host a name (`TimestampAuthority` checked the URL); headers,
    # chunk framing and trailers bounded with the body: before, an endless trailer was
    # read (and dropped) for the whole timeout
    conn = metered_connection(tsa.url, tsa.timeout_s, MAX_REPLY_BYTES)
    with Cutoff(tsa.timeout_s) as cutoff:
        try:
            conn.connect()
            if conn.sock is not None:
                cutoff.watch(conn.sock)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request(
                "POST", path, body=query, headers={"Content-Type": "application/timestamp-query"}
            )
            reply = conn.getresponse()
            if reply.status != 200:
                raise TimestampError(
                    f"the timestamp authority {tsa.url} answered HTTP {reply.status}"
                )
            body = reply.read(MAX_REPLY_BYTES + 1)
        except OverBudget as e:
            raise TimestampError(f"the timestamp authority {tsa.url}: {e}") from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            if cutoff.expired.is_set():
                raise TimestampError(_unreachable(tsa, "no complete reply")) from e
            if isinstance(e, http.client.HTTPException) and not isinstance(e, ConnectionError):
                # it was reached: what it sent is no HTTP reply (another service at the URL)
                why = exchange_failure(e, tsa.timeout_s).removeprefix("the server ")
                raise TimestampError(f"the timestamp authority {tsa.url} {why}") from e
            why = exchange_failure(e, tsa.timeout_s) if isinstance(e, OSError) else str(e)
            raise TimestampError(_unreachable(tsa, why)) from e
        finally:
            conn.close()
    if cutoff.expired.is_set():  # the body was cut short at the deadline
        raise TimestampError(_unreachable(tsa, "no complete reply"))
    if reply.length and len(body) <= MAX_REPLY_BYTES:  # fewer bytes than it announced
        raise TimestampError(
            f"the timestamp authority {tsa.url} ended its reply after {len(body)} of its"
            f" {len(body) + reply.length} bytes (the connection closed early)"
        )
    return body


def _unreachable(tsa: TimestampAuthority, why: object) -> str:
    return (
        f"the timestamp authority {tsa.url} could not be reached within {tsa.timeout_s:g} s: {why}"
    )


def attach_token(data: bytes, media_type: str, sig: ClaimSignature, token: bytes) -> bytes:
    """Return the file with ``token`` stored as ``sigTst2`` in sig's unprotected header.

    The COSE_Sign1 keeps its length: the ``pad`` (and ``pad2``) the signer reserved
    shrinks by what the tstContainer takes (C2PA 2.1, 10.4: pad data is excluded from
    the hard binding). Raises TimestampError when the signature already carries a
    timestamp or the reserved room is too small for the token.
    """
    if sig.token() is not None:
        raise TimestampError("the claim signature already carries a timestamp")
    if sig.start is None or sig.end is None:
        raise TimestampError(
            "the manifest store is split over several JPEG segments; no timestamp is placed"
        )
    kept = {k: v for k, v in sig.unprotected.items() if k not in ("pad", "pad2")}
    header: dict[Any, Any] = {SIGTST2: {"tstTokens": [{"val": token}]}, **kept}
    size = sig.end - sig.start
    cose = _padded_cose(sig, header, size)
    if cose is None:
        raise TimestampError(
            f"the C2PA signature box has no room for a {len(token)}-byte timestamp token"
            f" ({size} bytes reserved)"
        )
    out = bytearray(data)
    out[sig.start : sig.end] = cose
    if media_type in PNG_TYPES:
        _fix_png_crc(out, sig.start)
    return bytes(out)


def timestamp_file(data: bytes, media_type: str, tsa: TimestampAuthority) -> bytes:
    """`read_claim_signature`, `request_token` over its countersign bytes, then
    `attach_token`: the file with a v2 timestamp. Raises as those do."""
    sig = read_claim_signature(data, media_type)
    return attach_token(data, media_type, sig, request_token(sig.countersign_tbs(), tsa))


def verify_token(token: bytes, tbs: bytes, trust: TsaTrust | None) -> VerifiedTimestamp:
    """Check a timestamp token over ``tbs`` (the countersign bytes) against ``trust``.

    Checks, in order: at most MAX_TOKEN_BYTES and MAX_TOKEN_CERTIFICATES (bounded
    cost: the header is outside every signature); the token parses as RFC 3161 (a CMS SignedData over a TSTInfo);
    its MessageImprint is the hash of exactly these bytes; trust is configured; the CMS
    signature verifies with a chain to one of the roots, at the token's genTime, from a
    certificate with the critical id-kp-timeStamping EKU (rfc3161-client's Verifier).
    Raises TimestampError saying which check failed: malformed, over other bytes,
    no TSA trust configured, a TSA not on the trust list, or a signature that does not
    verify (forged or damaged).
    """
    _check_token_size(token)
    try:
        response = decode_timestamp_response(_as_response(token))
        info = response.tst_info
        algorithm = info.message_imprint.hash_algorithm.dotted_string
        imprint, gen_time = info.message_imprint.message, info.gen_time
        certificates = len(response.signed_data.certificates)
        tsa = _tsa_name(response)
    except Exception as e:  # hostile DER: ValueError, KeyError, x509.InvalidVersion, ...
        raise TimestampError(f"the timestamp token is malformed: {e}") from e
    _check_certificate_count(certificates)
    if algorithm not in _HASHES:
        raise TimestampError(f"the timestamp token uses an unsupported hash ({algorithm})")
    digest = _HASHES[algorithm](tbs).digest()
    if imprint != digest:
        raise TimestampError(
            f"the timestamp by {tsa} covers other bytes than this claim signature"
            " (its message imprint does not match)"
        )
    if trust is None:
        raise TimestampError(
            f"the timestamp by {tsa} is not trusted: no TSA trust anchors are configured"
        )
    try:
        _verifier(trust.roots).verify(response, digest)
    except Exception as e:  # VerificationError, or what hostile DER makes the checks raise
        try:
            embedded = tuple(
                x509.load_der_x509_certificate(c) for c in response.signed_data.certificates
            )
            _verifier(embedded).verify(response, digest)
        except Exception:
            raise TimestampError(
                f"the timestamp token's signature does not verify (forged or damaged): {e}"
            ) from e
        raise TimestampError(
            f"the timestamp is signed by {tsa}, which does not chain to a configured TSA"
            " trust anchor"
        ) from e
    return VerifiedTimestamp(gen_time=gen_time, tsa=tsa)


def _check_token_size(token: bytes) -> None:
    """TimestampError for a token over MAX_TOKEN_BYTES, before it is parsed."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TimestampError(
            f"the timestamp token is {len(token)} bytes, over the limit of {MAX_TOKEN_BYTES}"
        )


def _check_certificate_count(count: int) -> None:
    """TimestampError for a token carrying over MAX_TOKEN_CERTIFICATES certificates."""
    if count > MAX_TOKEN_CERTIFICATES:
        raise TimestampError(
            f"the timestamp token carries {count} certificates; at most"
            f" {MAX_TOKEN_CERTIFICATES} are checked"
        )


def _verifier(roots: tuple[x509.Certificate, ...]) -> Verifier:
    """rfc3161-client's verifier over these roots (duplicates dropped)."""
    builder = VerifierBuilder()
    for root in dict.fromkeys(roots):
        builder = builder.add_root_certificate(root)
    return builder.build()


def timestamping_signer(token: bytes) -> str:
    """The name of the TSA certificate in a timestamp token (DER timeStampToken, or a
    whole TimeStampResp as early v1 ``sigTst`` headers hold), once every end-entity
    certificate the token carries is shown to be a timestamp authority's: it has the
    extended key usage id-kp-timeStamping (RFC 3161 section 2.3). The chain and the
    signature are not checked here (the C2PA reader did); the certificates are read
    without requiring their SET in DER order, as real tokens have it. Raises
    TimestampError when the token is malformed, carries no end-entity certificate, or
    one that is not a TSA's, e.g. the C2PA signer's own certificate stamping its own
    signature."""
    _check_token_size(token)
    try:
        return _timestamping_signer(token)
    except ValueError as e:  # hostile DER, or a certificate field that does not parse
        raise TimestampError(f"the timestamp token is malformed: {e}") from e


def _timestamping_signer(token: bytes) -> str:
    ders = _token_certificates(token)
    _check_certificate_count(len(ders))
    certs = [x509.load_der_x509_certificate(der) for der in ders]
    leaves = [c for c in certs if not _is_ca(c)]
    if not leaves:
        raise TimestampError("the timestamp token carries no TSA certificate")
    for cert in leaves:
        try:
            ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            ekus = x509.ExtendedKeyUsage([])
        if ExtendedKeyUsageOID.TIME_STAMPING not in ekus:
            raise TimestampError(
                f"the timestamp is signed by {_common_name(cert)}, which is not a timestamp"
                " authority (its certificate lacks the id-kp-timeStamping extended key usage)"
            )
    return _common_name(leaves[0])


def _token_certificates(token: bytes) -> list[bytes]:
    """The DER certificates of a token's SignedData (RFC 5652 section 5.1, field
    ``certificates [0] IMPLICIT``), from a ContentInfo or a whole TimeStampResp. Raises
    ValueError when the DER does not have that shape."""
    tag, _, start, stop = _der(token, 0, len(token))
    outer = list(_der_children(token, start, stop))
    if tag != 0x30 or not outer:
        raise ValueError("not a DER SEQUENCE")
    if outer[0][0] == 0x30:  # TimeStampResp: status, then the token
        if len(outer) < 2 or outer[1][0] != 0x30:
            raise ValueError("a TimeStampResp without a token")
        outer = list(_der_children(token, outer[1][2], outer[1][3]))
    if len(outer) < 2 or outer[0][0] != 0x06 or outer[1][0] != 0xA0:
        raise ValueError("not a CMS ContentInfo")
    signed = list(_der_children(token, outer[1][2], outer[1][3]))
    if not signed or signed[0][0] != 0x30:
        raise ValueError("not a CMS SignedData")
    fields = list(_der_children(token, signed[0][2], signed[0][3]))
    certs = next((f for f in fields[3:4] if f[0] == 0xA0), None)
    if certs is None:
        return []
    return [token[h:e] for t, h, _, e in _der_children(token, certs[2], certs[3]) if t == 0x30]


def _der(data: bytes, pos: int, limit: int) -> tuple[int, int, int, int]:
    """(tag, header start, content start, end) of the DER element at pos; ValueError."""
    if pos + 2 > limit:
        raise ValueError(f"truncated DER at byte {pos}")
    tag, length, at = data[pos], data[pos + 1], pos + 2
    if length & 0x80:
        n = length & 0x7F
        if not 1 <= n <= 4 or at + n > limit:
            raise ValueError(f"bad DER length at byte {pos}")
        length, at = int.from_bytes(data[at : at + n], "big"), at + n
    if at + length > limit:
        raise ValueError(f"DER element at byte {pos} runs past its container")
    return tag, pos, at, at + length


def _der_children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    pos = start
    while pos < end:
        element = _der(data, pos, end)
        yield element
        pos = element[3]


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def _signer_certificate(response: TimeStampResponse) -> x509.Certificate | None:
    """The certificate in the token that signed it, or None."""
    signers = response.signed_data.signer_infos
    for der in response.signed_data.certificates:
        cert = x509.load_der_x509_certificate(der)
        if any(cert.issuer == s.issuer and cert.serial_number == s.serial_number for s in signers):
            return cert
    return None


def _tsa_name(response: TimeStampResponse) -> str:
    """Common name of the certificate that signed the token, else its subject."""
    cert = _signer_certificate(response)
    return "a TSA whose certificate is not in the token" if cert is None else _common_name(cert)


def _as_response(token: bytes) -> bytes:
    """DER TimeStampResp ``{status: granted, timeStampToken: token}`` around a token."""
    body = b"\x30\x03\x02\x01\x00" + token
    return b"\x30" + _der_length(len(body)) + body


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _padded_cose(sig: ClaimSignature, header: dict[Any, Any], size: int) -> bytes | None:
    """The COSE_Sign1_Tagged with this unprotected header, padded to exactly ``size``."""

    def encode(pads: dict[str, bytes]) -> bytes:
        return cbor2.dumps(
            cbor2.CBORTag(18, [sig.protected, {**header, **pads}, None, sig.signature])
        )

    room = size - len(encode({"pad": b""}))
    for pad2 in (None, 0, 1):  # a second pad gets past a CBOR length-prefix boundary
        pads = {} if pad2 is None else {"pad2": b"\0" * pad2}
        for n in range(max(0, room - 12), room + 1):
            cose = encode({"pad": b"\0" * n, **pads})
            if len(cose) == size:
                return cose
    return None


def _fix_png_crc(buf: bytearray, inside: int) -> None:
    """Recompute the CRC of the PNG chunk that contains offset ``inside``."""
    pos = 8
    while pos + 12 <= len(buf):
        length = struct.unpack_from(">I", buf, pos)[0]
        end = pos + 12 + length
        if pos + 8 <= inside < end - 4:
            struct.pack_into(">I", buf, end - 4, zlib.crc32(buf[pos + 4 : end - 4]))
            return
        pos = end
    raise MediaError("the claim signature is not inside a PNG chunk")


def _box(data: bytes, pos: int, limit: int) -> tuple[bytes, int, int] | None:
    """(type, payload start, box end) of the ISO BMFF-style box at pos, or None."""
    if pos + 8 > limit:
        return None
    size, kind = struct.unpack_from(">I4s", data, pos)
    header = 8
    if size == 1:
        if pos + 16 > limit:
            return None
        size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
    elif size == 0:
        size = limit - pos
    if size < header or pos + size > limit:
        return None
    return kind, pos + header, pos + size


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """The boxes inside a superbox payload; MediaError on a malformed one."""
    pos = start
    while pos < end:
        box = _box(data, pos, end)
        if box is None:
            raise MediaError(f"malformed JUMBF box at byte {pos} of the C2PA manifest store")
        yield box
        pos = box[2]


def _label(data: bytes, start: int, end: int) -> str | None:
    """The label of a JUMBF superbox (its first child, the ``jumd`` description box)."""
    first = _box(data, start, end)
    if first is None or first[0] != b"jumd" or first[1] + 17 > first[2]:
        return None
    toggles, at = data[first[1] + 16], first[1] + 17
    if not toggles & 0x02:
        return None
    stop = data.find(b"\0", at, first[2])
    return data[at:stop].decode("utf-8", "replace") if stop >= 0 else None


#: The CBOR tags cbor2 turns into Python values that a claim signature is decoded
#: without: each is kept as the `cbor2.CBORTag` written. No C2PA header holds one, and
#: some compute: a decimal fraction (4), bigfloat (5) or rational (30) of a long mantissa
#: costs time quadratic in it (160 KB: 3.3 s; the 1 MiB the box may hold: about 140 s
#: extrapolated), in the server's own process. Kept decoded: shared values and string references (25,
#: 28, 29, 256: structure, nothing computed) and the self-described CBOR mark (55799).
_UNDECODED_TAGS = (0, 1, 2, 3, 4, 5, 30, 35, 36, 37, 52, 54, 100, 258, 260, 261, 1004, 43000)


def _kept(tag: int) -> Any:
    return lambda value, immutable=False: cbor2.CBORTag(tag, value)


_AS_WRITTEN = {tag: _kept(tag) for tag in _UNDECODED_TAGS}


def _decode_cose(raw: bytes) -> ClaimSignature:
    """Decode a COSE_Sign1_Tagged claim signature; its position is set by the caller.
    Tags other than COSE's are kept as written (`_UNDECODED_TAGS`)."""
    try:
        cose = cbor2.loads(raw, semantic_decoders=_AS_WRITTEN)
        protected_map = (
            cbor2.loads(cose.value[0], semantic_decoders=_AS_WRITTEN) if cose.value[0] else {}
        )
    except (cbor2.CBORDecodeError, AttributeError, TypeError, IndexError, ValueError) as e:
        raise MediaError(f"the C2PA claim signature is not CBOR: {e}") from e
    value = cose.value if isinstance(cose, cbor2.CBORTag) and cose.tag == 18 else None
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 4
        or not isinstance(value[0], bytes)
        or not isinstance(value[1], Mapping)
        or not isinstance(value[3], bytes)
        or not isinstance(protected_map, Mapping)
    ):
        raise MediaError("the C2PA claim signature is not a COSE_Sign1_Tagged structure")
    # C2PA 2.x puts x5chain (label 33) in the protected bucket; 1.x files may carry it,
    # or its text label, in the unprotected one (C2PA 2.1, 14.5).
    chain = next(
        (
            bucket[label]
            for bucket in (protected_map, value[1])
            for label in (X5CHAIN, "x5chain")
            if label in bucket
        ),
        None,
    )
    ders = [chain] if isinstance(chain, bytes) else chain
    try:
        certs = tuple(x509.load_der_x509_certificate(d) for d in ders or ())
    except (TypeError, ValueError, x509.InvalidVersion) as e:
        raise MediaError(f"the C2PA claim signature's x5chain does not parse: {e}") from e
    if not certs:
        raise MediaError("the C2PA claim signature carries no x5chain")
    return ClaimSignature(None, None, value[0], dict(value[1]), value[3], certs)


def _dict(value: Any) -> dict[Any, Any]:
    return dict(value) if isinstance(value, Mapping) else {}
