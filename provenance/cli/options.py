"""Command-line options and checks that the `prov` commands share, those of provenance/
(`prov serve`, `prov web`) and of clients/ (which re-exports them from `clients.options`):
the server address, the listening and connection limits of a serving command, time
limits, and the serving commands' signal poll."""

from __future__ import annotations

import errno
import math
import os
import signal
import stat
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from provenance.core.files import file_kind
from provenance.core.ports import (
    bare_host,
    bind_reason,
    blank_problem,
    needs_brackets,
    parse_allowed_hosts,
    parse_trusted_proxy,
    port_number,
    scheme_problem,
)
from provenance.terminal import quoted_path, shown_line


class UsageError(typer.BadParameter):
    """A usage error (exit 2, before any call) about the command line as a whole rather
    than one option's value: Typer prints the message as it is, without "Invalid value
    for ..." (Typer keeps Click's own UsageError private)."""

    def format_message(self) -> str:
        return self.message


def server_address(value: str) -> str:
    """``value`` if it reads HOST:PORT with a port 1..65535 (the server a client calls);
    else a usage error (exit 2) before any call. Typer callback of ``--server``.
    Raises typer.BadParameter."""
    if "/" in value:  # a URL, such as the web page's: the gRPC address has no scheme
        raise typer.BadParameter(
            f"{value!r} is not HOST:PORT: give the gRPC address without a scheme or path"
            " (e.g. 127.0.0.1:50051, the address `prov serve` prints in its 'listening on'"
            " line; not the web page's http:// address)",
            param_hint="--server (or $PROV_SERVER)",
        )
    if (blank := blank_problem(value)) is not None:
        raise typer.BadParameter(blank, param_hint="--server (or $PROV_SERVER)")
    host, sep, port = value.rpartition(":")
    if sep and needs_brackets(host):
        raise typer.BadParameter(
            f"{value!r}: put an IPv6 address in brackets, e.g. [::1]:50051 (unbracketed, it"
            " is read as a host without a port)",
            param_hint="--server (or $PROV_SERVER)",
        )
    number = port_number(port)
    if not sep or not bare_host(host) or number is None or not 0 < number < 65536:
        raise typer.BadParameter(
            f"{value!r} is not HOST:PORT with a port 1-65535 (e.g. 127.0.0.1:50051, the"
            " address `prov serve` prints in its 'listening on' line)",
            param_hint="--server (or $PROV_SERVER)",
        )
    return value


#: ``--server HOST:PORT``, read from PROV_SERVER when not given.
ServerOpt = Annotated[
    str,
    typer.Option(
        "--server",
        envvar="PROV_SERVER",
        help="Server address HOST:PORT (default: $PROV_SERVER or 127.0.0.1:50051).",
        show_default=False,
        callback=server_address,
    ),
]


def in_existing_folder(path: Path, option: str, *, through_link: bool = False) -> Path:
    """``path`` if the folder it would be created in exists; else a usage error (exit
    2, a clean message naming ``option``) instead of a traceback later, when the file is
    first written. ``through_link``: the command opens ``path`` itself, following a
    symbolic link there (`prov scan --report`, appended to; `prov serve --db`, SQLite's
    file), so a link leading nowhere yet is judged by the folder it leads into, where
    the file would be created (judged by its own, a --report linked into a missing
    folder failed once the scan had started), and a loop of links is a usage error too.
    Without it (a file written beside its name and renamed over it: `prov log audit
    --state`, `prov receipt export --output`) the file is made at ``path``, replacing a
    link there, so its own folder is the one that must exist. Raises
    typer.BadParameter."""
    folder, linked = path.parent, ""
    if through_link and path.is_symlink() and not path.exists():
        try:
            os.stat(path)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise typer.BadParameter(
                    f"{path} is a symbolic link (to {shown_line(os.readlink(path))}) that"
                    " cannot be followed: a loop of symbolic links, or a chain too long to"
                    " follow; name another file, or fix the link",
                    param_hint=option,
                ) from None
        folder = Path(os.path.realpath(path)).parent
        linked = f"; {path} is a symbolic link to {shown_line(os.readlink(path))}"
    if folder.is_dir():
        return path
    try:
        mode = folder.stat().st_mode
    except OSError:
        what = "does not exist (create it first)"
    else:  # "does not exist (create it first)" of a FIFO or file there, before
        kind = "a file" if stat.S_ISREG(mode) else file_kind(mode)
        what = f"is {kind}, not a folder (name a file in a folder)"
    raise typer.BadParameter(f"{path}: the folder {folder} {what}{linked}", param_hint=option)


