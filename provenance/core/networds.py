"""Why an HTTP exchange failed, in words a person reads: the one place that turns what
http.client, ssl and the socket raise into a phrase (never a Python class name such as
``IncompleteRead(0 bytes read)``, nor ``[Errno 111]``). Used by the clients of other
servers this program calls: a tiled log's files (`provenance.log.tiledir`) and a
timestamp authority (`provenance.c2pa.timestamp`).
"""

from __future__ import annotations

import http.client
import ssl


def exchange_failure(e: BaseException, timeout_s: float) -> str:
    """What ``e``, raised while asking a server over HTTP (``timeout_s``: the wait for
    an answer), says happened: a phrase that starts in lower case and names no Python
    class, for the caller to put after the server's name."""
    reason = getattr(e, "reason", None)  # urllib's URLError wraps what the socket raised
    if isinstance(reason, BaseException):
        e = reason
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"its TLS certificate is not trusted ({e.verify_message})"
    if isinstance(e, ssl.SSLError):
        why = (e.reason or e.strerror or "no reason given").replace("_", " ").lower()
        return f"the TLS handshake failed ({why}); check that it serves https there"
    if isinstance(e, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(e, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return "the server closed the connection without answering"
    if isinstance(e, http.client.BadStatusLine):
        first = str(e).strip()[:60]
        return f"the server answered something that is not HTTP ({first!r})"
    if isinstance(e, http.client.HTTPException):
        return "the server sent an answer that is not valid HTTP"
    if isinstance(e, OSError) and e.strerror:
        why = e.strerror
    else:
        why = str(reason or e) or "no reason given by the system (check the URL)"
    return why[:1].lower() + why[1:]
