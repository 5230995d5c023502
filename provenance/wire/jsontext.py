"""JSON read and written as Unicode text only.

Python's json module takes a lone UTF-16 surrogate, spelled as an escape (``"\\ud800"``)
or as its raw bytes, into a str that no UTF-8 encoder can write: such a string then broke
whatever encoded it next (protobuf, DSSE's PAE), far from where the JSON was read. JSON
is Unicode text (RFC 8259 §8.2: such a string's behaviour is unpredictable), so these
are refused here, as malformed JSON is. So is an object that names one key twice: RFC
8259 §4 leaves what a reader then does open (Python's json keeps the last value, other
parsers the first or an error), so two programs could read one sidecar or request two
ways; I-JSON (RFC 7493 §2.3) says names MUST be unique. The other way, `path_to_json` and `unicode_only`
keep them out of the JSON this program writes (file names that are not UTF-8).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections import Counter
from typing import Any

#: A ``\\u`` escape of a surrogate (D800-DFFF), or the bytes UTF-8 would give one (ED
#: A0-BF ..): only JSON holding one can parse to a lone surrogate.
_MAY_HOLD_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


#: Longest integer (in digits) a JSON text may hold: what Python converts
#: (`sys.get_int_max_str_digits`, CVE-2020-10735).
MAX_INT_DIGITS = sys.get_int_max_str_digits()
#: What Python's int conversion says of a longer one, and how many digits it had.
_TOO_MANY_DIGITS = re.compile(r"Exceeds the limit \(\d+ digits\).*value has (\d+) digits")


#: Most characters of a duplicated key an error message quotes (a key may be megabytes).
_KEY_SHOWN = 60


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """The object made of ``pairs`` (json's ``object_pairs_hook``); raises ValueError
    naming the first key that appears twice (RFC 7493 §2.3)."""
    doc = dict(pairs)
    if len(doc) == len(pairs):
        return doc
    counts = Counter(key for key, _ in pairs)
    key = next(key for key, _ in pairs if counts[key] > 1)
    shown = key if len(key) <= _KEY_SHOWN else key[:_KEY_SHOWN] + "..."
    raise ValueError(
        f"an object names the key {ascii(shown)} {counts[key]} times, which readers may"
        " take differently (RFC 8259 §4): each key once"
    )


def loads_text(data: bytes | str, *, file_names: bool = False) -> Any:
    """``data`` (UTF-8 bytes, or text) parsed as JSON (as `json.loads`), refusing an
    object that names one key twice, a string that holds a lone surrogate and an integer
    of more than MAX_INT_DIGITS digits. ``file_names=True`` lets strings hold lone
    surrogates: for a state file this program wrote with `json.dumps` of file names as
    the operating system gave them (surrogateescape, PEP 383), to be read back to the
    same names. Raises ValueError for malformed JSON or such an object, string or number
    (its message says so, naming a repeated key), RecursionError for JSON nested deeper
    than the interpreter's stack."""
    if isinstance(data, str):
        text = data
        data = data.encode("utf-8", "surrogatepass" if file_names else "strict")
    else:
        # UTF-8 always (RFC 8259 §8.1), a leading BOM ignored: json.loads given bytes
        # guesses UTF-16 or UTF-32 from where NUL bytes fall, so a damaged line of NULs
        # was read as UTF-32. surrogatepass lets the check below name a raw surrogate.
        try:
            text = data.decode("utf-8-sig", "surrogatepass")
        except UnicodeDecodeError as e:  # Python's own words name its codec, not the input
            at = e.start + len(data) - len(e.object)  # e.object lacks a leading BOM
            raise ValueError(
                f"the text is not UTF-8 (byte 0x{data[at]:02x} at offset {at})"
            ) from None
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys)
    except ValueError as e:
        # Python's message says to call sys.set_int_max_str_digits: advice for this
        # program, not for whoever sent the JSON (a parse_int hook took 10x as long)
        found = _TOO_MANY_DIGITS.search(str(e))
        if found is None:
            raise
        raise ValueError(
            f"a number of {int(found.group(1)):,} digits, more than the {MAX_INT_DIGITS:,}"
            " a JSON number may have here"
        ) from None
    if not file_names and _MAY_HOLD_SURROGATE.search(data):
        try:
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            bad = e.object[e.start : e.end]
            raise ValueError(
                f"a string holds a lone UTF-16 surrogate ({ascii(bad)[1:-1]}), which is no"
                " Unicode character"
            ) from None
    return doc


#: A lone UTF-16 surrogate: no Unicode character, but how Python holds each byte of a file
#: name that is not UTF-8 (U+DC80-U+DCFF, the operating system's surrogateescape).
_SURROGATE = re.compile("[\ud800-\udfff]")


def path_to_json(path: str, key: str = "path") -> dict[str, str]:
    """The ``key`` field(s) of a JSON report on the file named ``path`` (as the operating
    system gave it): ``{key: path}`` for a name that is Unicode text. A name holding
    bytes that are not UTF-8 holds a lone surrogate for each, which json writes as an
    escape (``"\\udce9"``) that strict JSON readers refuse (RFC 8259 §8.2): its ``key``
    has U+FFFD for each such byte instead, and ``KEY_bytes_b64`` is the name's exact bytes
    (standard base64, padded), to open the file by. Raises UnicodeEncodeError for a
    surrogate outside U+DC80-U+DCFF (no name from the operating system holds one)."""
    if not _SURROGATE.search(path):
        return {key: path}
    raw = path.encode("utf-8", "surrogateescape")
    return {key: unicode_only(path), f"{key}_bytes_b64": base64.b64encode(raw).decode("ascii")}


def unicode_only(value: Any) -> Any:
    """``value`` (dicts, lists, tuples and scalars, as `json.dumps` takes them) with each
    lone surrogate in its strings, keys included, replaced by U+FFFD: text that strict
    JSON readers take (a reason naming a file whose name is not UTF-8). Lists and tuples
    come back as lists; other values as they are."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {unicode_only(k): unicode_only(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [unicode_only(v) for v in value]
    return value


def json_kind(value: object) -> str:
    """What ``value``, parsed from JSON, is in JSON's words ("null", "a boolean", "a
    number", "a string", "an array", "an object"): for a message about a document of the
    wrong shape, which Python's type names ("NoneType", "list") would not tell its
    reader."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return "an object"