_Paths = TypeVar("_Paths", Path, Path | None, list[Path])


def nonempty_path(value: str) -> Path:
    """``value`` as a path, if it is not empty; else a usage error (exit 2). Typer
    ``parser`` of a path argument or option whose empty value would otherwise be the
    current folder (``Path('')`` is ``Path('.')``): `prov scan "$ARCHIVE"` with ARCHIVE
    unset scanned the folder it ran in and sent its hashes to the server, `prov log
    export-tiles ''` wrote there, `--home ''` made a device key there; `ls ''` refuses
    it too. Raises typer.BadParameter."""
    if value == "":
        raise typer.BadParameter(
            "an empty path (an unset shell variable?); give a file or folder name,"
            " or . for the current folder"
        )
    return Path(value)


def nonempty_file_path(value: str) -> Path:
    """`nonempty_path` for an option that names a file (`prov serve --log-key`, `prov log
    audit --state`): its usage error (exit 2) asks for a file name, not offering ``.``,
    which such an option refuses as a folder. Typer ``parser``. Raises
    typer.BadParameter."""
    if value == "":
        raise typer.BadParameter("an empty path (an unset shell variable?); give a file name")
    return Path(value)


def nonempty_place(value: str) -> str:
    """``value`` as given (a folder or an http(s):// URL, which `Path` would change:
    ``http://h`` to ``http:/h``), if it is not empty; else `nonempty_path`'s usage error
    (exit 2). Typer ``parser``. Raises typer.BadParameter."""
    nonempty_path(value)
    return value


def existing(value: _Paths) -> _Paths:
    """``value`` if each path in it can be followed to something that exists; else a
    usage error (exit 2) saying why not. Typer callback of path arguments and options, in
    place of Typer's ``exists=True``, which reads every failing ``stat`` as "does not
    exist": a loop of symbolic links (ELOOP, loop1 -> loop2 -> loop1), a folder on the
    way that is a file (ENOTDIR) or cannot be searched (EACCES), a name too long.
    ``value``: a path, a list of them (an argument that takes several), or None (an
    option not given). Source: stat(2), path_resolution(7). Raises typer.BadParameter."""
    for path in value if isinstance(value, list) else [value]:
        if path is None:
            continue
        try:
            os.stat(path)
        except FileNotFoundError:
            raise typer.BadParameter(f"path {quoted_path(path)} does not exist") from None
        except OSError as e:
            why = (e.strerror or str(e)).lower()
            if e.errno == errno.ELOOP:
                why += " (a loop of symbolic links, or a chain too long to follow)"
            raise typer.BadParameter(
                f"path {quoted_path(path)} cannot be followed: {why}"
            ) from None
    return value


def folder_to_fill(path: Path, option: str) -> Path:
    """``path`` if it is a folder, or names nothing yet in a folder that exists (the
    command creates it there); else a usage error (exit 2) naming ``option``: a file,
    FIFO or device in its place (before: exit 1, "error: File exists" or "Not a
    directory" once the command had begun writing), or a missing parent folder. Raises
    typer.BadParameter."""
    if path.is_dir():
        return path
    if path.exists() or path.is_symlink():
        raise typer.BadParameter(
            f"{path} is not a folder; name a folder (created if missing)", param_hint=option
        )
    return in_existing_folder(path, option)


#: Longest time limit a seconds flag takes (a day): ``prov web --service-timeout``,
#: ``prov serve --witness-timeout``. Past about 7e9 s gRPC's deadline (in nanoseconds)
#: overflowed and every call failed at once, as if timed out.
MAX_WAIT_S = 86400.0

