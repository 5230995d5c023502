"""A real RFC 3161 timestamp authority on loopback, for tests.

`LocalTsa` runs an HTTP server on 127.0.0.1 (port 0) that answers
``application/timestamp-query`` POSTs (RFC 3161 section 3.4) with a granted
``TimeStampResp``: a CMS SignedData (RFC 5652) over a TSTInfo (RFC 3161 section 2.4.2),
signed by its own ECDSA P-256 TSA certificate (critical EKU id-kp-timeStamping, RFC 3161
section 2.3) issued by its own test root, with the ESS signingCertificateV2 attribute
(RFC 5816) and the certificates included when the request asks for them. Nothing of ours
is mocked: the tokens are built with asn1crypto and signed with cryptography.

Knobs for the failure tests: ``clock`` (genTime, injected), ``delay_s`` (answer late),
``forge`` (flip a byte of the CMS signature), ``imprint`` (timestamp other bytes than
asked), ``extra_certificates`` (more certificates in the token, outside its signature),
`LocalTsa.sign_as` (sign with another certificate and Ed25519 key, e.g. a
device's own, which is no timestamp authority).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

POLICY_OID = "1.3.6.1.4.1.55555.1.1"


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test TSA"),
        ]
    )


def make_tsa_pki(
    name: str, now: datetime
) -> tuple[x509.Certificate, x509.Certificate, ec.EllipticCurvePrivateKey]:
    """(root, TSA leaf, leaf key): a root valid 20 years back and forward (so an injected
    clock far from today stays inside it) and a leaf with the RFC 3161 EKU."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    start, end = now - timedelta(days=7300), now + timedelta(days=7300)
    root = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{name} Root"))
        .issuer_name(_name(f"{name} Root"))
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), False)
        .sign(root_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(root.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
        )
        .sign(root_key, hashes.SHA256())
    )
    return root, leaf, leaf_key


class LocalTsa:
    """An RFC 3161 TSA on 127.0.0.1; use as a context manager. ``url`` is its endpoint."""

    def __init__(self, name: str = "Loopback TSA", clock: Callable[[], datetime] | None = None):
        self.clock = clock or (lambda: datetime.now(UTC))
        self.root, self.leaf, self._key = make_tsa_pki(name, self.clock())
        self.root_pem = self.root.public_bytes(serialization.Encoding.PEM)
        self.delay_s = 0.0
        self.forge = False
        self.imprint: bytes | None = None
        self.ed25519_sign: Callable[[bytes], bytes] | None = None
        self.extra_certificates: list[x509.Certificate] = []
        self.requests = 0
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                tsa.requests += 1
                if tsa.delay_s:
                    time.sleep(tsa.delay_s)
                if self.headers.get("Content-Type") != "application/timestamp-query":
                    self.send_error(415)
                    return
                reply = tsa.respond(body)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/timestamp-reply")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/tsa"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LocalTsa:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def sign_as(
        self, root: x509.Certificate, leaf: x509.Certificate, sign: Callable[[bytes], bytes]
    ) -> None:
        """Sign later tokens as ``leaf`` (issued by ``root``) with an Ed25519 ``sign``."""
        self.root, self.leaf, self.ed25519_sign = root, leaf, sign

    def respond(self, request_der: bytes) -> bytes:
        """A DER TimeStampResp granting the request (RFC 3161 section 2.4.2)."""
        req = tsp.TimeStampReq.load(request_der)
        imprint = req["message_imprint"]
        if self.imprint is not None:
            imprint = tsp.MessageImprint(
                {"hash_algorithm": imprint["hash_algorithm"], "hashed_message": self.imprint}
            )
        info = {
            "version": "v1",
            "policy": POLICY_OID,
            "message_imprint": imprint,
            "serial_number": secrets.randbits(64),
            "gen_time": self.clock().astimezone(UTC),
            "accuracy": {"seconds": 1},
        }
        if req["nonce"].native is not None:
            info["nonce"] = req["nonce"].native
        tst_der = tsp.TSTInfo(info).dump()
        leaf = asn1_x509.Certificate.load(self.leaf.public_bytes(serialization.Encoding.DER))
        root = asn1_x509.Certificate.load(self.root.public_bytes(serialization.Encoding.DER))
        signed_attrs = cms.CMSAttributes(
            [
                {"type": "content_type", "values": ["tst_info"]},
                {"type": "message_digest", "values": [hashlib.sha256(tst_der).digest()]},
                {
                    "type": "signing_certificate_v2",
                    "values": [
                        {
                            "certs": [
                                {
                                    "hash_algorithm": {"algorithm": "sha256"},
                                    "cert_hash": hashlib.sha256(leaf.dump()).digest(),
                                }
                            ]
                        }
                    ],
                },
            ]
        )
        if self.ed25519_sign is not None:
            algorithm, signature = "ed25519", self.ed25519_sign(signed_attrs.dump())
        else:
            algorithm = "sha256_ecdsa"
            signature = self._key.sign(signed_attrs.dump(), ec.ECDSA(hashes.SHA256()))
        if self.forge:
            signature = signature[:-1] + bytes([signature[-1] ^ 1])
        signer = cms.SignerInfo(
            {
                "version": "v1",
                "sid": cms.SignerIdentifier(
                    {
                        "issuer_and_serial_number": {
                            "issuer": leaf.issuer,
                            "serial_number": leaf.serial_number,
                        }
                    }
                ),
                "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                "signed_attrs": signed_attrs,
                "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": algorithm}),
                "signature": signature,
            }
        )
        signed_data = cms.SignedData(
            {
                "version": "v3",
                "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
                "encap_content_info": {
                    "content_type": "tst_info",
                    "content": core.ParsableOctetString(tst_der),
                },
                "certificates": ([leaf, root] if req["cert_req"].native else [])
                + [
                    asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER))
                    for c in self.extra_certificates
                ],
                "signer_infos": [signer],
            }
        )
        token = cms.ContentInfo({"content_type": "signed_data", "content": signed_data})
        der: bytes = tsp.TimeStampResp(  # asn1crypto is untyped: dump() is Any
            {"status": {"status": "granted"}, "time_stamp_token": token}
        ).dump()
        return der
