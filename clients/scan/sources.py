"""What a scan reads: folders, zip and tar archives, list files, as a stream of items.

Archives are read as streams and never extracted: an entry's bytes go to memory (images,
small files, nested archives) or straight through SHA-256 (anything larger), never to a
file. Entries that an extracting tool would be tricked by are refused one by one, with a
reason, and the scan goes on: absolute names, ``..`` components, control characters,
symbolic and hard links, devices, encrypted zip entries. Compression bombs are bounded
(the measures of CWE-409 and of the "zip bomb" literature, e.g. D. Fifield, "A better zip
bomb", WOOT 2019): a per-archive cap on members and on uncompressed bytes, a cap on the
ratio of uncompressed to compressed bytes (per zip entry from its directory record, over
the whole stream for a compressed tar, its headers and padding past an allowance a
member counted with its members' data (`_TarCount`), checked while reading so a lying
header does not help), and a cap on how deeply archives nest. Those caps count the
bytes members actually produce, not the sizes their headers declare: a zip whose entries
share or overlap their compressed data (Fifield's overlapping-file bomb) has the
overlapping entries refused from the directory alone, and the bytes read out of one
archive are bounded in total and in ratio to the archive's size, so neither overlaps
nor a tar's sparse members (a 2 KB header describing a 20 GiB file of holes; refused by
their real size against the data they hold) make the scanner read more than the limits
allow.

Every item has a ``ref``: a folder file's path as given, an archive entry's archive ref
and name joined by ``!`` (``photos.zip!day1/a.jpg``, ``outer.zip!inner.tar.gz!x.jpg``); a
name repeated in one archive gets `` #2``, `` #3``... In each name a backslash, a ``!``
and each byte that is not UTF-8 are escaped (`escape_name`), so refs are unique: the
``!`` that joins an archive and its entry is never part of a name. A problem with a whole archive (not
readable, too many members, too many bytes, truncated) is one item whose ref is the
archive's own. Any other failure of a reader on hostile bytes (the standard library's
zip, tar and gzip code raises many kinds) is the same: one row for the archive, never
an aborted scan. A tar member the archive ends or breaks in, inside its data, has an item
of its own too (`_cut_member`), before the archive's.

Sidecars beside folder files are taken only when they are regular files (a FIFO or a
symbolic link to ``/dev/zero`` named ``x.jpg.prov`` is reported on its own row and never
opened).
"""

from __future__ import annotations

import bz2
import codecs
import copy
import gzip
import io
import logging
import lzma
import os
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, Self, cast

from clients.files import NotRegularFileError, open_regular
from provenance.core.binding import Sha256Stream
from provenance.media.assets import AssetLimits
from provenance.media.budget import DEFAULT_DECODE_BUDGET_BYTES
from provenance.media.image import SNIFF_BYTES, sniff_media_type
from provenance.wire.sidecar import MAX_SIDECAR_BYTES

log = logging.getLogger(__name__)

#: Names that mark a file inside a folder or an archive as an archive to open.
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
#: Suffixes of a PATH argument read as a list of paths, one a line.
LIST_SUFFIXES = (".txt", ".lst", ".list")
#: Longest line of a list file, in characters: longer than any file name (PATH_MAX is
#: 4,096 bytes on Linux, a Windows long path 32,767 characters). A list file is read a
#: line at a time, so this bounds what reading it holds (a list of 10^7 names was read
#: whole first: about 760 MB; a single line of any length was held whole, twice over).
MAX_LIST_LINE = 1 << 16
#: Skipped lines of a list file that its row names, at most (the rest are counted).
_SKIPPED_SHOWN = 5
#: Suffix of a provenance sidecar (see `clients.device.sidecar_path`).
SIDECAR_SUFFIX = ".prov"
#: Entries up to this size are held in memory whatever their type, in bytes (1 MiB).
SMALL_ENTRY_BYTES = 1 << 20
_READ_BYTES = 1 << 20
_HEAD_BYTES = 512


@dataclass(frozen=True)
class ScanLimits:
    """Limits on untrusted archives; sizes in bytes.

    assets: limits on decoding media (`provenance.media.assets.AssetLimits`; the server's
    default decode budget, so a small file that declares a large picture is looked up
    by SHA-256 only instead of decoded whatever memory it takes); max_entries:
    members of one archive; max_total_bytes: uncompressed bytes of one archive;
    max_ratio: uncompressed / compressed bytes, checked once ratio_min_bytes were
    decompressed (small archives of text compress well and are harmless);
    tar_header_allowance: bytes of a tar's headers and padding a member may take free of
    the ratio, pooled over the archive's members (its 512-byte header, pax and GNU
    extension headers, the zeros padding its data to 512 bytes: `_TarCount`), and at most
    tar_header_ratio times the compressed bytes read (an honest tar's headers compress a
    few hundred to one; 10^6 identical 4 KiB headers bzip2 to 41 KB); max_depth:
    archive levels opened (1: archives given or found in folders; 2: one archive inside
    those); max_nested_bytes: largest nested archive, held in memory to be opened.
    """

    assets: AssetLimits = field(
        default_factory=lambda: AssetLimits(max_decode_bytes=DEFAULT_DECODE_BUDGET_BYTES)
    )
    max_entries: int = 1_000_000
    max_total_bytes: int = 1 << 40
    max_ratio: float = 100.0
    ratio_min_bytes: int = 16 << 20
    tar_header_allowance: int = 4096
    tar_header_ratio: float = 2000.0
    max_depth: int = 2
    max_nested_bytes: int = 256 << 20


@dataclass(frozen=True)
class FileItem:
    """A regular file on disk: ref, path, size in bytes, the path of its sidecar if any."""

    ref: str
    path: str
    size: int
    sidecar: str | None = None


@dataclass(frozen=True)
class EntryItem:
    """An archive entry held in memory. archive: the outermost archive file on disk, its
    path escaped as a ref is (`escape_name`; `unescape_name` gives the path back)."""

    ref: str
    data: bytes = field(repr=False)
    archive: str

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class HashedItem:
    """A large archive entry hashed while streaming: SHA-256 (32 bytes), size in bytes and
    sniffed media type (None if unrecognised)."""

    ref: str
    size: int
    sha256: bytes
    media_type: str | None
    archive: str


@dataclass(frozen=True)
class RefusedItem:
    """An entry (or a whole archive or folder) that was not scanned, and why."""

    ref: str
    error: str
    size: int | None = None
    archive: str | None = None


Item = FileItem | EntryItem | HashedItem | RefusedItem


def entry_name_problem(name: str) -> str | None:
    """Why an archive member name is refused, or None if it is acceptable.

    Refused: empty names, control characters (a NUL said as such), absolute names
    (``/x``, ``\\x``, ``C:x``), and names with a ``..`` component (either separator).
    """
    if not name:
        return "empty entry name"
    if "\0" in name:
        return _nul_in_name(name)
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "control character in the entry name"
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "absolute entry name (an extracting tool would write outside its folder)"
    if ".." in re.split(r"[\\/]", name):
        return (
            "path traversal: '..' in the entry name"
            " (an extracting tool would write outside its folder)"
        )
    return None


def archive_kind(head: bytes) -> str | None:
    """ "zip" or "tar" from a file's first 512 bytes (gzip, bzip2 and xz count as tar),
    else None."""
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")) or head[257:262] == b"ustar":
        return "tar"
    return None


