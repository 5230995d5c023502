"""Whether a call holds the GIL: a second Python thread that notes the time about every
millisecond stops for the whole of a call that holds the GIL, and goes on through one
that gives it away. The call must take tens of milliseconds (a long message to verify)."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable


def longest_pause_during(call: Callable[[], object]) -> tuple[float, float]:
    """Run ``call`` while another thread ticks; (how long it took, the longest stretch of
    it without a tick), in seconds."""
    ticks = [time.perf_counter()]
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            now = time.perf_counter()
            if now - ticks[-1] >= 0.001:
                ticks.append(now)

    thread = threading.Thread(target=tick)
    thread.start()
    seen = len(ticks)
    while len(ticks) < seen + 2:  # the ticking thread is running
        time.sleep(0.001)
    begin = time.perf_counter()
    call()
    end = time.perf_counter()
    stop.set()
    thread.join()
    during = [begin] + [t for t in ticks if begin < t < end] + [end]
    return end - begin, max(b - a for a, b in zip(during, during[1:], strict=False))


def holds_the_gil(call: Callable[[], object], tries: int = 3) -> bool:
    """True when no other thread ran for at least 60% of ``call``'s time (so the GIL was
    held through the part that takes the time); False when none paused for more than
    30% of it (tried up to ``tries`` times: a busy machine may not run the other thread
    at once). The switch interval is made short meanwhile, so that the other thread
    gets its turn quickly."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    try:
        for _ in range(tries):
            took, pause = longest_pause_during(call)
            if pause >= 0.6 * took:
                return True
            if pause <= 0.3 * took:
                return False
    finally:
        sys.setswitchinterval(interval)
    raise AssertionError(f"cannot tell: the other thread paused {pause:.3f} s of {took:.3f} s")