#: How often, in seconds, a serving command (`prov serve`, and `prov web` and `prov
#: witness serve` through `provenance.web.serve.serve_until_signalled`) looks for a
#: SIGINT/SIGTERM its handler recorded: the handler only appends to a list (it takes no
#: lock), so the main thread sleeps this long between looks. Defined here, which both
#: import, so that `prov serve` does not load the web stack (uvicorn) to read it.
SIGNAL_POLL_S = 0.1


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals a serving command (`prov serve`, and `prov web` and `prov witness
    serve` through `provenance.web.serve.serve_until_signalled`) puts its handler on,
    read when it does so (on the main thread, at the end of its start): SIGTERM, and
    SIGINT unless this process has it ignored, as a shell starts a script's background
    job (``prov serve ... &``), which a Ctrl-C at the terminal, sent to the whole
    foreground group, must leave running. The start changes nothing of SIGINT there
    (`clients.launch`), so this is SIGINT as the process started. A handler replacing the
    ignored SIGINT would let such a Ctrl-C shut the server down."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return (signal.SIGTERM,)
    return (signal.SIGTERM, signal.SIGINT)


#: ``--header-seconds``, ``--connections-per-client``, ``--max-connections``: the
#: connection limits of an HTTP server (`prov web`, `prov witness serve`; see
#: `provenance.web.guard`).
def finite(value: float) -> float:
    """``value`` if it is a finite number; else a usage error (exit 2). Typer callback of
    float options with a ``min``, which lets "inf" and "1e309" (read as inf) through: a
    time limit of inf is none at all. Raises typer.BadParameter."""
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


HeaderSecondsOpt = Annotated[
    float,
    typer.Option(
        help="Close a connection whose request line and headers have not all arrived within"
        " this many seconds (408 if part came).",
        min=0.1,
        callback=finite,
    ),
]
ConnectionsPerClientOpt = Annotated[
    int,
    typer.Option(
        help="Connections one client may hold open (one IPv4 address, or one IPv6 /64);"
        " more get 503.",
        min=1,
    ),
]
MaxConnectionsOpt = Annotated[
    int, typer.Option(help="Connections open at once in all; more get 503.", min=1)
]


def trusted_proxies(values: list[str] | None) -> list[str]:
    """Check each ``--trusted-proxy`` value is an IP address or a CIDR network; returns
    them (none: an empty list). Raises typer.BadParameter (exit 2) for the first that is
    not (`provenance.core.ports.parse_trusted_proxy` says why)."""
    from provenance.core.errors import ConfigError

    for value in values or []:
        try:
            parse_trusted_proxy(value)
        except ConfigError as e:
            raise typer.BadParameter(str(e)) from e
    return list(values or [])


def allowed_hosts(value: str | None) -> str | None:
    """Check ``--allowed-hosts`` (`provenance.core.ports.parse_allowed_hosts`); returns
    it. Raises typer.BadParameter (exit 2) naming the element that is no host name."""
    if value is None:
        return None
    from provenance.core.errors import ConfigError

    try:
        parse_allowed_hosts(value)
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from e
    return value


AllowedHostsOpt = Annotated[
    str | None,
    typer.Option(
        help="Host names the page answers besides IP addresses, localhost and the name it"
        " is bound to or this machine's name, comma-separated: newsroom.example,"
        "*.newsroom.example ('*': every name). A request for another name (the Host a"
        " browser sends: a DNS-rebinding page at its attacker's name, resolved to this"
        " server) gets 421. Behind a reverse proxy that passes the site's Host on (nginx"
        " proxy_set_header Host $host), give the site's name here.",
        callback=allowed_hosts,
        metavar="NAMES",
    ),
]


MetricsListenOpt = Annotated[
    str | None,
    typer.Option(
        help="Serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks one): this"
        " process's CPU, memory, open files and Python runtime."
    ),
]