def _has_archive_suffix(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _zero_tar_head(head: bytes, name: str) -> bool:
    """Whether ``head`` (a file's first 512 bytes) is a block of zeros and ``name`` ends in
    ``.tar``: then the file is an empty tar archive if the rest is zeros too (what `tarfile`
    and GNU tar write for no members, 10,240 zeros; `tarfile` reads it as no members)."""
    return name.lower().endswith(".tar") and len(head) == _HEAD_BYTES and head.count(0) == len(head)


def _prefixed_zip(f: IO[bytes], name: str) -> bool:
    """Whether the file ``f``, named ``name``, is a zip with bytes before it: named
    ``.zip`` and ending in a zip's end record (what `zipfile` finds, reading the last 64 KiB
    at most): a self-extracting archive (a program with a zip appended), which `unzip`,
    7-Zip and `zipfile` all open (not one file, "not a recognised image or video
    format", the captures in it never looked at). A file named
    otherwise (``setup.exe``) is not opened."""
    if not name.lower().endswith(".zip"):
        return False
    try:
        found = zipfile.is_zipfile(f)
    except OSError:
        return False
    except Exception:  # noqa: BLE001 (hostile end records break zipfile's reader many
        # ways: BadZipFile "span multiple disks", found by the archive fuzz target): a file
        # whose zip cannot be found is one file, as any other
        log.debug("%s: no zip end record read", name, exc_info=True)
        found = False
    f.seek(0)
    return found


def _zeros_to_end(f: _Readable) -> bool:
    """Whether every byte left in ``f`` is zero (read a block at a time)."""
    while block := f.read(_READ_BYTES):
        if block.count(0) != len(block):
            return False
    return True


class _Readable(Protocol):
    """What the scanner reads archive members through (a member, or it metered)."""

    def read(self, size: int = -1, /) -> bytes: ...


class _CountingReader:
    """A read-only file wrapper that counts the bytes read (compressed bytes of a tar)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.count += len(data)
        return data


def _decompressed(f: IO[bytes], raw: _CountingReader) -> _Readable:
    """The tar stream in ``f`` (seekable, at its start; read through ``raw``): ``raw``
    itself, or, for a gzip, bzip2 or xz file (by its magic bytes), a reader that
    decompresses it as asked, at most what each read asks for (`gzip.GzipFile`,
    `bz2.BZ2File`, `lzma.LZMAFile`). `tarfile`'s own stream reader ("r|*") hands each 10
    KiB of compressed bytes to the decompressor with no cap on what comes out: bzip2
    turns 200 bytes into 128 MiB in that one call, before any limit is checked."""
    here = f.tell()
    magic = f.read(6)
    f.seek(here)
    # typeshed wants a full file object; the readers only ever call read
    src = cast("IO[bytes]", raw)
    if magic.startswith(b"\x1f\x8b"):
        return _GzipStream(gzip.GzipFile(fileobj=src, mode="rb"))
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(src)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(src)
    return raw


def _tester(stream: _Readable) -> str:
    """The command that tests the compressed file `_decompressed` gave ``stream`` for."""
    if isinstance(stream, bz2.BZ2File):
        return "bzip2 -t"
    return "xz -t" if isinstance(stream, lzma.LZMAFile) else "gzip -t"


class _GzipStream:
    """A gzip file's decompressed bytes (`gzip.GzipFile`, a member's at a time): bytes
    after a whole gzip member that begin no other member (trailing junk, which gzip(1)
    and GNU tar warn of and ignore) end the stream, as `tarfile`'s own reader ignored
    them, rather than stop the archive before its last members were read."""

    def __init__(self, gz: gzip.GzipFile) -> None:
        self._gz = gz
        self._out = 0
        self._ended = False

    def read(self, size: int = -1) -> bytes:
        if self._ended:
            return b""
        try:
            data = self._gz.read1(size)  # no bytes read are lost when the junk raises
        except gzip.BadGzipFile as e:
            if not self._out or not str(e).startswith("Not a gzipped file"):
                raise
            self._ended = True
            return b""
        self._out += len(data)
        return data


def _declared_too_much(limit: int) -> str:
    """Why an archive stops where its entries' declared sizes pass ``limit`` (bytes): they
    are what headers say, before anything is decompressed."""
    return (
        f"its entries declare more than {limit:,} bytes in all (uncompressed), past the"
        " scan's limit: the rest of the archive was not scanned"
    )


class _ArchiveStop(Exception):
    """Ends the reading of one archive; the message is the reason, reported once."""


#: tarfile's errors for a header that does not parse or is cut short (not in its stubs).
_DAMAGED_HEADER: tuple[type[Exception], ...] = (
    tarfile.InvalidHeaderError,  # type: ignore[attr-defined]
    tarfile.TruncatedHeaderError,  # type: ignore[attr-defined]
)


#: Most bytes of headers read for one tar member: its own 512-byte header with the pax
#: extended headers, GNU long names and sparse maps that come with it; and most bytes of
#: global pax headers in one archive. `tarfile` reads a pax header or a long name whole,
#: in one read of the size its header declares, and a sparse map (old GNU extension
#: blocks, or the map of GNU sparse 1.0) into a list as long as the map, all before any
#: limit here is checked: an 843-byte .tar.bz2 declaring a 1 GiB pax header took 2.2 GiB
#: of memory, an 11 KB one of 256 MiB of sparse extension blocks 0.9 GiB. Go's
#: archive/tar and libarchive refuse any one such header over 1 MiB.
MAX_TAR_HEADER_BYTES = 1 << 20


class _HeaderBudget:
    """A tar stream as one member's header reading sees it: each read is refused
    (`tarfile.ReadError`), before anything is read, once the member's headers would take
    more than ``left`` bytes (`MAX_TAR_HEADER_BYTES`)."""

    def __init__(self, stream: Any, left: int, at: int) -> None:
        self.stream = stream
        self._left = left
        self._at = at

    def read(self, size: int) -> bytes:
        if size > self._left:
            raise tarfile.ReadError(
                f"the headers of the member at byte {self._at:,} (pax extended headers, GNU"
                f" long names, a sparse map) take more than {MAX_TAR_HEADER_BYTES:,} bytes:"
                " the archive is corrupt or hostile"
            )
        data: bytes = self.stream.read(size)
        self._left -= len(data)
        return data

    def tell(self) -> int:
        return int(self.stream.tell())


class _HeaderChecked(tarfile.TarInfo):
    """A tar member's header, read as `tarfile` reads it, except that a header after the
    first that does not parse (a wrong checksum, garbage) or is cut short raises ReadError:
    `tarfile` takes either for the archive's end, so a tar damaged after its first member
    lost the members after the damage without a word. A header of zeros, or no bytes at
    all, still ends the archive. A member's headers are read through a `_HeaderBudget`,
    and the archive's global pax headers are counted (``_global_bytes`` on the
    `tarfile.TarFile`), both at most `MAX_TAR_HEADER_BYTES` (ReadError)."""

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> Self:
        if isinstance(tf.fileobj, _HeaderBudget):  # the header after a pax or GNU header
            return cls._checked(tf)
        stream = tf.fileobj
        tf.fileobj = _HeaderBudget(stream, MAX_TAR_HEADER_BYTES, tf.offset)  # type: ignore[assignment]  # read and tell are all a header's reading asks
        try:
            return cls._checked(tf)
        finally:
            tf.fileobj = stream

    @classmethod
    def _checked(cls, tf: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tf)
        except _DAMAGED_HEADER as e:
            if tf.offset == 0:  # the first header: tarfile says "not a tar" itself
                raise
            raise tarfile.ReadError(
                f"the member header at byte {tf.offset:,} is damaged ({e})"
            ) from e

    def _proc_pax(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type == tarfile.XGLTYPE:
            used = getattr(tf, "_global_bytes", 0) + self.size
            if used > MAX_TAR_HEADER_BYTES:
                raise tarfile.ReadError(
                    f"its global pax headers take more than {MAX_TAR_HEADER_BYTES:,} bytes"
                    " in all: the archive is corrupt or hostile"
                )
            setattr(tf, "_global_bytes", used)  # noqa: B010 (no attribute of TarFile's)
        proc: Callable[[tarfile.TarFile], tarfile.TarInfo] = super()._proc_pax  # type: ignore[misc]  # tarfile's own, not in its stubs
        return proc(tf)


_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
    RuntimeError,
    ValueError,
)


#: A file's identity on disk: (st_dev, st_ino).
FileId = tuple[int, int]


class Walker:
    """Enumerates items under limits. ``skip(ref)`` says a leaf item is not wanted (already
    in the report, say): its bytes are then not read, except as a tar stream demands.
    ``leave_out``: files on disk that are no item at all, by `FileId` whatever their
    name (the scan's own report files, which a folder scanned may hold)."""

    def __init__(
        self,
        limits: ScanLimits,
        skip: Callable[[str], bool],
        leave_out: frozenset[FileId] = frozenset(),
    ) -> None:
        self.limits = limits
        self.skip = skip
        self.leave_out = leave_out

    # ---------------------------------------------------------------- paths

    def paths(self, paths: list[str]) -> Iterator[Item]:
        """Items of PATH arguments: folders, archives, list files or single files."""
        for p in paths:
            yield from self._path(p, allow_list=True)

    def _path(self, path: str, allow_list: bool, listed: str = "") -> Iterator[Item]:
        """Items of one PATH argument, or (``listed``: where it was named, "line N of the
        list file L") of a line of a list file, a refusal then saying where."""
        try:
            st = os.stat(path)
        except OSError as e:
            where = (
                f" (named on {listed}: a PATH ending in {', '.join(LIST_SUFFIXES[:-1])} or"
                f" {LIST_SUFFIXES[-1]} is read as a list of paths, one a line)"
                if listed
                else ""
            )
            yield RefusedItem(escape_name(path), f"cannot open: {e.strerror or e}{where}")
            return
        if stat.S_ISDIR(st.st_mode):
            yield from self._folder(path)
        elif (st.st_dev, st.st_ino) in self.leave_out:
            return
        elif not stat.S_ISREG(st.st_mode):
            yield RefusedItem(escape_name(path), "not a regular file (device, socket or FIFO)")
        elif allow_list and path.lower().endswith(LIST_SUFFIXES):
            yield from self._list(path)
        else:
            side = path + SIDECAR_SUFFIX
            sidecar = side if _is_regular(side) else None
            yield from self._file(path, st.st_size, sidecar, archive_by_magic=True)

    def _list(self, path: str) -> Iterator[Item]:
        """Items of the files a list file names, a line at a time (`list_lines`). Lines
        that name no file get one row of the list file, after the rest (the first
        _SKIPPED_SHOWN named, the others counted); so does a list that cannot be opened,
        or read to its end."""
        base = os.path.dirname(path)
        try:
            f = open_list(path)
        except OSError as e:
            yield RefusedItem(escape_name(path), f"cannot read the list file: {e.strerror or e}")
            return
        skipped: list[str] = []
        count = n = 0
        stopped = ""
        with f:
            lines = list_lines(f)
            while True:
                try:
                    n, line, problem = next(lines)
                except StopIteration:
                    break
                except OSError as e:
                    stopped = f"cannot read the list file past line {n}: {e.strerror or e}"
                    break
                if problem is not None:
                    count += 1
                    if len(skipped) < _SKIPPED_SHOWN:
                        skipped.append(f"line {n} ({problem})")
                elif line and not line.startswith("#"):
                    where = f"line {n} of the list file {escape_name(path)}"
                    yield from self._path(os.path.join(base, line), False, where)
        if count or stopped:
            yield RefusedItem(escape_name(path), _list_problems(count, skipped, stopped))

    def _folder(self, path: str) -> Iterator[Item]:
        """Items of a folder and its subfolders, each folder's entries in name order and
        a subfolder's items at its place among them. The walk keeps its own stack of open
        listings (one generator whatever the depth): a folder nested deeper than Python's
        recursion limit (1,000 levels) is walked to its bottom. Each entry is dropped from
        its listing once walked, with the ``stat`` result it cached: memory is the
        listings' names and types, about 280 bytes for each file not yet walked."""
        listed = self._listing(path)
        if isinstance(listed, RefusedItem):
            yield listed
            return
        stack: list[tuple[str, list[os.DirEntry[str]], set[str]]] = [(path, *listed)]
        while stack:
            folder, entries, regular = stack[-1]
            if not entries:
                stack.pop()
                continue
            ent = entries.pop()  # let go of each entry (and its cached stat) once walked
            ref = ent.path  # os.path.join(folder, ent.name), made in C by the listing
            try:
                if ent.is_symlink():
                    yield RefusedItem(escape_name(ref), "symbolic link: not followed")
                elif ent.is_dir(follow_symlinks=False):
                    sub = self._listing(ref)
                    if isinstance(sub, RefusedItem):
                        yield sub
                    else:
                        stack.append((ref, *sub))
                elif ent.is_file(follow_symlinks=False):
                    st = ent.stat(follow_symlinks=False)
                    if (st.st_dev, st.st_ino) in self.leave_out:
                        continue
                    side = ent.name + SIDECAR_SUFFIX
                    sidecar = os.path.join(folder, side) if side in regular else None
                    yield from self._file(ref, st.st_size, sidecar, archive_by_magic=False)
                else:
                    yield RefusedItem(
                        escape_name(ref), "not a regular file (device, socket or FIFO)"
                    )
            except OSError as e2:
                yield RefusedItem(escape_name(ref), f"cannot read: {e2.strerror or e2}")

    @staticmethod
    def _listing(path: str) -> tuple[list[os.DirEntry[str]], set[str]] | RefusedItem:
        """A folder's entries in reverse name order (walked by ``pop``) and the names of
        its regular files (the sidecars it offers), or the row saying why it cannot be
        listed."""
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name, reverse=True)
        except OSError as e:
            return RefusedItem(escape_name(path), f"cannot list the folder: {e.strerror or e}")
        regular = set()
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    regular.add(entry.name)
            except OSError:
                pass
        return entries, regular

    def _file(
        self, path: str, size: int, sidecar: str | None, archive_by_magic: bool
    ) -> Iterator[Item]:
        """A file on disk: an archive to open (by magic when named as a PATH, by name and
        magic inside a folder) or a leaf item."""
        if archive_by_magic or _has_archive_suffix(path):
            try:
                with open_regular(path) as f:
                    head = f.read(_HEAD_BYTES)
                    kind = archive_kind(head)
                    if kind is None and _zero_tar_head(head, path) and _zeros_to_end(f):
                        kind = "tar"  # an empty tar: no members, as an empty zip
                    prefixed = kind is None and _prefixed_zip(f, path)
                    if prefixed:
                        kind = "zip"
                    if kind is not None:
                        f.seek(0)
                        ref = escape_name(path)  # also the rows' archive: valid UTF-8
                        # a prefixed zip's bytes before it are a file of their own (a
                        # JPEG with a zip appended is a photo): the whole file is one row
                        # too, so renaming it .zip hides nothing
                        if prefixed and not self.skip(ref):
                            yield FileItem(ref, path, size, sidecar)
                        yield from self._archive(kind, f, ref, ref, 1, apart=prefixed)
                        return
            except (OSError, NotRegularFileError) as e:
                msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                yield RefusedItem(escape_name(path), f"cannot read: {msg}", size)
                return
        ref = escape_name(path)
        if not self.skip(ref):
            yield FileItem(ref, path, size, sidecar)

    # ---------------------------------------------------------------- archives

    def _archive(
        self, kind: str, f: IO[bytes], ref: str, outer: str, depth: int, apart: bool = False
    ) -> Iterator[Item]:
        """The items of the archive ``f`` (``kind`` "zip" or "tar") named ``ref``, nested
        ``depth`` levels in the file ``outer``; a refusal of the archive as a whole
        (unreadable, over a limit) is one row after the entries read before it. ``apart``:
        ``f`` is the zip appended to the file ``ref``, whose whole bytes are a row of their
        own under ``ref``, so its refusal is named as an entry of an empty name would be
        (``ref!``, ``ref! #2`` past entries so named: `_entry_ref`) and no two rows share
        a ref (before, the archive fuzz target found a corrupt appended zip giving two rows
        named ``ref``, one hidden behind the other in the report)."""
        seen: dict[str, int] = {}  # the entry names given out (`_entry_ref`)

        def refused(why: str) -> RefusedItem:
            return RefusedItem(_entry_ref(ref, "", seen) if apart else ref, why, archive=outer)

        if depth > self.limits.max_depth:
            yield refused(
                f"archive nested more than {self.limits.max_depth} levels deep: not opened"
            )
            return
        walk = self._zip if kind == "zip" else self._tar
        try:
            yield from walk(f, ref, outer, depth, seen)
        except _ArchiveStop as e:
            yield refused(str(e))
        except Exception:  # hostile bytes break stdlib readers many ways: one row each
            # (a .tar.gz cut after 3 bytes: TypeError in gzip's header reader)
            log.debug("reading the %s archive %s failed", kind, ref, exc_info=True)
            check = "unzip -t" if kind == "zip" else "tar -tvf"
            yield refused(
                f"not a readable {kind} archive: truncated or corrupt, its reader stopped on"
                f" bytes it could not make sense of; the rest of it was not scanned; `{check}`"
                " on the file shows where it breaks"
            )

    def _zip(
        self, f: IO[bytes], ref: str, outer: str, depth: int, seen: dict[str, int]
    ) -> Iterator[Item]:
        lim = self.limits
        listed = _zip_directory_headers(f, lim.max_entries)
        if listed > lim.max_entries:
            raise _ArchiveStop(
                f"its central directory lists more than {lim.max_entries:,} entries, the"
                " limit here: not scanned (a zip's directory is read whole when it is"
                " opened, about 750 bytes of memory an entry)"
            )
        try:
            zf = zipfile.ZipFile(f)
        except UnicodeDecodeError as e:  # zipfile decodes a flagged name strictly
            raise _ArchiveStop(_not_utf8_name(e)) from e
        except _ZIP_ERRORS as e:
            raise _ArchiveStop(f"not a readable zip archive: {e}") from e
        total = 0
        infos = zf.infolist()
        size = _stream_size(f)
        meter = _Meter(lim, lambda: size)
        overlaps = _zip_overlaps(infos, getattr(zf, "start_dir", size))
        with zf:
            for n, info in enumerate(infos):
                if n >= lim.max_entries:
                    raise _ArchiveStop(_too_many(lim.max_entries))
                # the name as the zip holds it: zipfile's ``filename`` is cut at a NUL byte
                # ("d/\0x.jpg" would be the folder "d/"), said in the row instead
                name = zip_entry_name(info)
                if name.endswith("/"):  # a folder
                    continue
                eref = _entry_ref(ref, name, seen)
                total += info.file_size
                if total > lim.max_total_bytes:
                    raise _ArchiveStop(_declared_too_much(lim.max_total_bytes))
                problem = _zip_entry_problem(info, name, lim) or overlaps.get(n)
                if problem is not None:
                    yield RefusedItem(eref, problem, info.file_size, outer)
                    continue
                try:
                    with _open_zip_entry(zf, info) as member:
                        yield from self._entry(
                            _Metered(member, meter), eref, outer, depth, info.file_size, _no_check
                        )
                except UnicodeDecodeError as e:  # its local header's name, decoded so
                    why = _not_utf8_name(e, "cannot read the entry")
                    yield RefusedItem(eref, why, info.file_size, outer)
                except _ZIP_ERRORS as e:
                    yield RefusedItem(eref, f"cannot read the entry: {e}", info.file_size, outer)

    def _tar(
        self, f: IO[bytes], ref: str, outer: str, depth: int, seen: dict[str, int]
    ) -> Iterator[Item]:
        lim = self.limits
        raw = _CountingReader(f)
        stream = _decompressed(f, raw)
        try:
            # a stream ("r|") only reads; typeshed asks every fileobj for write/seek/tell/close too
            tf = tarfile.open(fileobj=stream, mode="r|", tarinfo=_HeaderChecked)  # type: ignore[call-overload]  # see above
        except EOFError as e:  # a compressed stream cut short before the first member
            raise _ArchiveStop(
                "not a readable tar archive: truncated or corrupt, its compressed stream"
                f" ends early, after {raw.count:,} bytes; the rest of it was not scanned;"
                " `tar -tvf` on the file shows where it breaks"
            ) from e
        except _TAR_ERRORS as e:
            if str(e) == "empty file" and raw.count:  # tarfile's words for no tar data
                raise _ArchiveStop(
                    f"not a readable tar archive: truncated, its {raw.count:,} bytes hold no"
                    " tar data (a compressed stream cut short, or of nothing at all)"
                ) from e
            raise _ArchiveStop(f"not a readable tar archive: {e}") from e

        count = _TarCount(lim.tar_header_allowance, lim.tar_header_ratio)

        def check_ratio() -> None:
            _check_ratio(lim, count.counted(tf.fileobj.tell(), raw.count), raw.count)

        def next_member() -> tarfile.TarInfo | None:
            # the data tarfile would seek past unread (a member of an unknown type, which
            # it reads as a file's data, a refused sparse member's, a member's padding)
            # is read here, the ratio checked as it goes: tarfile's seek decompressed a
            # 6 KB .tar.bz2's unknown member of 8 GiB whole, unchecked (103 s). The first
            # member was read by tarfile.open, which keeps it for its first next().
            while n and (left := tf.offset - tf.fileobj.tell()) > 0:
                if not tf.fileobj.read(min(left, _READ_BYTES)):
                    break  # cut short: tarfile's next() says so
                check_ratio()
            found: tarfile.TarInfo | None = tf.next()
            return found

        total = 0
        n = 0
        meter = _Meter(lim, lambda: raw.count)
        reading: tuple[str, int, int] | None = None  # (ref, size, data start): no row yet
        with tf:
            try:
                while (info := next_member()) is not None:
                    # each header read is forgotten once handled: tarfile keeps them all
                    # (TarFile.members), up to max_entries (a million: maxrss 662 MiB, now 162)
                    tf.members.clear()
                    n += 1
                    count.member(info, tf.offset)
                    if n > lim.max_entries:
                        raise _ArchiveStop(_too_many(lim.max_entries))
                    check_ratio()
                    if info.isdir():
                        continue
                    eref = _entry_ref(ref, info.name, seen)
                    pax_size = info.pax_headers.get("size")
                    if pax_size is not None and not (pax_size.isascii() and pax_size.isdigit()):
                        # tarfile reads it as 0: the member's data is then read as headers
                        shown = pax_size if len(pax_size) <= 40 else pax_size[:40] + "..."
                        yield RefusedItem(
                            eref, f"its pax header declares its size as {shown!r}", None, outer
                        )
                        raise _ArchiveStop(
                            "a member's pax header declares a size that is not a whole number"
                            " of bytes: the archive is corrupt or hostile; the rest of it was"
                            " not scanned"
                        )
                    if info.size < 0:  # GNU base-256: the next header is then read in its data
                        yield RefusedItem(
                            eref,
                            f"its header declares a negative size ({info.size} bytes)",
                            None,
                            outer,
                        )
                        raise _ArchiveStop(
                            "a member declares a negative size: the archive is corrupt or"
                            " hostile; the rest of it was not scanned"
                        )
                    size = info.size if info.isreg() else None
                    total += size or 0
                    if total > lim.max_total_bytes:
                        raise _ArchiveStop(_declared_too_much(lim.max_total_bytes))
                    problem = _tar_member_problem(info, lim)
                    extracted = tf.extractfile(info) if info.isreg() else None
                    member = _Metered(extracted, meter) if extracted is not None else None
                    if problem is not None or member is None:
                        yield RefusedItem(eref, problem or "not a regular file", size, outer)
                        if member is not None and info.sparse is None:
                            _drain(member, check_ratio)  # holes are never expanded
                        continue
                    reading = (eref, info.size, info.offset_data)
                    yield from self._entry(member, eref, outer, depth, info.size, check_ratio)
                    reading = None  # its row is given (or it was skipped)
                    _drain(member, check_ratio)  # a skipped entry is read through, checked
                if stream is not raw:
                    self._stream_end(tf, count, check_ratio, _tester(stream), n)
            except _TAR_ERRORS as e:
                if reading is not None:  # the member whose data the stream broke in
                    eref, size, start = reading
                    yield RefusedItem(
                        eref, _cut_member(e, tf.fileobj.tell() - start, size), size, outer
                    )
                raise _ArchiveStop(
                    f"truncated or corrupt tar archive after {n} member{'' if n == 1 else 's'}: {e}"
                ) from e

    @staticmethod
    def _stream_end(
        tf: tarfile.TarFile, count: _TarCount, check: Callable[[], None], tester: str, n: int
    ) -> None:
        """Reads the compressed stream of the tar ``tf`` on from the tar's end-of-archive
        blocks to its own end, where its checksum is (gzip's CRC-32; bzip2's and xz's are
        checked as they go too): a stream that fails it, is corrupt or ends early stops the
        archive (_ArchiveStop), saying its ``n`` members' rows may be of damaged bytes.
        The bytes read count as headers toward the ratio limit (``count``, ``check``);
        ``tester``: the command that tests such a file."""
        members = f"{n:,} member{'' if n == 1 else 's'}"
        try:
            while tf.fileobj.read(_READ_BYTES):
                count.ended(tf.fileobj.tell())
                check()
        except _ArchiveStop as e:
            raise _ArchiveStop(f"past the tar's end, {e}; its checksum was not checked") from e
        except EOFError as e:
            raise _ArchiveStop(
                f"its compressed stream ends early, after the tar's end ({e}): its checksum"
                f" could not be checked, so the rows of its {members} may be of damaged"
                f" bytes; `{tester}` on the file says more"
            ) from e
        except _TAR_ERRORS as e:
            raise _ArchiveStop(
                f"its compressed stream fails its checksum or is corrupt ({e}): the rows of"
                f" its {members} may be of damaged bytes; `{tester}` on the file says more"
            ) from e

    def _entry(
        self,
        member: _Readable,
        ref: str,
        outer: str,
        depth: int,
        size: int,
        check: Callable[[], None],
    ) -> Iterator[Item]:
        """One regular archive member: a nested archive, bytes in memory, or a streamed hash."""
        lim = self.limits
        head = member.read(_HEAD_BYTES)
        check()
        kind = archive_kind(head) if _has_archive_suffix(ref) else None
        data: bytes | None = None  # the whole member, when read to tell an empty tar
        if kind is None and _zero_tar_head(head, ref) and size <= SMALL_ENTRY_BYTES:
            data = _read_all(member, max(size - len(head), 0), check, head)
            kind = "tar" if data.count(0) == len(data) else None
        if kind is not None:
            if depth + 1 > lim.max_depth:
                yield RefusedItem(
                    ref,
                    f"archive nested more than {lim.max_depth} levels deep: not opened",
                    size,
                    outer,
                )
            elif size > lim.max_nested_bytes:
                yield RefusedItem(
                    ref,
                    f"nested archive of {size} bytes is over the {lim.max_nested_bytes}-byte limit",
                    size,
                    outer,
                )
            else:
                if data is None:
                    data = _read_all(member, lim.max_nested_bytes, check, head)
                yield from self._archive(kind, io.BytesIO(data), ref, outer, depth + 1)
            return
        if self.skip(ref):
            return
        if data is not None:  # read whole already: at most SMALL_ENTRY_BYTES, so in memory
            yield EntryItem(ref, data, outer)
            return
        media_type = sniff_media_type(head[:SNIFF_BYTES])
        in_memory = (
            size <= SMALL_ENTRY_BYTES
            or (
                media_type is not None
                and media_type.startswith("image/")
                and size <= lim.assets.max_image_bytes
            )
            or (ref.endswith(SIDECAR_SUFFIX) and size <= MAX_SIDECAR_BYTES)
        )
        if in_memory:
            yield EntryItem(ref, _read_all(member, max(size - len(head), 0), check, head), outer)
            return
        sha = Sha256Stream()
        sha.update(head)
        while block := member.read(_READ_BYTES):
            sha.update(block)
            check()
        yield HashedItem(ref, sha.size, sha.digest(), media_type, outer)


