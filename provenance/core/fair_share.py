"""Fair sharing of a fixed number of slots between clients: which hold a newcomer takes.

Both upload gates use it: the service's (`provenance.server.limits.UploadGate`, gRPC
uploads) and the web front-end's relay (`provenance.web.upload.Relayer`), which relays
all its users' uploads to the service as one client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

H = TypeVar("H")


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