MetricsAllowedHostsOpt = Annotated[
    str | None,
    typer.Option(
        help="Host names the --metrics-listen port answers besides IP addresses, localhost"
        " and the name it is bound to or this machine's name, comma-separated, as"
        " --allowed-hosts takes them: the name Prometheus scrapes it by (targets:"
        " ['prov:9464'] sends Host prov). Another name gets 421 (a DNS-rebinding page).",
        callback=allowed_hosts,
        metavar="NAMES",
    ),
]


def metrics_started(listen: str, port: int, allowed: str | None) -> str:
    """The start-up lines of a /metrics port on ``listen`` (HOST:PORT as given) bound to
    ``port``: "metrics on http://HOST:PORT/metrics" and which Host names it answers
    (``allowed``: --metrics-allowed-hosts as given, checked)."""
    from provenance.metrics import metrics_hosts

    names = parse_allowed_hosts(allowed) if allowed else ()
    hosts = metrics_hosts(listen, names).describe("metrics", "--metrics-allowed-hosts")
    return f"metrics on http://{listen.rsplit(':', 1)[0]}:{port}/metrics\n{hosts}"


def start_metrics(listen: str | None, allowed: str | None = None) -> None:
    """Serve this process's runtime metrics (`provenance.metrics.process_registry`: CPU,
    memory, open files, Python; none of the ``prov_*`` families, which only `prov serve`
    keeps) on ``listen`` (HOST:PORT; None: not at all) from a daemon thread, answering
    the Host names `provenance.metrics.metrics_hosts` gives with ``allowed``
    (--metrics-allowed-hosts as given, checked), and print `metrics_started`'s lines
    (DESIGN.md, "Scale": metrics on every process; `prov serve --metrics-listen` serves
    its own). Raises ConfigError when it cannot listen."""
    if listen is None:
        return
    from provenance.metrics import process_registry, serve_metrics

    names = parse_allowed_hosts(allowed) if allowed else ()
    port = serve_metrics(listen, process_registry(), names)  # no `prov serve` family
    print(metrics_started(listen, port, allowed), flush=True)


TrustedProxyOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="A reverse proxy (IP address or CIDR network; repeat for more) whose"
        " X-Forwarded-For names the client: the right-most address there that is not a"
        " trusted proxy. Every per-client share of a request then counts that client;"
        " connection caps still count the proxy's connections. Other peers' headers are"
        " ignored.",
        callback=trusted_proxies,
        metavar="ADDRESS",
    ),
]


def listen_address(value: str, option: str) -> tuple[str, int]:
    """``value`` as (host, port) if it reads HOST:PORT with a port in 0..65535 (0 picks
    one; an IPv6 host in brackets, ``[::]:50051``; an empty host means every
    interface); else a usage error (exit 2) naming ``option``. The host is returned
    without brackets; a gRPC target with a scheme (``ipv4:127.0.0.1:0``) is told to
    leave the scheme out (`scheme_problem`). Raises typer.BadParameter."""
    if (problem := scheme_problem(value)) is not None:
        raise typer.BadParameter(f"{value!r}: {problem}", param_hint=option)
    host, sep, port = value.rpartition(":")
    if sep and needs_brackets(host):
        raise typer.BadParameter(
            f"{value!r}: put an IPv6 address in brackets, e.g. [{host}]:{port}",
            param_hint=option,
        )
    bare = bare_host(host)
    number = port_number(port)
    if not sep or bare is None or number is None or number > 65535:
        raise typer.BadParameter(
            f"{value!r} is not HOST:PORT with a port 0-65535 (e.g. 127.0.0.1:50051,"
            " [::1]:50051, 0.0.0.0:50051)",
            param_hint=option,
        )
    return bare, number


#: Hosts that mean every interface: a server there holds the port on each address.
_EVERY_INTERFACE = frozenset({"", "0.0.0.0", "::"})


def _bound_addresses(host: str) -> frozenset[str]:
    """The addresses a server listening on ``host`` (a `listen_address` host) binds: those
    it resolves to, in `ipaddress` form without a zone (``localhost``: 127.0.0.1 and ::1),
    an IPv4-mapped IPv6 address as its IPv4 address (``[::ffff:127.0.0.1]`` is 127.0.0.1
    to a dual-stack socket); ``host`` itself, lower case, for one that resolves to none
    (`check_can_listen` then refuses it)."""
    import ipaddress
    import socket

    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        return frozenset({host.lower()})
    found = set()
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        found.add(str(mapped or address))
    return frozenset(found)