def _cut_member(e: Exception, got: int, size: int) -> str:
    """Why a tar member whose data the archive ends (``e``: EOFError, or tarfile's
    "unexpected end of data") or breaks in, after ``got`` of its ``size`` bytes, was not
    scanned."""
    cut = isinstance(e, EOFError) or str(e) == "unexpected end of data"
    how = "ends" if cut else "is corrupt"
    return (
        f"{'truncated' if cut else 'corrupt'}: the archive {how} {got:,} bytes into this"
        f" member's {size:,} bytes; not scanned"
    )


def _too_many(n: int) -> str:
    return f"more than {n} entries: the rest of the archive was not scanned"


#: What `escape_name` writes for a backslash, a ``!`` and each byte that is not UTF-8
#: (the operating system, `tarfile` and list files hand such a byte over as the surrogate
#: U+DC80-U+DCFF).
_ESCAPES: dict[int, str] = {ord("\\"): "\\\\", ord("!"): "\\!"} | {
    0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)
}
_UNESCAPE = re.compile(r"\\(\\|!|x[89a-f][0-9a-f])")


def escape_name(name: str) -> str:
    """A name as written in a ref: a backslash as ``\\\\``, a ``!`` as ``\\!`` and each
    byte that is not valid UTF-8 as ``\\xNN`` (two lowercase hex digits, 80-ff); any
    other character as it is. Injective, so two files never share a ref, and the ``!``
    that joins an archive and its entry is never part of a name; `unescape_name` is its
    inverse."""
    if "\\" not in name and "!" not in name:
        if name.isascii():
            return name
        try:
            name.encode("utf-8")  # fails on a surrogate: an undecodable byte
            return name
        except UnicodeEncodeError:
            pass
    return name.translate(_ESCAPES)  # 2 us for a 40-character name; the rest, 0.05-0.15


