"""Which Host names an HTTP listener answers (DNS rebinding): a page at a name its
attacker owns, resolved to this server's address, is same-origin with it to a visitor's
browser, so only the request's Host tells it apart. `AllowedHosts` is the rule the page
(`prov web`, `prov serve --http`, ``--allowed-hosts``) and the /metrics port
(``--metrics-listen``, ``--metrics-allowed-hosts``) share; the messages of their 421 and
400 answers are here too."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from provenance.core.ports import host_name, is_address

#: The longest Host name quoted back in a 421 or 400 message.
SHOWN_NAME = 200


def default_host_names(bound_host: str) -> tuple[str, ...]:
    """The names a listener bound to ``bound_host`` (its ``--listen`` or
    ``--metrics-listen`` host) answers besides `AllowedHosts`' own: that host when it is
    a name (``--listen newsroom-box:8080``), and this machine's name
    (`socket.gethostname`), by which a listener bound to every address (0.0.0.0, ::) is
    reached on a local network."""
    names = [host_name(socket.gethostname())]
    if not is_address(bound_host.strip("[]")):
        names.append(host_name(bound_host))
    return tuple(dict.fromkeys(n for n in names if n))


@dataclass(frozen=True)
class AllowedHosts:
    """The Host names a listener answers: ``names`` (`parse_allowed_hosts` forms and
    `default_host_names`), and always IP addresses, ``localhost`` and names under
    ``.localhost``. A DNS-rebinding page is at a name its attacker owns, resolved to this
    server's address: a browser sends that name as Host, never an address (a page at an
    address is that address's own) nor localhost (browsers resolve it and its subdomains to
    loopback themselves, RFC 6761 section 6.3), so those can always be answered."""

    names: tuple[str, ...] = ()

    @property
    def every(self) -> bool:
        """Whether every name is answered (``--allowed-hosts '*'``)."""
        return "*" in self.names

    def allows(self, authority: str | None) -> bool:
        """Whether a request whose Host header is ``authority`` (None: it sent none, as
        only an HTTP/1.0 client does, never a browser) is answered."""
        if authority is None or self.every:
            return True
        name = host_name(authority)
        if name is None or "*" in name:
            return False
        if name == "localhost" or name.endswith(".localhost") or is_address(name):
            return True
        return any(name == n or (n.startswith("*.") and name.endswith(n[1:])) for n in self.names)

    def describe(self, what: str = "web", flag: str = "--allowed-hosts") -> str:
        """What the start-up line of the listener ``what`` (``web``, ``metrics``) says is
        answered, naming the flag ``flag`` that adds names."""
        if self.every:
            return (
                f"{what} answers every Host name ({flag} '*'): a DNS-rebinding page"
                f" can read {'this page' if what == 'web' else what}'s answers from a"
                " visitor's browser"
            )
        names = ", ".join(dict.fromkeys(["any IP address", "localhost", *self.names]))
        return f"{what} answers Host: {names}; other names get 421 until added with {flag}"


def _as_sent(value: str) -> str:
    """A header's ``value`` as its client wrote it: the HTTP servers read a header's
    bytes as Latin-1 (h11, http.server), so UTF-8 is read back as UTF-8
    (``bücher.example``, not ``bÃ¼cher.example``); any other value as it is."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def malformed_host_message(authority: str) -> str:
    """The message of the 400 answer to a request whose Host ``authority`` (as the
    server read it: its bytes as Latin-1) is no `host_name` (a space, userinfo, UTF-8
    rather than punycode, a port past 65535); UTF-8 is quoted as the client wrote it,
    controls (U+202E included) as escapes (``repr``)."""
    return (
        f"the request's Host header {_as_sent(authority)[:SHOWN_NAME]!r} is not a host name: give a"
        " name (punycode for an international one), an IP address ([v6] in brackets) or"
        " localhost, with an optional port up to 65535 (RFC 9110 section 7.2)"
    )


def misdirected_message(
    authority: str,
    flag: str = "--allowed-hosts",
    commands: str = "prov web and prov serve --http",
) -> str:
    """The message of the 421 answer to a request whose Host ``authority`` is a
    `host_name` not allowed; ``flag`` is the option of ``commands`` that allows it."""
    name = host_name(authority) or authority[:SHOWN_NAME]
    return (
        f"refused: this server does not answer for the name {name[:SHOWN_NAME]!r} (the"
        " request's Host): a page at a name its operator did not allow may be a DNS"
        " rebinding attack. Reach it by its address or an allowed name, or, if this name"
        f" is its own, ask its operator to start it with {flag} {name[:SHOWN_NAME]}"
        f" (a comma-separated list; {commands})"
    )
