"""Turns at a few slots, handed out to waiting clients in rotation (round robin).

`FairTurns` bounds how many callers hold a slot at once (the server's Lookups, the web
API's JSON workers) and queues the rest per client (`provenance.core.fair_share.client_key`),
so a client with many calls waiting delays another client's call by at most one call per
slot, not by its whole queue: the queue of a plain semaphore or thread pool is first come,
first served, and one client's flood of calls went ahead of everyone else's (see the
callers for the figures).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from provenance.core.errors import ConfigError, LimitError

T = TypeVar("T")


@dataclass(frozen=True)
class Refusal:
    """Why `FairTurns.turn` refused a caller: ``client`` (its key); ``waiting``, its own
    calls waiting (those of the client that held the most, for ``dropped``);
    ``queued``, all clients' calls waiting; ``per_client``: it already had as many
    waiting as one client may; ``dropped``: it was queued, then dropped to make room for
    a client with fewer waiting (longest queue drop); else every place was taken and no
    client had more waiting than this one plus one."""

    client: str
    waiting: int
    queued: int
    per_client: bool = False
    dropped: bool = False


class FairTurns:
    """At most ``slots`` callers hold a turn at once; the others wait, each in its client's
    queue, and a turn given back goes to the oldest caller of the next client in rotation
    (the clients with callers waiting, in the order they first queued; a client served
    goes to the back). Each client may have at most ``per_client`` callers waiting, all
    clients together ``in_all`` (None: no bound; with either bound, ``refuse`` makes the
    error each refusal raises); with ``in_all`` taken, a client with
    fewer waiting than the longest queue less one still gets its place: the longest
    queue's newest caller is refused to make room (longest queue drop, as fq_codel's), so
    a flood from one client cannot shut another out. A caller cancelled while it waits leaves its
    queue; one cancelled while `in_thread` runs its work leaves its turn held until that
    work ends. For one event loop (no lock): call `turn` and `in_thread` from coroutines of
    that loop only."""

    def __init__(
        self,
        slots: int,
        refuse: Callable[[Refusal], LimitError] | None = None,
        per_client: int | None = None,
        in_all: int | None = None,
    ) -> None:
        if slots < 1 or min(per_client or 1, in_all or 1) < 1:
            raise ConfigError("FairTurns needs at least one slot and a place for one caller")
        if refuse is None and (per_client is not None or in_all is not None):
            raise ConfigError("FairTurns with a bound on callers waiting needs its refusal")
        self.slots = slots
        self._refuse = refuse
        self._per_client = per_client
        self._in_all = in_all
        self._held = 0
        # client -> its callers waiting, oldest first; dict order is the turn order
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._queued = 0

    @property
    def held(self) -> int:
        """Turns held now."""
        return self._held

    @property
    def queued(self) -> int:
        """Callers waiting now, all clients together."""
        return self._queued

    def _refused(self, why: Refusal) -> LimitError:
        assert self._refuse is not None  # set whenever a bound is (__init__)
        return self._refuse(why)

    def _leave(self, client: str, waiter: asyncio.Future[None]) -> None:
        queue = self._queues.get(client)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            self._queued -= 1
            if not queue:
                del self._queues[client]

    def _make_room(self, client: str, mine: int) -> None:
        """Every place is taken and ``client``, with ``mine`` callers waiting, asks for
        one: refuse the newest caller of the longest queue when it holds more than
        ``mine + 1``, else raise the refusal of ``client``."""
        victim, longest = max(self._queues.items(), key=lambda kv: len(kv[1]))
        if len(longest) <= mine + 1:
            raise self._refused(Refusal(client, mine, self._queued))
        dropped = longest.pop()
        self._queued -= 1
        if not longest:
            del self._queues[victim]
        if not dropped.done():  # else cancelled already, its task not yet run: it leaves
            dropped.set_exception(
                self._refused(Refusal(victim, len(longest) + 1, self._queued + 1, dropped=True))
            )

    def _pass_on(self) -> None:
        """A turn was given back: hand it to the next client's oldest caller, else free
        the slot."""
        while self._queues:
            client = next(iter(self._queues))
            queue = self._queues.pop(client)
            waiter = queue.popleft()
            self._queued -= 1
            if queue:
                self._queues[client] = queue  # to the back of the rotation
            if not waiter.done():
                waiter.set_result(None)  # the slot goes to it, still held
                return
        self._held -= 1

    async def _take(self, client: str) -> None:
        """Wait for a slot for ``client``, in its turn (raises as `turn` says); the caller
        then holds it and gives it back with `_pass_on`."""
        if self._held < self.slots and not self._queues:
            self._held += 1
            return
        queue = self._queues.get(client)
        mine = 0 if queue is None else len(queue)
        if self._per_client is not None and mine >= self._per_client:
            raise self._refused(Refusal(client, mine, self._queued, per_client=True))
        if self._in_all is not None and self._queued >= self._in_all:
            self._make_room(client, mine)
        waiter = asyncio.get_running_loop().create_future()
        self._queues.setdefault(client, deque()).append(waiter)
        self._queued += 1
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._pass_on()  # handed a turn as it was cancelled: pass it on
            else:
                self._leave(client, waiter)
            raise

    @asynccontextmanager
    async def turn(self, client: str) -> AsyncIterator[None]:
        """Hold one of the slots for ``client`` (a `client_key`) inside the block, waiting
        for it in the client's turn. Raises ``refuse(Refusal)`` (a LimitError) when the
        client already has ``per_client`` callers waiting, or every place of ``in_all``
        is taken and no client has two more waiting than this one, also when this caller
        waited and was then dropped for another client's."""
        await self._take(client)
        try:
            yield
        finally:
            self._pass_on()

    async def in_thread(
        self, client: str, executor: Executor, fn: Callable[..., T], *args: object
    ) -> T:
        """``fn(*args)`` on one of ``executor``'s threads in a turn of ``client`` (waiting
        and refused as `turn` says), the turn held until that thread is done with it, also
        when this caller is cancelled meanwhile (a gRPC call cancelled by its client: the
        thread runs on, to ``fn``'s own deadline), so that with as many threads as slots
        a call given a turn never waits for a thread, and a client cannot take more than
        its places by cancelling its calls once they run (measured before: a client whose
        Lookup was cancelled while it ran had its next Lookup take the turn behind the
        still busy thread, and a third one queued instead of refused). Returns what
        ``fn`` returns; raises what it raises, CancelledError when this caller is."""
        await self._take(client)
        try:
            job = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        except BaseException:
            self._pass_on()  # an executor shut down: no thread took it
            raise
        job.add_done_callback(lambda _: self._pass_on())
        # shielded: a cancelled caller leaves the job (and its turn) to finish
        return await asyncio.shield(job)