def unescape_name(ref: str) -> str:
    """The name `escape_name` wrote as ``ref`` (undecodable bytes as surrogates again,
    ready for `open`)."""
    if "\\" not in ref:
        return ref
    return _UNESCAPE.sub(lambda m: _UNESCAPED[m[1]], ref)


def _unescaped(code: str) -> str:
    return code if code in ("\\", "!") else chr(0xDC00 + int(code[1:], 16))


_UNESCAPED = {c: _unescaped(c) for c in ("\\", "!", *(f"x{b:02x}" for b in range(0x80, 0x100)))}


def _entry_ref(archive_ref: str, name: str, seen: dict[str, int]) -> str:
    """The ref of an archive entry, unique within its archive: ``ARCHIVE!NAME``, and for
    the k-th entry of a name ``ARCHIVE!NAME #k`` (also past an entry literally named
    ``NAME #k``: each file keeps its own row). ``seen`` maps each name given out (a ref
    less its ``ARCHIVE!``, the same for every entry of one archive: a million entries
    of an archive in a deep folder do not keep its path a million times) to the next k
    to try for it as a base (amortised O(1) per entry)."""
    base = escape_name(name)
    k = seen.get(base, 1)
    named = base if k == 1 else f"{base} #{k}"
    while named in seen:  # taken by an entry literally so named
        k += 1
        named = f"{base} #{k}"
    seen[base] = k + 1
    seen.setdefault(named, 2)
    return f"{archive_ref}!{named}"


