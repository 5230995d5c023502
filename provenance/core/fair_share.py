"""Fair sharing of a fixed number of slots between clients: which hold a newcomer takes.

Both upload gates use it: the service's (`provenance.server.limits.UploadGate`, gRPC
uploads) and the web front-end's relay (`provenance.web.upload.Relayer`), which relays
all its users' uploads to the service as one client. Both call `take_victim`: first by
share (`share_victim`), then by pace, since shares alone let a client on many addresses
hold every slot with one stalled upload each.

Every per-client share (upload slots, pace notices, the forgery budget, replay reads,
device look-ups, connection caps, tile bytes in flight, the metrics port's connections,
reflection streams and answers, health checks and watch streams) counts a client
by `client_key`: an IPv4 address, or an IPv6 /64.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TypeVar

H = TypeVar("H")

#: NAT64's well-known prefix (RFC 6052 §2.1): each address stands for one IPv4 host.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def client_key(host: str) -> str:
    """The client a peer address (``host``: text, as a socket gives it) is counted as
    by every per-client share: an IPv4 address as it is; an IPv6 address as its /64
    (``2001:db8:1:2::/64``); an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, from a
    dual-stack socket) as the IPv4 address, so one host is one client whichever socket
    it reached.

    Why a /64: a global unicast IPv6 address is a 64-bit subnet prefix and a 64-bit
    interface identifier (RFC 4291 §2.5.1, §2.5.4), so a /64 is the smallest network
    that is handed out, and one host or home is given at least a whole /64 (RFC 6177:
    a /48 or /56 to an end site, a /64 when one subnet is known to be enough; SLAAC
    and privacy addresses, RFC 8981, pick the low 64 bits at will). Counted one address
    each, such a host could open a connection or take a share from each of its 2^64
    addresses and starve every other client. A home's /56 still counts as 256 clients:
    a share that must hold against that needs its own bound (see `take_victim`'s pace).

    Addresses where a /64 is not one host are counted one by one: link-local
    (``fe80::/10``, every host of a link shares ``fe80::/64``; with its zone index,
    ``fe80::1%eth0``), loopback, and IPv4 hosts seen through NAT64's well-known prefix
    ``64:ff9b::/96`` (RFC 6052). Anything else (a Unix socket's name, "") as it is.
    Never raises."""
    bare, _, zone = host.partition("%")
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if address.is_link_local:
            return f"{address}%{zone}" if zone else str(address)
        if address.is_loopback or address in _NAT64:
            return str(address)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


#: How long a client stays on notice (`Notice`) after an upload of its ended unfinished
#: under the minimum pace, in idle windows (10 min for `prov web`, 5 for `prov serve`, by
#: default): a client on many addresses must leave each unused that long between two
#: uploads that are not measured at once.
NOTICE_WINDOWS = 10


def share_victim(
    holds: Iterable[Sequence[H]],
    mine: int,
    arriving: Callable[[H], bool],
    received: Callable[[H], int],
) -> H | None:
    """The hold a newcomer takes when every slot is taken, by share; None if none.

    holds: each client's holds, oldest first; mine: how many the newcomer's client holds.
    Of the client holding the most, when that is at least ``mine`` + 2 (so the cut never
    just moves the imbalance), the hold still ``arriving`` that has ``received`` the
    fewest bytes, the newest of equals: the upload that has received the least loses the
    least work, and a large file relayed beside later small ones is not cut again and
    again as the newest. A client whose holds have all arrived is passed over for the
    next. A client's last hold is never taken (``mine`` + 2 > 1).
    """
    for client_holds in sorted(holds, key=len, reverse=True):
        if len(client_holds) < mine + 2:
            return None
        candidates = [h for h in reversed(client_holds) if arriving(h)]
        if candidates:  # min keeps the first of equals: the newest
            return min(candidates, key=received)
    return None


def take_victim(
    holds: Collection[Sequence[H]],
    mine: int,
    now: float,
    min_age: float,
    min_rate: float,
    arriving: Callable[[H], bool],
    received: Callable[[H], int],
    started: Callable[[H], float],
    on_notice: Callable[[H], bool] = lambda h: False,
) -> tuple[H, float | None] | None:
    """The hold a newcomer takes when every slot is taken, with its pace when it is
    taken for its pace; None when none is (the newcomer is refused).

    First by share (`share_victim`; pace None). Failing that, by pace: of the holds
    still ``arriving`` that started (``started``, seconds on the clock of ``now``,
    `time.monotonic`) more than ``min_age`` seconds ago (the idle window: a new upload
    has sent little yet), the one with the lowest average pace since its start
    (``received`` bytes over its age, bytes a second), when that is under ``min_rate``
    (0 turns this off); the first found of equals. Whoever's it is, its client's last
    hold included: each slot then costs the client holding it ``min_rate``, so clients
    on 8 addresses with one stalled upload each no longer shut every other upload out.

    A hold ``on_notice`` (an upload of its client ended under the pace lately: `Notice`,
    as `provenance.web.upload.Relayer` and `UploadGate` keep it) is measured without the
    idle window, its pace over its age but at least ``min(1, min_age)`` seconds (a hold
    that has just begun is not measured over a millisecond): else a client reconnecting
    within the window would never be measured at all.
    """
    by_share = share_victim(holds, mine, arriving, received)
    if by_share is not None:
        return by_share, None
    victim, pace = None, float(min_rate)
    for client_holds in holds:
        for h in client_holds:
            age = now - started(h)
            if not arriving(h) or not (age > min_age or on_notice(h)):
                continue
            span = age if age > min_age else max(age, min(1.0, min_age), 1e-3)
            if (rate := received(h) / span) < pace:
                victim, pace = h, rate
    return None if victim is None else (victim, pace)


class Notice:
    """Clients on notice (`take_victim`'s ``on_notice``): those whose upload ended
    under the minimum pace lately (`ended_slow`), each until a time on the
    caller's clock (`time.monotonic`). At most ``most`` are kept, the oldest forgotten
    first (about 100 bytes each), so clients on many addresses cost a bounded memory.
    Not thread-safe: the service calls it under its gate's lock."""

    def __init__(self, most: int = 65536) -> None:
        self.most = most
        self._until: dict[str, float] = {}  # oldest first

    def on(self, client: str, now: float) -> bool:
        """Whether ``client`` is on notice at ``now``."""
        return self._until.get(client, now) > now

    def put(self, client: str, now: float, until: float) -> None:
        """Put ``client`` on notice until ``until``; forget those expired at ``now``."""
        self._until.pop(client, None)  # to the end: the oldest stay first
        self._until[client] = until
        while self._until:  # the expired, and any past the most kept (the oldest first)
            first, end = next(iter(self._until.items()))
            if end > now and len(self._until) <= self.most:
                break
            del self._until[first]


def ended_slow(arriving: bool, received: int, age: float, min_rate: float, min_age: float) -> bool:
    """Whether an upload that ended (or lost its slot) ``age`` seconds after it began,
    having received ``received`` bytes, puts its client on notice (`Notice`): its body was
    still ``arriving`` (abandoned, stalled or cut) after ``min(1, min_age)`` seconds or
    more (the idle window; not one refused at once for a bad header or form), at an
    average under ``min_rate`` bytes a second (0: never)."""
    return arriving and age >= min(1.0, min_age) and received < min_rate * age
