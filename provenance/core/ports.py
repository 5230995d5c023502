"""The port and host of a HOST:PORT address, read as a resolver reads them, the
networks of ``--trusted-proxy`` and the names of ``--allowed-hosts``."""

from __future__ import annotations

import errno
import ipaddress
import re

from provenance.core.errors import ConfigError

#: A trusted proxy's network (`parse_trusted_proxy`; `provenance.web.proxies` uses them).
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Most digits of a port (65535 has 5).
PORT_DIGITS = 5

#: The highest port number.
MAX_PORT = 65535


def port_number(text: str) -> int | None:
    """``text`` as a port number (0..99999; callers check their own range), or None
    unless it is 1 to 5 ASCII digits. `str.isdigit` alone also takes superscripts ("²",
    which `int` then refuses with a ValueError), other scripts' digits ("٥٠٠٥١", which
    `int` reads as 50051 though no resolver does) and any length (`int` refuses over
    4,300 digits)."""
    if not (text.isascii() and text.isdigit() and len(text) <= PORT_DIGITS):
        return None
    return int(text)


def blank_problem(address: str) -> str | None:
    """Why ``address`` (a server's HOST:PORT as a client was given it) is refused for a
    blank in it, or None: a space, tab, newline or other whitespace, as a copied address
    brings along, which gRPC sends to the resolver as part of the name ("Misformatted
    domain name")."""
    if not any(c.isspace() for c in address):
        return None
    return (
        f"{address!r} holds a blank (a space, tab or newline, copied with the address?):"
        " give HOST:PORT without it, e.g. 127.0.0.1:50051"
    )