def zip_entry_name(info: zipfile.ZipInfo) -> str:
    """The name of a zip entry as its writer meant it, NUL bytes kept.

    Python's `zipfile` reads a name without the UTF-8 flag (bit 11) as cp437, the zip
    format's default; Info-ZIP's `zip` on Linux and other tools store UTF-8 names without
    that flag, which cp437 turns into mojibake (``é`` as ``├⌐``). Such a name whose bytes
    are valid UTF-8 is read as UTF-8 (as Info-ZIP's `unzip` and libarchive do); one that
    is not (a DOS or Windows zip's cp437 name) keeps the cp437 reading.
    """
    name = info.orig_filename
    if info.flag_bits & 0x800 or name.isascii():
        return name
    try:
        return name.encode("cp437").decode("utf-8")
    except UnicodeError:
        return name


def _zip_entry_problem(info: zipfile.ZipInfo, name: str, lim: ScanLimits) -> str | None:
    problem = entry_name_problem(name)
    if problem is not None:
        return problem
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link: not followed"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return "not a regular file (device, socket or FIFO)"
    if info.flag_bits & 0x1:
        return "encrypted entry: cannot be scanned"
    if info.file_size > lim.ratio_min_bytes and info.file_size > lim.max_ratio * max(
        info.compress_size, 1
    ):
        ratio = info.file_size / max(info.compress_size, 1)
        return (
            f"compression ratio {ratio:.0f}:1 is over the {lim.max_ratio:g}:1 limit"
            f" ({info.file_size:,} bytes out of {info.compress_size:,} compressed): a"
            " compression bomb?"
        )
    return None


