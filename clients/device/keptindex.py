"""The index of the sidecars kept in a device folder's ``sidecars/`` (`KeptIndex`): for
each kept sidecar, the SHA-256 its claim's hard binding names, so that `prov sign` finds
the kept sidecars that may bind a file's bytes without reading every one.

The index is a hint, never an answer: a name it gives is read and checked in full by its
caller (`clients.device.signing.SigningFolder._kept_for`), and it is checked against the
folder on every use. Each ``*.prov`` file in ``sidecars/`` is listed and its ``stat``
taken (size, modification and change times in nanoseconds, inode); a name the index
does not hold with that very ``stat`` is read again, and one it holds that is gone is
dropped. A sidecar added, removed, replaced or edited by hand is so seen at the next
use. Only records of files last changed more than `SETTLED_NS` before the listing are
kept in the file (a change within a file system's timestamp granularity of the record
would not show in its ``stat``): a file changed since is read on each use until then.
Within one `KeptIndex` (one command), the folder is listed again only once it
changed, or while it or a file in it is not settled (`KeptIndex.bindings`).

On disk, ``sidecars/index.json`` (`INDEX_NAME`): a first line ``prov-kept-index 1
SHA256`` (`_HEADER`; the SHA-256 of the rest, in hex), then a JSON object mapping each
sidecar's file name to ``[size, mtime_ns, ctime_ns, inode, "SHA-256 hex"]`` (``""``: a
file that is no readable sidecar). Written atomically, only by a command holding the
folder's lock, and only when it changed. A file that is missing, cut short, damaged,
over `MAX_INDEX_BYTES`, not a regular file, or of another format is ignored whole and
written anew from the sidecars. The sidecars themselves are untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
from pathlib import Path

from clients.device.disk import SIDECAR_SUFFIX, atomic_write
from clients.device.sidecars import _read_old_sidecar
from clients.files import read_bounded
from provenance.core.errors import ProvenanceError

#: The index's file name in ``sidecars/`` (no sequence number: `entries.name_sequence`
#: gives it 0, and it does not end in ``.prov``).
INDEX_NAME = "index.json"
#: Largest index read, in bytes (about 500,000 kept sidecars); a larger one is ignored,
#: and not written.
MAX_INDEX_BYTES = 64 << 20
#: Nanoseconds a file must have gone unchanged, before the listing, for its record to be
#: kept in the index file: beyond the timestamp granularity of common file systems
#: (FAT keeps 2 s).
SETTLED_NS = 3_000_000_000

_HEADER = re.compile(rb"prov-kept-index 1 ([0-9a-f]{64})")

#: A JSON string (any escapes JSON allows) and a JSON integer of at most 20 digits.
_STRING = rb'"(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+"'
_INT = rb"-?+(?:0|[1-9][0-9]{0,19}+)"
_RECORD = _STRING + rb":\[" + (_INT + rb",") * 4 + rb'"(?:[0-9a-f]{64})?+"\]'
#: What `_save` writes after the first line: an object of records, and nothing else.
#: Checked before the JSON is parsed: a file of the right checksum holding millions of
#: small arrays or objects (``[],[],...``) took 1.7 GiB to parse at `MAX_INDEX_BYTES`;
#: a body of this shape takes about four times its size (possessive quantifiers: no
#: backtracking, 6-14 ms for 10,000 records).
_BODY = re.compile(rb"\{(?:" + _RECORD + rb"(?:," + _RECORD + rb")*+)?+\}")

#: [size, mtime_ns, ctime_ns, inode]: what shows that a file changed. A record of the
#: index is a `Stat` when the file was read, then the SHA-256 (hex) its claim's hard
#: binding names ("": no readable sidecar).
Stat = list[int]


class KeptIndex:
    """The index of the kept sidecars in ``folder`` (a device folder's ``sidecars/``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        #: the index file's records as this object last read or wrote them (None: not
        #: read yet); values as JSON gave them, checked where used (`bindings`)
        self._known: dict[str, object] | None = None
        #: the folder's identity and times when `bindings` last found every file in it
        #: settled and the index file up to date, and what it answered (`bindings`)
        self._answered: tuple[tuple[int, ...], dict[str, str]] | None = None

    @property
    def path(self) -> Path:
        """Where the index is kept: ``sidecars/index.json``."""
        return self.folder / INDEX_NAME

    def bindings(self, write: bool) -> dict[str, str]:
        """Each ``*.prov`` regular file in the folder now, by name, with the SHA-256 (hex)
        its claim's hard binding names ("" for a file that is no readable sidecar): from
        the index where it holds the file with its present ``stat``, else read from the
        file. Empty when the folder does not exist. With ``write`` (the caller holds the
        device folder's lock), the index file is written anew when what it would hold
        changed; a folder that cannot be written keeps the old one (it is checked on
        every use all the same).

        Within one object (one `prov sign` command), the answer is given again without
        listing the folder while the folder itself is unchanged (its inode and its
        modification and change times, which a file added, removed or renamed in it
        moves) since an answer given when it and every file in it had gone unchanged for
        `SETTLED_NS`: a file edited in place meanwhile is seen by the next command, not
        this one. Signing n files beside 10,000 kept sidecars listed and ``stat``-ed
        them n times."""
        settled_before = time.time_ns() - SETTLED_NS
        try:
            of = os.stat(self.folder)
        except OSError:  # none kept
            return {}
        folder = (of.st_dev, of.st_ino, of.st_mtime_ns, of.st_ctime_ns)
        if self._answered is not None and self._answered[0] == folder:
            return dict(self._answered[1])
        listed = _listing(self.folder)
        if listed is None:
            return {}
        # the answer may be given again: the folder and its files settled
        reusable = of.st_mtime_ns < settled_before and of.st_ctime_ns < settled_before
        if self._known is None:
            self._known = _load(self.path)
        known = self._known
        found: dict[str, str] = {}
        settled: dict[str, object] = {}
        kept_as_known = 0  # records of `settled` taken as they are from `known`
        for name, st in listed.items():
            record = known.get(name)
            if not (  # the index holds the file as it is now
                type(record) is list
                and len(record) == 5
                and record[:4] == st
                and type(sha := record[4]) is str
            ):
                record, sha = None, _binding(self.folder / name)
            found[name] = sha
            if st[1] < settled_before and st[2] < settled_before:
                if record is None:
                    record = [*st, sha]
                else:
                    kept_as_known += 1
                settled[name] = record
        reusable = reusable and len(settled) == len(listed)
        if kept_as_known == len(settled) == len(known):
            if reusable:
                self._answered = (folder, dict(found))
            return found  # the file holds these records already
        if write:
            with contextlib.suppress(OSError):
                _save(self.path, settled)
                self._known = settled
        return found


def _listing(folder: Path) -> dict[str, Stat] | None:
    """The ``*.prov`` regular files in ``folder`` (through symbolic links, as they are
    read) and their `Stat`; None when the folder cannot be listed (none kept)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return None
    listed: dict[str, Stat] = {}
    for entry in entries:
        if not entry.name.endswith(SIDECAR_SUFFIX):
            continue
        try:
            st = entry.stat()
        except OSError:  # gone meanwhile, a dangling link
            continue
        if stat.S_ISREG(st.st_mode):
            listed[entry.name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return listed


def _binding(path: Path) -> str:
    """The SHA-256 (hex) the claim of the sidecar at ``path`` binds; "" when it is no
    readable sidecar."""
    sidecar = _read_old_sidecar(path)
    if sidecar is None:
        return ""
    try:
        return sidecar.claim.hard_binding.sha256.hex()
    except ProvenanceError:  # its claim's bytes do not decode
        return ""


def _load(path: Path) -> dict[str, object]:
    """The records of the index file ``path``, by sidecar file name; empty when it is
    missing, or not whole and as `_save` wrote it (see the module's docstring): it is
    then rebuilt from the sidecars. A record is checked where it is used (`KeptIndex.bindings`)."""
    try:
        data = read_bounded(path, MAX_INDEX_BYTES, "index")
    except (OSError, ProvenanceError):
        return {}
    head, _, body = data.partition(b"\n")
    match = _HEADER.fullmatch(head)
    if match is None or hashlib.sha256(body).hexdigest().encode() != match[1]:
        return {}
    if _BODY.fullmatch(body) is None:  # not records alone: never parsed
        return {}
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _save(path: Path, records: dict[str, object]) -> None:
    """Write ``records`` (``[size, mtime_ns, ctime_ns, inode, sha256_hex]`` each) as the index file ``path``, atomically (nothing
    when over `MAX_INDEX_BYTES`). Raises OSError."""
    body = json.dumps(dict(sorted(records.items())), separators=(",", ":")).encode()
    data = b"prov-kept-index 1 " + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    if len(data) <= MAX_INDEX_BYTES:
        atomic_write(path, data)