def bare_host(host: str) -> str | None:
    """The HOST of HOST:PORT without the brackets of an IPv6 address ("[::1]" gives
    "::1"; "" stays ""), or None when it is malformed: a bracket other than around the
    whole host, empty brackets, or an IPv6 address (a colon) without its brackets, which
    gRPC and resolvers read whole as a host with no port (RFC 3986 section 3.2.2):
    ``::1:80`` is the address ::1:80 on port 443, and ``::1`` split at its last colon
    would be host "::" port 1. Callers say which: see `needs_brackets`."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if "[" in bare or "]" in bare or (bare != host and not bare) or needs_brackets(host):
        return None
    return bare


#: What a person can do about a failed bind, by errno.
LISTEN_HINTS = {
    errno.EADDRINUSE: " (another program listens there: stop it or choose another port)",
    errno.EADDRNOTAVAIL: " (not an address of this machine)",
    errno.EACCES: " (ports below 1024 need privileges: choose a port from 1024)",
}


def bind_reason(error: OSError) -> str:
    """Why a bind failed, in lower case, with what to do about it where `LISTEN_HINTS`
    knows: "address already in use (another program listens there: ...)"."""
    return (error.strerror or str(error)).lower() + LISTEN_HINTS.get(error.errno or 0, "")


def listen_failure(value: str, option: str, error: OSError) -> str:
    """The sentence for a server that could not bind ``value`` (HOST:PORT as given, from
    the flag ``option``): "cannot listen on VALUE (OPTION): REASON" (`bind_reason`), as
    `provenance.cli.options.bind_failure` says it for the gRPC servers."""
    return f"cannot listen on {value} ({option}): {bind_reason(error)}"


#: gRPC's target schemes (its naming doc), which a HOST:PORT flag does not take.
GRPC_SCHEMES = ("ipv4", "ipv6", "dns", "unix", "unix-abstract", "vsock")


def scheme_problem(value: str) -> str | None:
    """Why ``value`` is not HOST:PORT when it is a gRPC target with a URI scheme
    (``ipv4:127.0.0.1:0``, ``dns:///localhost:50051``, ``unix:/tmp/prov.sock``), with the
    HOST:PORT to give instead where it names one; None otherwise (also for ``dns:50051``,
    which is a host named dns). Pure; raises nothing."""
    scheme, sep, rest = value.partition(":")
    if not sep or scheme.lower() not in GRPC_SCHEMES or port_number(rest) is not None:
        return None
    if scheme.lower() in ("unix", "unix-abstract", "vsock"):
        return (
            f"this flag takes HOST:PORT without a scheme ({scheme}: is gRPC's; a Unix"
            " socket is not served), e.g. 127.0.0.1:50051"
        )
    address = rest.rpartition("/")[2]  # dns:///host:port, dns://resolver/host:port
    if address.rpartition(":")[0] and port_number(address.rpartition(":")[2]) is not None:
        example = address
    else:
        example = "127.0.0.1:50051"
    return f"this flag takes HOST:PORT without a scheme ({scheme}: is gRPC's), e.g. {example}"


def needs_brackets(host: str) -> bool:
    """Whether ``host`` is an IPv6 address (it has a colon) written without brackets (a
    host with a stray bracket is malformed instead: `bare_host`)."""
    return ":" in host and "[" not in host and "]" not in host


def parse_trusted_proxy(text: str) -> Network:
    """``text``, an IP address (``127.0.0.1``, ``::1``) or a CIDR network
    (``10.0.0.0/8``, ``fd00::/8``), as a network (an address: its /32 or /128). Raises
    ConfigError saying why when it is neither (or a network with host bits set, such as
    ``10.0.0.1/8``, which is probably a typo)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        raise ConfigError(
            f"{text!r} is not an IP address or a CIDR network (such as 10.0.0.0/8): {e}"
        ) from e


#: A host name of `host_name` (``*`` allowed, for `parse_allowed_hosts`' patterns).
_NAME = re.compile(r"[a-z0-9_*]([a-z0-9_.*-]*[a-z0-9_*])?")


def host_name(authority: str) -> str | None:
    """The name of a Host header or ``--allowed-hosts`` element ``authority``
    (``name[:port]``, ``[v6]:port``): lower case, without its port and a trailing dot
    (``LocalHost.:8080`` is ``localhost``), an IPv6 address in brackets (``[::1]``); None
    when it is none (empty, a character no host name has, an empty label as in ``a..b``,
    ``*.`` (which would read as ``*``), a port that is not a number up to 65535)."""
    text = authority.strip().lower()
    if text.startswith("["):
        inner, sep, port = text[1:].partition("]")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return None
        if not sep or (port and not (port.startswith(":") and _port_ok(port[1:]))):
            return None
        return f"[{inner}]"
    given, sep, port = text.partition(":")
    if sep and not _port_ok(port):
        return None
    name = given.removesuffix(".")
    if not name or not _NAME.fullmatch(name) or "" in name.split("."):
        return None
    if name == "*" and given != name:
        return None
    return name


def _port_ok(text: str) -> bool:
    """Whether ``text`` is a port number a URL can have (0 to 65535)."""
    port = port_number(text)
    return port is not None and port <= MAX_PORT


def is_address(name: str) -> bool:
    """Whether ``name`` (a `host_name`) is an IP address (an IPv6 one in brackets or not)."""
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def parse_allowed_hosts(text: str) -> tuple[str, ...]:
    """``--allowed-hosts``: comma-separated names (``newsroom.example``), ``*.SUFFIX``
    (every name under it, not SUFFIX itself) or ``*`` (every name), a port after one
    ignored; their `host_name` forms. Raises ConfigError, its message naming the element
    that is none of these (asking for the punycode of a name not in ASCII, as browsers send
    it: Python's IDNA 2003 codec would map some names otherwise than they do)."""
    names: list[str] = []
    for element in text.split(","):
        name = host_name(element)
        wildcard = name is not None and (name == "*" or name.startswith("*."))
        if name is None or ("*" in name and not (wildcard and "*" not in name[1:])):
            # browsers send an international name as its punycode (xn--bcher-kva.example)
            idn = "" if element.isascii() else " (an international name in its punycode, xn--...)"
            raise ConfigError(
                f"{element.strip()!r} is not a host name: give names such as"
                f" newsroom.example{idn} or *.newsroom.example, separated by commas, or * for"
                " every name"
            )
        names.append(name)
    return tuple(names)