def _tar_member_problem(info: tarfile.TarInfo, lim: ScanLimits) -> str | None:
    if info.issym():
        return f"symbolic link to {info.linkname!r}: not followed"
    if info.islnk():
        return f"hard link to {info.linkname!r}: not followed"
    if info.type not in tarfile.SUPPORTED_TYPES:  # tarfile reads its data as a file's
        return f"a member of an unknown type ({info.type.decode('latin-1')!r}): not scanned"
    if not info.isreg():
        return "not a regular file (device, socket or FIFO)"
    if info.sparse is not None:
        stored = sum(n for _, n in cast("list[tuple[int, int]]", info.sparse))
        if info.size > lim.ratio_min_bytes and info.size > lim.max_ratio * max(stored, 1):
            return (
                f"sparse member of {info.size:,} bytes holding {stored:,} bytes of data: over the"
                f" {lim.max_ratio:g}:1 limit (a sparse-file bomb?)"
            )
    return entry_name_problem(info.name)


def _read_all(member: _Readable, limit: int, check: Callable[[], None], head: bytes = b"") -> bytes:
    """``head`` and the rest of a member after it, at most ``limit`` bytes more, checking
    limits as it goes. The bytes are written into one `io.BytesIO`, whose buffer
    ``getvalue`` hands over without a copy, so an entry is held once (and one read block)
    while it is read: before, a bytearray, its copy as bytes and ``head +`` those bytes held
    it up to three times (a 200 MiB image in a zip or tar: peak RSS +402 MiB, now +201)."""
    out = io.BytesIO()
    out.write(head)
    got = 0
    while got < limit and (block := member.read(min(_READ_BYTES, limit - got))):
        got += out.write(block)
        del block
        check()
    return out.getvalue()


def _drain(member: _Readable, check: Callable[[], None]) -> None:
    while member.read(_READ_BYTES):
        check()


#: Byte order marks a list file may start with (Windows tools write them: Notepad's
#: "UTF-8 with BOM", PowerShell 5's ``>``, UTF-16 LE), and the codec that reads past it.
LIST_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def open_list(path: str) -> IO[str]:
    """The list file ``path`` opened as text: decoded by its byte order mark (`LIST_BOMS`;
    the mark is not part of its first name), else UTF-8, undecodable bytes kept as
    surrogate escapes. Raises OSError."""
    raw = open(path, "rb")  # noqa: SIM115 -- handed to the wrapper, closed with it
    try:
        head = raw.peek(3)[:3]
    except OSError:
        raw.close()
        raise
    codec = next((c for bom, c in LIST_BOMS if head.startswith(bom)), "utf-8")
    return io.TextIOWrapper(raw, encoding=codec, errors="surrogateescape")


def list_lines(f: IO[str]) -> Iterator[tuple[int, str, str | None]]:
    """The lines of a list file as they are read: (line number, the line without its
    surrounding blanks, None), or (line number, "", why it names no file): longer than
    MAX_LIST_LINE characters (read on to its end a block at a time, never held whole)
    or holding a NUL byte. Raises OSError if reading fails."""
    n = 0
    while True:
        line = f.readline(MAX_LIST_LINE + 1)
        if not line:
            return
        n += 1
        if len(line) > MAX_LIST_LINE and not line.endswith("\n"):
            while (rest := f.readline(MAX_LIST_LINE)) and not rest.endswith("\n"):
                pass
            yield n, "", f"longer than {MAX_LIST_LINE:,} characters"
        elif "\0" in line:
            yield n, "", "holds a NUL byte"
        else:
            yield n, line.strip(), None


def _list_problems(count: int, skipped: list[str], stopped: str) -> str:
    """The error of a list file's row: ``count`` lines skipped (the first of them
    described in ``skipped``), then why reading stopped early (``stopped``, or "")."""
    if not count:
        return stopped
    more = f" and {count - len(skipped):,} more" if count > len(skipped) else ""
    said = (
        "1 line of the list file names no file and was"
        if count == 1
        else (f"{count:,} lines of the list file name no file and were")
    )
    return f"{said} skipped: {', '.join(skipped)}{more}" + (f"; {stopped}" if stopped else "")


def iter_items(
    paths: list[str],
    limits: ScanLimits,
    skip: Callable[[str], bool] = lambda _: False,
    leave_out: frozenset[FileId] = frozenset(),
) -> Iterator[Item]:
    """Items of the PATH arguments in a stable order (see `Walker`)."""
    return Walker(limits, skip, leave_out).paths(paths)


