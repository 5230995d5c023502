"""The client behind a trusted reverse proxy (``--trusted-proxy``): for a connection
whose peer is in one of the trusted networks, the client is the right-most address of
``X-Forwarded-For`` that is not itself a trusted proxy; every other peer's header is
ignored. Taken from the right because each proxy appends the address it was reached
from, while the left part is whatever the client sent (RFC 7239 §7.4 on spoofing).

`TrustedProxies` sets the ASGI scope's ``client`` to that address, so every per-request
share of the web app (uploads per minute, upload slots and pace notices, tile bytes in
flight) counts the client behind the proxy. The connection guard
(`provenance.web.guard`) still counts the proxy's TCP connections by the proxy's
address: one connection is one connection, whoever's requests it carries."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from provenance.core.ports import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    """One element of X-Forwarded-For as an address (an IPv4-mapped IPv6 address as
    IPv4), or None when it is none. Takes ``192.0.2.1``, ``2001:db8::1``, a port after
    an IPv4 address (``192.0.2.1:5000``) and a bracketed IPv6 address with or without a
    port (``[2001:db8::1]:5000``), as some proxies write them."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text, sep, port = text[1:].partition("]")
        if not sep or (port and not (port.startswith(":") and port[1:].isdigit())):
            return None
    elif text.count(":") == 1:  # IPv4:port
        text, _, port = text.partition(":")
        if not port.isdigit():
            return None
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


#: Addresses of X-Forwarded-For read from the right at most: more trusted proxies in a
#: row than any real chain has. Past them the request counts as the proxy's own, as for
#: a malformed header: a client inside a trusted network could otherwise send a header of
#: thousands of trusted addresses (up to the 64 KiB a request head may hold), each parsed
#: and matched against every trusted network on the event loop (20 ms a request with one
#: network, against 1 ms).
MAX_FORWARDED_HOPS = 32


def _trusted(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def forwarded_client(peer: str, forwarded_for: Iterable[str], networks: Sequence[Network]) -> str:
    """The client address of a request from ``peer`` (the TCP peer's address, text)
    carrying the X-Forwarded-For header values ``forwarded_for`` (in order; several
    headers read as one list): ``peer`` itself unless it is in ``networks``; else the
    right-most address of the list that is not in ``networks`` (all of them are: the
    left-most). ``peer`` when the list is empty or an element up to that one is not an
    address (a malformed header from a proxy is not trusted in part), and when the first
    `MAX_FORWARDED_HOPS` from the right are all trusted and more follow. Never raises."""
    peer_address = _address(peer)
    if peer_address is None or not _trusted(peer_address, networks):
        return peer
    elements = [e for value in forwarded_for for e in value.split(",")]
    found: Address | None = None
    for hop, element in enumerate(reversed(elements)):
        if hop == MAX_FORWARDED_HOPS:
            return peer
        address = _address(element)
        if address is None:
            return peer
        found = address
        if not _trusted(address, networks):
            break
    return str(found) if found is not None else peer


class TrustedProxies:
    """ASGI middleware: for an HTTP request from a trusted proxy, the scope's ``client``
    becomes (`forwarded_client`, 0) (the client's port is not known)."""

    def __init__(self, app: ASGIApp, networks: Sequence[Network]) -> None:
        self.app = app
        self.networks = tuple(networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client:
            values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
            host = forwarded_client(str(client[0]), values, self.networks)
            if host != client[0]:
                scope = {**scope, "client": (host, 0)}
        await self.app(scope, receive, send)