def listens_clash(one: tuple[str, int], other: tuple[str, int]) -> bool:
    """Whether servers listening on ``one`` and ``other`` (`listen_address` pairs) would
    want one port: the same port (not 0, which picks a free one) on one host however it
    is spelled (``localhost`` and ``127.0.0.1``, ``[::ffff:127.0.0.1]`` and
    ``127.0.0.1``: the addresses each resolves to meet), or on any host where one listens
    on every interface (``0.0.0.0``, ``[::]``, an empty host, or any other spelling of
    those: ``[0::]``, ``[::ffff:0.0.0.0]``)."""
    (host, port), (other_host, other_port) = one, other
    if not port or port != other_port:
        return False
    if host == other_host or {host, other_host} & _EVERY_INTERFACE:
        return True
    bound, other_bound = _bound_addresses(host), _bound_addresses(other_host)
    return bool(bound & other_bound or (bound | other_bound) & _EVERY_INTERFACE)


def check_distinct_listens(listens: dict[str, str | None]) -> None:
    """Refuse two servers of one process on one port: ``listens`` maps each option
    (``--listen``, ``--http``...) to its HOST:PORT, or None where not given. Two clash
    when they name the same port (not 0, which picks a free one) on the same host, or on
    any host where one of them listens on every interface (``0.0.0.0``, ``[::]``, an
    empty host). Raises typer.BadParameter (exit 2) naming both options: otherwise the
    second bind fails only after the store opened, in gRPC's or uvicorn's words."""
    seen: list[tuple[str, str, int]] = []
    for option, value in listens.items():
        if value is None:
            continue
        host, port = listen_address(value, option)
        for other, other_host, other_port in seen:
            if listens_clash((host, port), (other_host, other_port)):
                raise typer.BadParameter(
                    f"{value} is on port {port}, where {other} already listens: each"
                    " server needs a port of its own (port 0 picks a free one)",
                    param_hint=f"{other} and {option}",
                )
        seen.append((option, host, port))


def grpc_host_problem(host: str, port: int) -> str | None:
    """Why gRPC's resolver would not read ``host`` (a `listen_address` host, brackets
    removed) where Python's does, or None when it reads it as Python does: an empty host
    (gRPC: "host must not be empty"; Python binds every interface), ``*`` (the C
    library's getaddrinfo reads it as no host, gRPC as a name it cannot find) and an
    IPv4 address that is not four decimal numbers without leading zeros (``0``, ``127.1``,
    ``0x7f000001``, ``2130706433``, ``010.0.0.1``: the C library's inet_aton reads them,
    the last as 8.0.0.1; gRPC looks them up as names and finds none). ``port``: the
    port to suggest with a spelling gRPC reads. Pure; raises nothing."""
    import ipaddress
    import socket

    if not host or host == "*":  # glibc's getaddrinfo reads "*" as no host at all
        return (
            f"gRPC needs a host{' other than *' if host else ''}: give 0.0.0.0:{port}"
            f" (every IPv4 interface) or [::]:{port} (every interface)"
        )
    if ":" in host:  # IPv6: gRPC and Python both read it with inet_pton
        return None
    try:
        packed = socket.inet_aton(host)
    except (OSError, UnicodeError):  # UnicodeError: not UTF-8 (argv's surrogates)
        return None  # a name: both resolve it (gRPC with its own resolver)
    try:
        if str(ipaddress.IPv4Address(host)) == host:
            return None
    except ValueError:
        pass
    dotted = socket.inet_ntoa(packed)
    return (
        "gRPC reads an IPv4 address only as four decimal numbers without leading zeros;"
        f" other programs read {host!r} as {dotted}: give {dotted}:{port} if that is the"
        " address meant"
    )