def file_ids(paths: Iterable[Path]) -> frozenset[FileId]:
    """The `FileId` of each of ``paths`` that exists (followed if a link)."""
    ids = set()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        ids.add((st.st_dev, st.st_ino))
    return frozenset(ids)


def _no_check() -> None:
    """The per-block check of a zip member: its limits are in `_Meter`."""


def _is_regular(path: str) -> bool:
    """True for a regular file that is not a symbolic link (never opens it)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _shown_name(name: str) -> str:
    """The first 200 characters of an entry name for a message: each byte that is not
    UTF-8 (a surrogate escape) as ``\\xff``, a control or format character as its escape
    (NUL as ``\\x00``), the rest as it is."""
    return "".join(
        f"\\x{ord(c) - 0xDC00:02x}"
        if 0xDC80 <= ord(c) <= 0xDCFF  # a byte that is not UTF-8
        else c
        if c.isprintable()
        else ascii(c)[1:-1]  # a control or format character, as its escape
        for c in name[:200]
    )


def _nul_in_name(name: str) -> str:
    """Why an entry whose name holds a NUL byte is refused: a zip entry's name, or a pax
    ``path`` record, is given with its length, so the NUL is part of it, but Python's
    zipfile (and tools written in C) read names up to the first NUL, where
    "evil.jpg\\0.exe" reads "evil.jpg"."""
    cut = name[: name.index("\0")]
    return (
        f'a NUL byte in the entry name "{_shown_name(name)}": not scanned; tools that read a'
        f' name up to its first NUL show this entry as "{_shown_name(cut)}", another name'
        " than the archive gives it"
    )


def _not_utf8_name(e: UnicodeDecodeError, what: str = "not a readable zip archive") -> str:
    """What a zip whose UTF-8 flag is set over an entry name that is not UTF-8 says to a
    person, after ``what`` (zipfile's own words were the codec's: "'utf-8' codec can't
    decode ..."). The name is shown in ASCII, each byte that is not UTF-8 as ``\\xff``."""
    raw = e.object if isinstance(e.object, bytes) else b""
    name = _shown_name(raw[:200].decode("utf-8", "surrogateescape"))
    return (
        f'{what}: the entry name "{name}" is not UTF-8, though the zip says (its UTF-8 flag)'
        " that its names are; the tool that made the zip wrote its names wrongly"
    )


#: zipfile's reader of a zip's end record (not in its stubs): the record's fields as a list,
#: or None when there is none; `zipfile.ZipFile` finds its central directory with it.
_zip_end_record = cast(
    "Callable[[IO[bytes]], list[Any] | None] | None", getattr(zipfile, "_EndRecData", None)
)
_ZIP_DIRECTORY_HEADER = b"PK\x01\x02"


def _zip_directory_headers(f: IO[bytes], limit: int) -> int:
    """The central directory headers of a zip (``f``, seekable; its position is kept), as
    `zipfile.ZipFile` finds the directory, counted until more than ``limit``: an upper
    bound on the entries zipfile builds a ZipInfo for when it opens the archive (each
    starts with this signature), read in 1 MiB blocks; when that is over ``limit``, the
    headers are walked by their lengths for the exact count (the signature's bytes may
    stand in a name, extra field or comment too). 0 when there is no end record
    (zipfile then refuses the file itself) or zipfile has no such reader."""
    here = f.tell()
    try:
        end = _zip_end_record(f) if _zip_end_record is not None else None
        if not end:
            return 0
        size, offset, location = end[5], end[6], end[9]  # zipfile's _ECD_SIZE, ...
        start = location - size  # where zipfile reads it ("concat" offsets included)
        if end[0] == b"PK\x06\x06":  # a zip64 end record and its locator stand between
            start -= 56 + 20
        if start < 0 or offset < 0:
            return 0
        f.seek(start)
        count = 0
        carry = b""
        left = size
        while left > 0 and count <= limit:
            block = f.read(min(_READ_BYTES, left))
            if not block:
                break
            left -= len(block)
            data = carry + block
            count += data.count(_ZIP_DIRECTORY_HEADER)
            carry = data[-3:] if not data.endswith(_ZIP_DIRECTORY_HEADER) else b""
        if count <= limit:
            return count
        # the signature's bytes may stand in names, extra fields and comments too: walk
        # the headers by their lengths, as zipfile does, for the exact count
        return _zip_directory_walk(f, start, size, limit)
    except (OSError, ValueError, zipfile.BadZipFile):  # ZipFile(f) then says what is wrong
        return 0
    finally:
        f.seek(here)


_ZIP_HEADER_BYTES = 46  # a central directory header without its name, extra and comment


def _zip_directory_walk(f: IO[bytes], start: int, size: int, limit: int) -> int:
    """The central directory headers of ``size`` bytes at ``start`` in ``f``, walked by
    their name, extra and comment lengths as `zipfile.ZipFile` walks them, counted until
    more than ``limit`` or the first that is not a header (zipfile then refuses the file);
    read in 1 MiB blocks. Moves ``f``'s position."""
    count = 0
    pos = 0  # in the directory
    buf = b""
    buf_at = 0  # where buf starts in the directory
    while pos < size and count <= limit:
        if pos + _ZIP_HEADER_BYTES > buf_at + len(buf):
            f.seek(start + pos)
            buf = f.read(min(max(_READ_BYTES, _ZIP_HEADER_BYTES), size - pos))
            buf_at = pos
            if len(buf) < _ZIP_HEADER_BYTES:
                break
        at = pos - buf_at
        if buf[at : at + 4] != _ZIP_DIRECTORY_HEADER:
            break
        name, extra, comment = struct.unpack_from("<3H", buf, at + 28)
        count += 1
        pos += _ZIP_HEADER_BYTES + name + extra + comment
    return count


def _stream_size(f: IO[bytes]) -> int:
    """Size in bytes of a seekable stream (the position is kept)."""
    here = f.tell()
    try:
        return f.seek(0, os.SEEK_END)
    finally:
        f.seek(here)


class _Meter:
    """The bytes one archive's members actually produced, bounded: at most
    ``max_total_bytes``, and at most ``max_ratio`` times the archive's compressed bytes
    (``compressed()``: the file size of a zip, the bytes read so far of a tar) once past
    ``ratio_min_bytes``. Declared sizes play no part, so overlapping zip entries and
    sparse tar members are counted by what they really yield. Raises _ArchiveStop."""

    def __init__(self, lim: ScanLimits, compressed: Callable[[], int]) -> None:
        self.lim = lim
        self.compressed = compressed
        self.produced = 0

    def add(self, n: int) -> None:
        self.produced += n
        lim = self.lim
        if self.produced > lim.max_total_bytes:
            raise _ArchiveStop(
                f"more than {lim.max_total_bytes:,} bytes came out of decompressing it: the"
                " rest of the archive was not scanned (a compression bomb?)"
            )
        _check_ratio(lim, self.produced, self.compressed())


def _check_ratio(lim: ScanLimits, produced: int, compressed: int) -> None:
    """Stops an archive (_ArchiveStop) once the bytes counted out of it (``produced``)
    pass ``ratio_min_bytes`` and ``max_ratio`` times its ``compressed`` bytes; the one
    wording of a decompression ratio over the limit, numbers with thousands separators."""
    packed = max(compressed, 1)
    if produced > lim.ratio_min_bytes and produced > lim.max_ratio * packed:
        raise _ArchiveStop(
            f"decompression ratio over {lim.max_ratio:g}:1 ({produced:,} bytes out of"
            f" {packed:,} compressed): a compression bomb? the rest of the archive was not"
            " scanned"
        )


class _TarCount:
    """The bytes of a tar stream its ratio limit counts: members' data (read, skipped or
    refused alike), and the stream's other bytes (each member's 512-byte header, the pax
    and GNU extension headers and sparse maps before its data, the zeros padding its data
    to 512 bytes) past ``allowance`` bytes a member, pooled over the members read so far.

    A tar's headers are mostly zeros and compress well: 10^5 members of a few bytes each,
    written by `tarfile` (1,017 bytes of header and padding a member), make a 0.9 MB
    .tar.gz that decompresses to 144 times its size, a .tar.bz2 or .tar.xz to 400-500
    times, nearly all of it headers and padding. Counted as data, they would stop such an
    honest archive of small files as a bomb (after 16,384 members); counted apart, with
    an allowance of 4 KiB a member (`ScanLimits.tar_header_allowance`), they do not,
    while headers past that (a member whose pax headers run to 1 MiB,
    `MAX_TAR_HEADER_BYTES`) count as data. Headers left uncounted are at most the
    allowance times ``max_entries`` members (4 GiB), and at most ``ratio``
    (`ScanLimits.tar_header_ratio`, 2,000) times the compressed bytes read: 10^6 members
    of 4 KiB of identical pax headers make a 41 KB .tar.bz2 (a 480 KB .tar.xz), whose
    4 GiB took 5 minutes to walk, stopped now after 80 MB (a .tar.gz can do no better
    than about 1,000:1; the headers of honest tars of 20,000 small files compress 73-362
    to one)."""

    def __init__(self, allowance: int, ratio: float) -> None:
        self.allowance = allowance
        self.ratio = ratio
        self.members = 0
        self.overhead = 0  # bytes of headers and padding so far
        self._end = 0  # where the last member's data blocks end in the stream

    def member(self, info: tarfile.TarInfo, next_header: int) -> None:
        """Counts a member just read: ``info`` as `tarfile` gave it, ``next_header`` the
        stream position of the header after it (``TarFile.offset``)."""
        blocks = max(next_header - info.offset_data, 0)  # its data and padding
        data = min(max(info.size, 0), blocks)
        self.overhead += max(info.offset_data - self._end, 0) + blocks - data
        self._end = next_header
        self.members += 1

    def ended(self, position: int) -> None:
        """Counts the stream's bytes after its last member, up to ``position``, as headers
        (the end-of-archive blocks, and what follows them in a compressed stream)."""
        self.overhead += max(position - self._end, 0)
        self._end = max(position, self._end)

    def counted(self, position: int, compressed: int) -> int:
        """Bytes counted of the first ``position`` bytes of the stream, ``compressed``
        bytes of the file read for them: headers past ``ratio`` times those count too."""
        free = min(self.overhead, self.allowance * self.members, int(self.ratio * compressed))
        return position - free


class _Metered:
    """A member's reader that reports every byte it yields to a `_Meter`."""

    def __init__(self, raw: _Readable, meter: _Meter) -> None:
        self._raw = raw
        self._meter = meter

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._meter.add(len(data))
        return data


class _ZipEntryReader:
    """A bzip2 or LZMA zip entry's bytes, decompressed at most as far as each read asks
    (`bz2.BZ2File`, `lzma.LZMAFile`) from its compressed bytes (``raw``), up to the
    size its directory record declares; once that is read, or where the data ends first, its
    CRC-32 is checked as `zipfile` checks it (`zipfile.BadZipFile` if it differs)."""

    def __init__(self, dec: IO[bytes], raw: IO[bytes], info: zipfile.ZipInfo) -> None:
        self._dec = dec
        self._raw = raw
        self._info = info
        self._left = info.file_size
        self._crc = 0
        self._checked = False

    def read(self, size: int = -1) -> bytes:
        want = self._left if size < 0 else min(size, self._left)
        data = self._dec.read(want) if want > 0 else b""
        self._left -= len(data)
        self._crc = zlib.crc32(data, self._crc)
        if (not data or not self._left) and not self._checked:
            self._checked = True
            if self._crc != self._info.CRC:
                raise zipfile.BadZipFile(f"Bad CRC-32 for file {self._info.filename!r}")
        return data

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()


def _open_zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> IO[bytes] | _ZipEntryReader:
    """A zip entry opened to read. `zipfile` itself hands each read's compressed bytes
    of a bzip2 (method 12) or LZMA (method 14) entry to a decompressor with no cap on
    what comes out (a 3 KB bzip2 entry of 4 GiB of zeros declaring 100 bytes: maxrss
    4.2 GiB), so such an entry's compressed bytes are read as stored and decompressed
    here as each read asks (`_ZipEntryReader`). Raises what `zipfile.ZipFile.open`
    raises."""
    if info.compress_type not in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        return zf.open(info)
    stored = copy.copy(info)
    stored.compress_type = zipfile.ZIP_STORED
    stored.file_size = info.compress_size
    stored.CRC = None  # type: ignore[assignment]  # zipfile then checks none: done here
    raw = zf.open(stored)
    try:
        dec: IO[bytes]
        if info.compress_type == zipfile.ZIP_BZIP2:
            dec = cast("IO[bytes]", bz2.BZ2File(raw))
        else:  # APPNOTE 5.8.8: version (2 bytes), properties size (2), properties
            head = raw.read(4)
            if not head:  # no compressed bytes: no bytes (its CRC-32 says if it is cut)
                return _ZipEntryReader(io.BytesIO(), raw, info)
            if len(head) < 4:
                raise EOFError("the LZMA entry ends in its header")
            props = raw.read(struct.unpack("<H", head[2:])[0])
            lzma1 = lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)  # type: ignore[attr-defined]  # zipfile reads it so
            dec = cast("IO[bytes]", lzma.LZMAFile(raw, format=lzma.FORMAT_RAW, filters=[lzma1]))
    except BaseException:
        raw.close()
        raise
    return _ZipEntryReader(dec, raw, info)


