"""A signed checkpoint whose extension lines are long or many (c2sp.org/tlog-checkpoint
allows any): refused as this log's checkpoint, in a message that quotes at most 60
characters of a line, whoever reads it (`prov log audit --tiles URL` over a real HTTP
server here; `Checkpoint.parse_body` for every other reader)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provenance.core import merkle
from provenance.core.errors import LogError
from provenance.log.checkpoint import Checkpoint, LogSigner
from tests.test_tiles import ORIGIN, _answering, _audit, _serving

_BODY = Checkpoint(ORIGIN, 0, merkle.EMPTY_ROOT).body().decode()
_MOST_SHOWN = 2_000
"""Characters of stderr a refusal may take: a line of words, a field quoted cut."""


@pytest.mark.parametrize(
    "extensions",
    [
        "x" * 900_000 + "\n",  # one long unknown extension line
        "e\n" * 400_000,  # many short ones
        "time " + "9" * 900_000 + "\n",  # a time line that is no time
    ],
    ids=["one-long-line", "many-lines", "long-time-line"],
)
def test_a_signed_checkpoint_with_huge_extension_lines_is_refused_in_a_short_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extensions: str
) -> None:
    """Before, the message repeated every extension line in full: 2,000,203 bytes of
    stderr for 400,000 lines of 'e' (and 900 KB for one long line), exit 3."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    note = signer.sign_text(_BODY + extensions).encode()
    with _serving(_answering(200, note, "text/plain")) as url:
        state = str(tmp_path / "state.json")
        rc = _audit("--state", state, "--tiles", url, "--log-key", signer.verifier_key())
    err = capsys.readouterr().err
    assert rc == 3 and "LOG INTEGRITY FAILURE" in err, err[:_MOST_SHOWN]
    assert len(err) < _MOST_SHOWN, err[:_MOST_SHOWN]
    assert "characters" in err or "lines" in err, err
    assert not (tmp_path / "state.json").exists()


def test_extension_lines_are_named_with_their_count_and_first_line_cut() -> None:
    """The refusal quotes the first three extension lines, each cut to 60 characters
    with its length said, and says how many there are past three."""
    with pytest.raises(LogError) as caught:
        Checkpoint.parse_body(_BODY + "a" * 100 + "\nb\n")
    message = str(caught.value)
    assert message == f"unknown checkpoint extension lines ['{'a' * 60}'... (100 characters), 'b']"
    with pytest.raises(LogError) as caught:
        Checkpoint.parse_body(_BODY + "a\nb\nc\nd\ne\n")
    assert str(caught.value) == (
        "unknown checkpoint extension lines ['a', 'b', 'c', ... (5 extension lines in all)]"
    )
    with pytest.raises(LogError) as caught:
        Checkpoint.parse_body(_BODY + "time " + "1" * 100 + "\n")
    assert "(100 characters)" in str(caught.value) and len(str(caught.value)) < 200