def _bind_problem(value: str, host: str, port: int) -> str | None:
    """Why no socket binds ``host``:``port`` (``value``: HOST:PORT as given), one
    sentence naming the address, or None when one binds: a socket is bound to each
    address the host resolves to, with SO_REUSEADDR as gRPC and the HTTP servers bind
    theirs, and closed at once; one that binds is enough (gRPC listens on every one it
    can). Raises socket.gaierror when the host resolves to no address."""
    import socket

    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    reason = "no usable address"
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
                return None
        except OSError as e:
            reason = bind_reason(e)
    return f"cannot listen on {value}: {reason}"


def check_listen_form(value: str, option: str, *, grpc: bool = False) -> tuple[str, int]:
    """``value`` as (host, port), read as `listen_address` reads it, and for a gRPC
    server's address (``grpc``) its host read as gRPC reads it (`grpc_host_problem`):
    the checks of `check_can_listen` that ask neither the resolver nor the machine, so
    that a command can say a malformed address before anything else (`make web` before
    the server running in its folder). Raises typer.BadParameter (exit 2) naming
    ``option`` and the value."""
    host, port = listen_address(value, option)
    if grpc and (problem := grpc_host_problem(host, port)) is not None:
        raise typer.BadParameter(f"{value!r}: {problem}", param_hint=option)
    return host, port


def check_can_listen(value: str, option: str, *, grpc: bool = False) -> None:
    """Check, before anything is created, that a server could listen on ``value``
    (HOST:PORT, as `listen_address` reads it): bind a socket to each address the host
    resolves to, with SO_REUSEADDR as gRPC and the HTTP servers do, and close it at once.
    One address that binds is enough (gRPC listens on every one it can). ``grpc``: a gRPC
    server's address, whose host must also read as gRPC reads it (`grpc_host_problem`).

    Raises typer.BadParameter (exit 2) naming ``option`` and the value for malformed
    syntax, a host gRPC would not read, a host name that does not exist, or one Python
    cannot put to the resolver (a part between dots empty or over 63 characters, bytes
    that are not UTF-8: before, a UnicodeError traceback); ConfigError
    with one sentence naming the address and the reason otherwise ("cannot listen on
    127.0.0.1:50051: address already in use", or a name the resolver could not be asked
    about). Another process may still take the port before the server binds it; the
    server then fails naming the address (`bind_failure`)."""
    import socket

    from provenance.core.errors import ConfigError

    host, port = check_listen_form(value, option, grpc=grpc)
    try:
        problem = _bind_problem(value, host, port)
    except UnicodeError as e:  # IDNA encoding, before the resolver is asked
        raise typer.BadParameter(
            f"{value!r}: {host!r} is not a host name: each part between dots must be 1 to"
            " 63 letters, digits or hyphens (or an internationalised name's letters)",
            param_hint=option,
        ) from e
    except socket.gaierror as e:
        found = f"no address found for the host {host!r} ({e.strerror})"
        # the name does not exist: the value's fault; EAI_AGAIN and the like (the
        # resolver could not be asked) are the network's, exit 1
        if e.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise typer.BadParameter(f"{value!r}: {found}", param_hint=option) from e
        raise ConfigError(f"cannot listen on {value} ({option}): {found}") from e
    if problem is not None:
        raise ConfigError(problem)


def bind_failure(value: str, option: str) -> str:
    """The sentence for a server that could not bind ``value`` (HOST:PORT as given, from
    ``option``) although `check_can_listen` passed: "cannot listen on VALUE (OPTION):
    REASON", the reason found again the way `check_can_listen` finds it (most often
    another program took the port since: "address already in use"), else that the
    server could not bind it. Raises nothing."""
    import socket

    host, sep, port_text = value.rpartition(":")
    bare, port = bare_host(host), port_number(port_text)
    reason = "the server could not bind it"
    if sep and bare is not None and port is not None:
        try:
            problem = _bind_problem(value, bare, port)
        except (socket.gaierror, UnicodeError) as e:
            reason = f"no address found for the host {bare!r} ({e})"
        else:
            if problem is not None:
                reason = problem.removeprefix(f"cannot listen on {value}: ")
    return f"cannot listen on {value} ({option}): {reason}"
