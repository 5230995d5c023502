"""`prov log audit` against a server whose GetEntries pages do not follow on from each
other: a page whose ``next`` is short of the entries it holds serves those entries again
(or forever, when ``next`` does not move); one past them skips entries; a page may not
hold more entries than asked for (`_MORE_THAN_ASKED`). The audit names
what the server did, exit 3 `SERVER EVIDENCE REFUSED`, not "the log served more entries
than its checkpoint's N" (the log has N: the server repeated some). A real `prov serve`
logging real claims of a real device, a real gRPC relay on a real port in front of it
answering GetEntries from the real server's pages with ``next`` changed (or an entry
added)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import (
    GET_ENTRIES,
    Cli,
    ServerProc,
    overfull_entries,
    paged_entries,
    relay,
    sign_sample,
)

if TYPE_CHECKING:
    from tests.conftest import RelayAnswer


#: Pages of 4 entries where the audit asked for the checkpoint's 3, ``next`` counting
#: the 3 asked for or the 4 sent. (Before: "SERVER EVIDENCE REFUSED: ... it would serve
#: entry 3 again (pages overlap)", though no page had come before it to overlap; exit 0,
#: the extra entry passed over.)
_MORE_THAN_ASKED = "sent 4 entries where at most 3 were asked for"


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        # the next page starts on this one's last entry: that entry is served twice
        (
            paged_entries(lambda start, n: (n, start + max(n - 1, 1))),
            "entry 2 again (pages overlap)",
        ),
        # the next page starts where this one did: the same entries again, without end
        (paged_entries(lambda start, n: (n, start)), "entries 0 to 2 again (pages overlap)"),
        # the first page holds entry 0 and says the next starts at 2: entry 1 skipped
        (
            paged_entries(lambda start, n: (1, 2) if start == 0 else (n, start + n)),
            "skipping entry 1",
        ),
        (overfull_entries(next_after=False), _MORE_THAN_ASKED),
        (overfull_entries(next_after=True), _MORE_THAN_ASKED),
    ],
    ids=["overlapping", "standing-still", "skipping", "more-next-as-asked", "more-next-after"],
)
def test_pages_that_do_not_follow_on_are_refused_as_such(
    enrolled: Cli, server: ServerProc, tmp_path: Path, answer: RelayAnswer, said: str
) -> None:
    """(Before: "LOG INTEGRITY FAILURE: the log served more entries than its checkpoint's
    3" for the first two, though it has 3 and the server served one or all of them
    twice; "entries were deleted" for the third, though the server skipped one; for the
    last two, see `_MORE_THAN_ASKED`.)"""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    sign_sample(enrolled, tmp_path, "chelsea.png")  # with the enrollment, 3 entries
    state = tmp_path / "audit.json"
    with relay(server.address, {GET_ENTRIES: answer}) as address:
        rc, out, err = enrolled("log", "audit", "--state", str(state), "--server", address)
    assert rc == 3, (rc, out, err)
    assert "\nSERVER EVIDENCE REFUSED: " in err, err
    assert f"the server at {address}" in err and said in " ".join(err.split()), err
    assert "more entries than" not in err and "deleted" not in err, err
    assert ("overlap" in err) == ("overlap" in said), err
    assert not state.exists()  # nothing accepted
    rc, out, err = enrolled("log", "audit", "--state", str(state))  # the log itself: fine
    assert rc == 0 and "3 entries re-hashed" in out, (rc, out, err)