#: Bytes of a zip local file header before the name (APPNOTE.TXT 4.3.7).
_ZIP_LOCAL_HEADER = 30


def _zip_overlaps(infos: list[zipfile.ZipInfo], data_end: int) -> dict[int, str]:
    """Entries (by index) whose compressed data overlaps another entry's local header
    or the central directory, or whose local header lies before the archive's start
    (an end record that puts the central directory past the file's end: zipfile
    shifts every offset below 0, and reading them failed with "[Errno 22] Invalid
    argument"), with the reason.

    A well-formed zip stores each entry's header and data one after another; a
    directory whose entries point into each other's data (D. Fifield, "A better zip
    bomb", WOOT 2019) or at the same data makes a small file inflate many times over.
    The test uses a lower bound of each entry's extent (30 header bytes plus its
    compressed size), so it never flags a well-formed archive; of entries sharing one
    offset, the last is kept.
    """
    order = sorted(range(len(infos)), key=lambda i: (infos[i].header_offset, i))
    out: dict[int, str] = {}
    for pos, i in enumerate(order):
        info = infos[i]
        if info.header_offset < 0:
            out[i] = (
                "its local header lies before the start of the archive: the central"
                " directory's offsets are wrong (a truncated or corrupt zip); not scanned"
            )
            continue
        end = info.header_offset + _ZIP_LOCAL_HEADER + info.compress_size
        if pos + 1 < len(order):
            nxt = infos[order[pos + 1]]
            if end > nxt.header_offset:
                out[i] = (
                    f"its data overlaps entry {nxt.orig_filename!r}: an overlapping-entry zip"
                    " bomb? not scanned"
                )
        elif end > data_end:
            out[i] = "its data overlaps the zip's central directory: not scanned"
    return out
