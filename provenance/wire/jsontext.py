"""JSON from outside read as Unicode text only.

Python's json module takes a lone UTF-16 surrogate, spelled as an escape (``"\\ud800"``)
or as its raw bytes, into a str that no UTF-8 encoder can write: such a string then broke
whatever encoded it next (protobuf, DSSE's PAE), far from where the JSON was read. JSON
is Unicode text (RFC 8259 §8.2: such a string's behaviour is unpredictable), so these
are refused here, as malformed JSON is.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: A ``\\u`` escape of a surrogate (D800-DFFF), or the bytes UTF-8 would give one (ED
#: A0-BF ..): only JSON holding one can parse to a lone surrogate.
_MAY_HOLD_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def loads_text(data: bytes) -> Any:
    """``data`` parsed as JSON (as `json.loads`), refusing a string that holds a lone
    surrogate. Raises ValueError for malformed JSON or such a string (its message says
    so), RecursionError for JSON nested deeper than the interpreter's stack."""
    doc = json.loads(data)
    if _MAY_HOLD_SURROGATE.search(data):
        try:
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            bad = e.object[e.start : e.end]
            raise ValueError(
                f"a string holds a lone UTF-16 surrogate ({ascii(bad)[1:-1]}), which is no"
                " Unicode character"
            ) from None
    return doc
