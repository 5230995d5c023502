"""The one check of the http(s) URLs given to `prov`: ``--witness-url`` (`prov verify`,
`prov receipt refresh`), ``--witness URL=KEY`` (`prov serve`), ``--tiles`` (`prov log
audit`), ``--tsa-url`` (`prov sign`), and the targets of a tiled log server's redirects.
The same URL gets the same answer, in the same words, wherever it is given
(`url_problem`); what differs by place is a parameter (`UrlRules`), not a copy.

A URL is read as RFC 3986 writes it (``scheme "://" authority path ["?" query] ["#"
fragment]``, section 3), with the rules of http and https URLs of RFC 9110 section 4.2.
Refused, and why:

- empty, or longer than `UrlRules.max_chars` (1,024 by default: a URL repeated in every
  message and status line about it; RFC 9110 section 4.1 asks recipients to take at
  least 8,000 octets, which is what a redirect target may have here);
- a character no URL holds (RFC 3986 section 2 and appendix A: only printable ASCII,
  without spaces and ``" < > \\ ^ ` { | }``), as a copied URL brings along: Python's
  parser silently drops tabs and newlines (and reads ``\\`` otherwise than browsers
  do), so the URL asked would not be the one given; a ``%`` not followed by two hex
  digits (section 2.1);
- a scheme other than http or https (in any case: schemes are case-insensitive, section
  3.1), or none; no ``//`` and authority after it, or an empty host: RFC 9110 section
  4.2.1 ("a sender MUST NOT generate an "http" URI with an empty host identifier");
- a user name or password (``USER:PASSWORD@HOST``): RFC 9110 section 4.2.4 forbids
  them in http(s) URLs, and no request here sends them;
- a fragment (``#...``): never sent (RFC 3986 section 3.5), unless `UrlRules.fragment`;
  a query (``?...``) unless `UrlRules.query`: a URL prefix (a witness's, a tiled log's)
  gets paths added after it, which would land inside a query or fragment;
- a host in brackets that is not an IPv6 address (RFC 3986 section 3.2.2: an unclosed
  ``[``, text between ``]`` and the port, IPvFuture ``[v1.x]``, a zone ``%25eth0`` of
  RFC 6874, which no resolver here takes), an IPv6 address without brackets;
- a host name no resolver can be asked about: a part between dots empty or over 63
  characters, or any character but letters, digits, ``-`` and ``_`` (``_`` as in the
  names of containers), or over 253 characters (RFC 1035 section 2.3.4; Python's IDNA
  encoding, which `socket.getaddrinfo` applies, refuses the first with a UnicodeError);
  one trailing dot (an absolute name) is taken;
- a host whose last part is a number (digits, or ``0x`` and hex digits: WHATWG URL's
  "ends in a number") that is not an IPv4 address written as four decimal numbers from
  0 to 255 without leading zeros, nor followed by a dot: ``inet_aton``, which
  `socket.getaddrinfo` applies, reads ``010.1.1.1`` as 8.1.1.1 (a leading 0 is
  octal), ``127.1`` as 127.0.0.1 and ``0`` as 0.0.0.0, and ``1.2.3.4.5``, ``999.1.1.1``
  or ``127.0.0.1.`` as no address (the resolver then looks it up as a name, which a
  search domain may answer): the address asked would not be the one a reader sees;
- a port that is not a number from 1 to 65535 (section 3.2.3; an empty port, ``HOST:``,
  is the default port, and taken).

Taken as they are: any path, %-encoded or not. Pure: no I/O (``inet_aton`` parses).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from provenance.core.ports import MAX_PORT, port_number
from provenance.terminal import quoted

#: Most characters of a URL given on the command line (`UrlRules.max_chars`).
MAX_URL_CHARS = 1024

#: Most characters of a host name (RFC 1035 section 2.3.4: 255 octets on the wire).
MAX_HOST_CHARS = 253

#: The schemes taken (lower case; a URL's is compared in any case).
WEB_SCHEMES = ("http", "https")

#: Characters of a URL (RFC 3986 section 2: unreserved, reserved and ``%``).
_URL_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%"
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
#: A part of a host name that makes it an IPv4 address when last (WHATWG URL, "ends in
#: a number"): decimal digits, or 0x and hex digits.
_NUMBER = re.compile(r"[0-9]+|0[xX][0-9A-Fa-f]*")
_NOT_HOST_NAME = (
    "is not a host name: each part between dots must be 1 to 63 letters, digits or hyphens"
)


@dataclass(frozen=True)
class UrlRules:
    """What a place takes beyond `url_problem`'s common rules: ``query`` (``?...``, which
    a request to that URL carries: a timestamp authority's, a redirect's target),
    ``fragment`` (``#...``, dropped before the request: a redirect's target), and
    ``max_chars``, the longest URL taken."""

    query: bool = False
    fragment: bool = False
    max_chars: int = MAX_URL_CHARS


#: A URL prefix that paths are added to: a witness's, a tiled log's.
PREFIX = UrlRules()
#: A URL requested as it is (a timestamp authority's): a query is sent with it.
ENDPOINT = UrlRules(query=True)
#: A redirect's target, as urllib follows it (its fragment dropped): RFC 9110 section
#: 4.1's 8,000 octets.
REDIRECT = UrlRules(query=True, fragment=True, max_chars=8000)


def url_problem(url: str, rules: UrlRules = PREFIX) -> str | None:
    """Why ``url`` is no http(s) URL that can be fetched (the module docstring's list), in
    words, at most about 300 characters, quoting no more than 60 of ``url``; None when it
    is one. ``rules``: what the place takes beyond the common rules. Pure; raises
    nothing."""
    if not url:
        return "an empty URL (an unset shell variable?); give an http:// or https:// URL"
    if len(url) > rules.max_chars:
        return f"longer than the {rules.max_chars:,} characters a URL may have here"
    if odd := next((c for c in url if c not in _URL_CHARS), None):
        return (
            f"it holds {_char(odd)} at character {url.index(odd) + 1}: a URL is printable"
            ' ASCII without spaces or any of " < > \\ ^ ` { | } (RFC 3986 section 2):'
            " %-encode such characters in the path, and give a host name that is not"
            " ASCII in its xn-- form"
        )
    if _BAD_PERCENT.search(url):
        return "it holds a % not followed by two hex digits (RFC 3986 section 2.1): write % as %25"
    scheme = url_scheme(url)
    rest = url[len(scheme) + 1 :] if scheme else ""
    if scheme is None or scheme.lower() not in WEB_SCHEMES:
        if scheme is None or port_number(rest.split("/", 1)[0]) is not None:  # HOST:PORT
            return "it names no scheme: give http:// or https:// before the host"
        return f"its scheme is {scheme}: and only http:// and https:// URLs are taken"
    if not rest.startswith("//"):
        return f"no // after its scheme: give {scheme}://HOST[:PORT][/PATH]"
    authority = re.split(r"[/?#]", rest[2:], maxsplit=1)[0]
    if problem := _authority_problem(authority):
        return problem
    tail = rest[2 + len(authority) :]
    query, fragment = "?" in tail.split("#", 1)[0], "#" in tail
    if fragment and not rules.fragment:
        return (
            "a fragment (#...) is never sent with a request (RFC 3986 section 3.5): give"
            " the URL without it"
        )
    if query and not rules.query:
        return (
            "a query (?...) cannot be given here: this URL is a prefix that paths are added"
            " to; give it without the query"
        )
    return None


def url_scheme(text: str) -> str | None:
    """The scheme ``text`` starts with, as written (RFC 3986 section 3.1: a letter, then
    letters, digits, ``+``, ``-`` and ``.``, then ``:``), or None. ``localhost:8080``
    starts with the scheme ``localhost``: the caller tells a HOST:PORT apart."""
    match = _SCHEME.match(text)
    return None if match is None else match.group(1)


def _authority_problem(authority: str) -> str | None:
    """Why the authority ``[userinfo@]host[:port]`` of an http(s) URL is refused, or None."""
    if "@" in authority:
        return (
            "a URL here holds no user name or password (USER:PASSWORD@HOST): RFC 9110"
            " section 4.2.4 forbids them and no request would send them; give it without them"
        )
    if authority.startswith("["):
        inner, closed, after = authority[1:].partition("]")
        if not closed:
            return (
                "its [ is not closed: an IPv6 address is written [ADDRESS], e.g. http://[::1]:8090"
            )
        if after and not after.startswith(":"):
            return f"{quoted(after, 30)} follows the ] of its host: only :PORT may"
        if problem := _ipv6_problem(inner):
            return problem
        port = after[1:] if after else ""
    elif "[" in authority or "]" in authority:
        return "a [ or ] outside a bracketed IPv6 host such as http://[::1]:8090"
    elif authority.count(":") > 1:
        return "an IPv6 address goes in brackets, e.g. http://[::1]:8090"
    else:
        host, _, port = authority.partition(":")
        if problem := _host_problem(host):
            return problem
    number = port_number(port)
    if port and (number is None or not 0 < number <= MAX_PORT):
        return "its port is not a number from 1 to 65535 (e.g. http://127.0.0.1:8090)"
    return None


def _ipv6_problem(inner: str) -> str | None:
    """Why ``inner``, the text between a URL host's brackets, is no IPv6 address, or None."""
    if "%" in inner:
        return (
            f"{quoted(f'[{inner}]')} holds a zone (%25...), which RFC 3986 does not and"
            " no resolver here takes: give the address without it"
        )
    try:
        ipaddress.IPv6Address(inner)
    except ValueError:
        return (
            f"{quoted(f'[{inner}]')} is no IPv6 address: brackets hold one, e.g."
            " http://[::1]:8090 (RFC 3986 section 3.2.2)"
        )
    return None


def _host_problem(host: str) -> str | None:
    """Why the host name (or IPv4 address) ``host`` is refused, or None."""
    if not host:
        return "it names no host (RFC 9110 section 4.2.1), e.g. http://127.0.0.1:8090"
    name = host.removesuffix(".")
    if len(name) > MAX_HOST_CHARS:
        return (
            f"its host name is {len(name):,} characters, more than the {MAX_HOST_CHARS} a"
            " DNS name may have (RFC 1035 section 2.3.4)"
        )
    if not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return f"{quoted(host)} {_NOT_HOST_NAME} (e.g. http://127.0.0.1:8090)"
    if _NUMBER.fullmatch(name.rpartition(".")[2]):
        return _ipv4_problem(host)
    return None


def _ipv4_problem(host: str) -> str | None:
    """Why ``host``, a host name whose last part is a number, is refused: unless it is an
    IPv4 address in four decimal numbers, the address the resolver asks (``inet_aton``'s
    reading, or a name looked up) is not the one written; None when it is one."""
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return None
    try:
        read = f"read it as {socket.inet_ntoa(socket.inet_aton(host))}"
    except OSError:
        read = "look it up as a name"
    return (
        f"{quoted(host)} is no IPv4 address as written, and the resolver would {read}:"
        " write an address as four numbers from 0 to 255 without leading zeros or a dot"
        " after them, e.g. http://127.0.0.1:8090"
    )


def _char(c: str) -> str:
    """``c`` named for a message: "a space"; else quoted as Python writes it ('\\x1b'),
    what draws nothing escaped (`quoted`), and a character that is not ASCII with its
    code point too ('é' (U+00E9), '\\u3164' (U+3164)), as one that draws nothing
    (BRAILLE PATTERN BLANK) or joins the quote (a combining accent) cannot be seen."""
    if c == " ":
        return "a space"
    return quoted(c) if c.isascii() else f"{quoted(c)} (U+{ord(c):04X})"


def url_refusal(url: str, problem: str) -> str:
    """The message of ``url`` refused for ``problem`` (`url_problem`): the URL quoted (at
    most 60 characters, `quoted`), then why. A flag's usage error and a ConfigError
    naming the flag both say it so."""
    return f"{quoted(url)}: {problem}"
