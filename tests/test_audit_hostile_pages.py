"""`prov log audit` against a server whose GetEntries pages do not follow on from each
other: a page whose ``next`` is short of the entries it holds serves those entries again
(or forever, when ``next`` does not move); one past them skips entries. The audit names
what the server did, exit 3 `SERVER EVIDENCE REFUSED`, not "the log served more entries
than its checkpoint's N" (the log has N: the server repeated some). A real `prov serve`
logging real claims of a real device, a real gRPC relay on a real port in front of it
answering GetEntries from the real server's pages with ``next`` changed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import GET_ENTRIES, Cli, ServerProc, paged_entries, relay, sign_sample


@pytest.mark.parametrize(
    ("by", "said"),
    [
        # the next page starts on this one's last entry: that entry is served twice
        (lambda start, n: (n, start + max(n - 1, 1)), "entry 2 again (pages overlap)"),
        # the next page starts where this one did: the same entries again, without end
        (lambda start, n: (n, start), "entries 0 to 2 again (pages overlap)"),
        # the first page holds entry 0 and says the next starts at 2: entry 1 skipped
        (lambda start, n: (1, 2) if start == 0 else (n, start + n), "skipping entry 1"),
    ],
    ids=["overlapping", "standing-still", "skipping"],
)
def test_pages_that_do_not_follow_on_are_refused_as_such(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    by: Callable[[int, int], tuple[int, int]],
    said: str,
) -> None:
    """(Before: "LOG INTEGRITY FAILURE: the log served more entries than its checkpoint's
    3" for the first two, though it has 3 and the server served one or all of them
    twice; "entries were deleted" for the third, though the server skipped one.)"""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    sign_sample(enrolled, tmp_path, "chelsea.png")  # with the enrollment, 3 entries
    state = tmp_path / "audit.json"
    with relay(server.address, {GET_ENTRIES: paged_entries(by)}) as address:
        rc, out, err = enrolled("log", "audit", "--state", str(state), "--server", address)
    assert rc == 3, (rc, out, err)
    assert "\nSERVER EVIDENCE REFUSED: " in err, err
    assert f"the server at {address}" in err and said in err, err
    assert "more entries than" not in err and "deleted" not in err, err
    assert not state.exists()  # nothing accepted
    rc, out, err = enrolled("log", "audit", "--state", str(state))  # the log itself: fine
    assert rc == 0 and "3 entries re-hashed" in out, (rc, out, err)
