"""CreateEnrollmentToken's TTL has a ceiling (review hostile51): a uint32 of seconds let
an admin (or a script's typo) make a one-time token valid for 136 years, a credential
that enrolls a device long after anyone remembers making it. Now anything over
MAX_TOKEN_TTL (30 days) is INVALID_ARGUMENT saying the ceiling, against a real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clients.api import ProvenanceClient
from provenance.core.errors import TransportError
from tests.conftest import ADMIN_TOKEN, ServerProc

DAY_S = 86_400


@pytest.mark.parametrize("ttl", [2**32 - 1, 30 * DAY_S + 1])
def test_a_ttl_over_30_days_is_refused_saying_the_ceiling(server: ServerProc, ttl: int) -> None:
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        with pytest.raises(TransportError) as e:
            c.create_enrollment_token(ttl)
        text = str(e.value)
    assert "[INVALID_ARGUMENT]" in text and f"{ttl:,} s" in text, text
    assert "at most 2,592,000 s (30 days)" in text, text


def test_a_ttl_of_30_days_is_kept(server: ServerProc) -> None:
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        before = datetime.now(UTC)
        _, expires = c.create_enrollment_token(30 * DAY_S)
    assert before + timedelta(days=30) - timedelta(minutes=5) < expires
    assert expires < datetime.now(UTC) + timedelta(days=30, minutes=5)
