"""The log as C2SP tlog-tiles (c2sp.org/tlog-tiles): pure layout, encoding and auditing.

A tiled log is a set of static files under one prefix (tlog-tiles "APIs"):

- ``checkpoint``: the signed checkpoint (tlog-tiles "Checkpoints");
- ``tile/<L>/<N>[.p/<W>]``: Merkle tree tiles (tlog-tiles "Merkle Tree"). The tile ``N`` at
  level ``L`` holds the hashes of the perfect subtrees at tree level ``8 * L`` with indexes
  ``N * 256 .. N * 256 + W - 1``, 32 bytes each, concatenated; a full tile has 256 (8,192
  bytes), a partial tile ``W`` in 1..255 (tlog-tiles "Partial Tiles"). ``<N>`` is written in
  zero-padded 3-digit path elements, all but the last prefixed with ``x``: 1234067 is
  ``x001/x234/067``;
- ``tile/entries/<N>[.p/<W>]``: entry bundles (tlog-tiles "Log entries"), the leaf data of
  the level-0 tile ``N``, each entry prefixed by its length as a big-endian uint16.

Our store keeps every perfect-subtree hash under the key ``(level, index)`` (see
`provenance.core.merkle`), so a tile is one batched node read (`tile_hashes`). Going the
other way, `TileNodes` is a `merkle.NodeReader` over fetched tiles: any root or proof of
the tree is computed from tiles alone with the same functions the log uses. `audit_tiles`
audits a log from its tiles (the signature, the tiles' hashes against each other, the root,
every entry against its leaf hash, consistency with a saved checkpoint).

Pure: reading and writing files or URLs is the caller's (see `provenance.log.tiledir`).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from provenance.core import merkle
from provenance.core.claims import MAX_LOG_ENTRY_BYTES
from provenance.core.errors import (
    LogError,
    LogIntegrityError,
    StaleCheckpointError,
    TileMissingError,
)
from provenance.log.audit import AuditState, audit_step, open_trusted
from provenance.log.checkpoint import MAX_NOTE_BYTES, Checkpoint, NoteVerifier

TILE_HEIGHT = 8
"""Tree levels one tile spans (tlog-tiles: fixed at 8)."""

TILE_WIDTH = 1 << TILE_HEIGHT
"""Hashes in a full tile, and entries in a full entry bundle (256)."""

MAX_ENTRY_SIZE = MAX_LOG_ENTRY_BYTES
"""Largest entry an entry bundle can hold: its length prefix is a big-endian uint16."""

MAX_LEVEL = 63
"""Highest tile level a path may name (tlog-tiles: 0 to 63)."""

CHECKPOINT_PATH = "checkpoint"
"""Path of the checkpoint under the prefix."""

Fetch = Callable[[str], bytes]
"""Reads one file of the tiled log by its path under the prefix (``tile/0/000``...).

Raises TileMissingError when the log does not serve a file, LogIntegrityError when the
file is too large, TransportError / ConfigError when it cannot be reached."""

MAX_INDEX_GROUPS = 7
"""Most 3-digit groups of a tile index: 7 hold any index below 10^21 (a uint64 is below
2^64, about 1.8 * 10^19). A longer path is refused before its digits are read as an int."""

# [0-9], not \d: a str pattern's \d also matches other scripts' digits ("١٢٣")
_INDEX_RE = re.compile(rf"(?:x[0-9]{{3}}/){{0,{MAX_INDEX_GROUPS - 1}}}[0-9]{{3}}")
_DECIMAL_RE = re.compile(r"0|[1-9][0-9]{0,2}")


def encode_index(index: int) -> str:
    """``index`` as tlog-tiles path elements: 3-digit groups, all but the last ``x``-prefixed.

    0 -> ``000``; 1234067 -> ``x001/x234/067``. Raises LogError for a negative index.
    """
    if index < 0:
        raise LogError(f"tile index {index} is negative")
    groups = []
    while True:
        groups.append(f"{index % 1000:03d}")
        index //= 1000
        if index == 0:
            break
    groups.reverse()
    return "/".join(["x" + g for g in groups[:-1]] + [groups[-1]])


def decode_index(text: str) -> int:
    """Inverse of `encode_index`; raises LogError unless ``text`` is in canonical form."""
    if not _INDEX_RE.fullmatch(text):
        raise LogError(
            f"{text[:100]!r} is not a tile index (at most {MAX_INDEX_GROUPS} 3-digit groups,"
            " all but the last x-prefixed)"
        )
    index = int(text.replace("x", "").replace("/", ""))
    if encode_index(index) != text:
        raise LogError(f"tile index {text!r} is not in canonical form (no leading x000 groups)")
    return index


@dataclass(frozen=True)
class Tile:
    """A tile coordinate: ``level`` 0..63, ``index`` >= 0, ``width`` 1..256 (256: full).

    Raises LogError on out-of-range fields.
    """

    level: int
    index: int
    width: int

    def __post_init__(self) -> None:
        if not 0 <= self.level <= MAX_LEVEL:
            raise LogError(f"tile level {self.level} is outside 0..{MAX_LEVEL}")
        if self.index < 0:
            raise LogError(f"tile index {self.index} is negative")
        if not 1 <= self.width <= TILE_WIDTH:
            raise LogError(f"tile width {self.width} is outside 1..{TILE_WIDTH}")

    @property
    def partial(self) -> bool:
        """Whether the tile has fewer than 256 hashes."""
        return self.width < TILE_WIDTH

    def _suffix(self) -> str:
        return f".p/{self.width}" if self.partial else ""

    @property
    def path(self) -> str:
        """``tile/<L>/<N>[.p/<W>]``."""
        return f"tile/{self.level}/{encode_index(self.index)}{self._suffix()}"

    @property
    def entries_path(self) -> str:
        """``tile/entries/<N>[.p/<W>]``, the entry bundle of a level-0 tile."""
        if self.level != 0:
            raise LogError(f"only level-0 tiles have entry bundles, not level {self.level}")
        return f"tile/entries/{encode_index(self.index)}{self._suffix()}"

    @property
    def node_keys(self) -> list[merkle.NodeKey]:
        """The ``(tree level, node index)`` of each hash in the tile, in order."""
        first = self.index * TILE_WIDTH
        return [(TILE_HEIGHT * self.level, first + i) for i in range(self.width)]


def parse_path(path: str) -> tuple[bool, Tile]:
    """Parse ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]``.

    Returns (is an entry bundle, tile; level 0 for bundles). Raises LogError for any
    other path, or one not in the canonical form tlog-tiles requires.
    """
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise LogError(f"{path[:100]!r} is not a tile path (tile/<L>/<N>[.p/<W>])")
    bundle = parts[1] == "entries"
    if not bundle and not _DECIMAL_RE.fullmatch(parts[1]):
        raise LogError(
            f"tile level {parts[1][:100]!r} is not a decimal in 0..{MAX_LEVEL} without"
            " leading zeros"
        )
    rest = parts[2:]
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        if not _DECIMAL_RE.fullmatch(rest[-1]) or not 1 <= int(rest[-1]) < TILE_WIDTH:
            raise LogError(f"partial tile width {rest[-1][:100]!r} is not a decimal in 1..255")
        width = int(rest[-1])
        rest = [*rest[:-2], rest[-2][:-2]]
    level = 0 if bundle else int(parts[1])
    return bundle, Tile(level, decode_index("/".join(rest)), width)


def level_tiles(size: int, level: int, first: int = 0) -> Iterator[Tile]:
    """The tiles of ``level`` of a tree of ``size`` leaves from tile index ``first`` on,
    made one at a time (a tree size is attacker-chosen up to 2^64 - 1; its tiles are never
    all listed): the full tiles, then the partial tile of width
    ``floor(size / 256**level) mod 256`` when not zero (tlog-tiles "Partial Tiles")."""
    hashes = size >> (TILE_HEIGHT * level)
    full = hashes // TILE_WIDTH
    for n in range(first, full):
        yield Tile(level, n, TILE_WIDTH)
    if hashes % TILE_WIDTH and first <= full:
        yield Tile(level, full, hashes % TILE_WIDTH)


def _levels(size: int) -> range:
    """The tile levels of a tree of ``size`` leaves (none for an empty tree)."""
    return range(min(MAX_LEVEL + 1, (size.bit_length() + TILE_HEIGHT - 1) // TILE_HEIGHT))


def tiles_for_size(size: int) -> list[Tile]:
    """Every tile a tree of ``size`` leaves has, level by level: its full tiles, then the
    partial tile of width ``floor(size / 256**L) mod 256`` when not zero (tlog-tiles
    "Partial Tiles"). A list of about size / 255 tiles: only for a size one trusts (a
    store's own); `level_tiles` walks them lazily. Raises LogError for a negative size.
    """
    if size < 0:
        raise LogError(f"tree size {size} is negative")
    return [tile for level in _levels(size) for tile in level_tiles(size, level)]


def tile_hashes(tile: Tile, get_nodes: merkle.NodeReader) -> bytes:
    """The tile's contents: its ``width`` 32-byte hashes concatenated, read in one batch.
    Raises LogIntegrityError when ``get_nodes`` gives another number of hashes, or one
    not of 32 bytes (a damaged node row: before, "the node reader answered wrongly",
    exit 1), or raises it for a node it cannot read, naming the tile."""
    try:
        hashes = get_nodes(tile.node_keys)
    except LogIntegrityError as e:
        raise LogIntegrityError(f"cannot read the log's Merkle nodes for {tile.path}: {e}") from e
    wrong = [len(h) for h in hashes if len(h) != merkle.HASH_SIZE]
    if len(hashes) != tile.width or wrong:
        got = _hashes(len(hashes)) if len(hashes) != tile.width else f"a hash of {wrong[0]} B"
        raise LogIntegrityError(
            f"the log's Merkle nodes for {tile.path} are damaged: {got} where"
            f" {_hashes(tile.width)} of 32 bytes belong (a node row was edited)"
        )
    return b"".join(hashes)


def split_hashes(data: bytes, tile: Tile) -> list[bytes]:
    """The hashes of a fetched tile; LogIntegrityError unless it is ``width * 32`` bytes."""
    if len(data) != tile.width * merkle.HASH_SIZE:
        raise LogIntegrityError(
            f"{tile.path} is {len(data)} bytes, not {_hashes(tile.width)} of"
            f" {merkle.HASH_SIZE} bytes: the tile was edited or truncated"
        )
    return [data[i : i + merkle.HASH_SIZE] for i in range(0, len(data), merkle.HASH_SIZE)]


def file_bounds(tile: Tile, bundle: bool) -> tuple[int, int]:
    """The fewest and most bytes the file of ``tile`` (its entry bundle when ``bundle``)
    can hold: a hash tile exactly ``width`` hashes of 32 bytes (8,192 for a full tile), an
    entry bundle from ``2 * width`` (empty entries) to ``width * (2 + MAX_ENTRY_SIZE)``
    (each entry a big-endian uint16 length and its bytes: 16,777,472 for a full one).
    A file outside them is no such tile (tlog-tiles "Merkle Tree", "Log entries")."""
    if bundle:
        return 2 * tile.width, tile.width * (2 + MAX_ENTRY_SIZE)
    return tile.width * merkle.HASH_SIZE, tile.width * merkle.HASH_SIZE


def _hashes(n: int) -> str:
    """``n`` hashes in words: "1 hash", "5 hashes"."""
    return f"{n} hash" if n == 1 else f"{n} hashes"


def entries_said(n: int, kind: str = "") -> str:
    """``n`` entries (each of ``kind``, words ending in a space) in words: "1 entry",
    "5 length-prefixed entries"."""
    return f"{n} {kind}entry" if n == 1 else f"{n} {kind}entries"


def tile_said(tile: Tile, bundle: bool) -> str:
    """The file of ``tile`` (its entry bundle when ``bundle``) in words: "a tile of 256
    hashes", "an entry bundle of 1 entry" (not "a tile of 1 hashes")."""
    if bundle:
        return f"an entry bundle of {entries_said(tile.width)}"
    return f"a tile of {_hashes(tile.width)}"


def file_bounds_said(tile: Tile, bundle: bool) -> str:
    """`file_bounds` of ``tile`` (its entry bundle when ``bundle``) in words, for an error
    about a file outside them: "a tile of 256 hashes is 8,192 bytes", "an entry bundle of
    2 entries is 4 to 131,074 bytes", "a tile of 1 hash is 32 bytes"."""
    fewest, most = file_bounds(tile, bundle)
    if bundle:
        return f"{tile_said(tile, bundle)} is {fewest:,} to {most:,} bytes"
    return f"{tile_said(tile, bundle)} is {most:,} bytes"


def _perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Merkle root of a power-of-two count of node hashes (RFC 9162 2.1.1)."""
    level = list(hashes)
    while len(level) > 1:
        level = [merkle.node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def encode_bundle(entries: Sequence[bytes], first: int = 0) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length then its bytes.
    ``first``: the log index of ``entries[0]``, named in the error.

    Raises LogError for more than 256 entries or an entry over 65,535 bytes (naming its
    index: a log written before the server refused such entries may hold one, and it
    can never be exported as tiles, as the length prefix cannot say its size).
    """
    if len(entries) > TILE_WIDTH:
        raise LogError(f"an entry bundle holds at most {TILE_WIDTH} entries, not {len(entries)}")
    out = bytearray()
    for index, entry in enumerate(entries, first):
        if len(entry) > MAX_ENTRY_SIZE:
            raise LogError(
                f"entry {index} of the log is {len(entry):,} bytes, over the"
                f" {MAX_ENTRY_SIZE:,} a C2SP tlog-tiles entry bundle can hold (a 16-bit"
                " length): this log cannot be exported as tiles up to or past it, and"
                " nothing holding it was written (it was logged before the server refused"
                " entries this large)"
            )
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def decode_bundle(data: bytes, tile: Tile) -> list[bytes]:
    """The ``tile.width`` entries of an entry bundle; LogIntegrityError if malformed."""
    entries, pos = [], 0
    while pos < len(data):
        if pos + 2 > len(data):
            break
        length = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + length > len(data):
            break
        entries.append(data[pos + 2 : pos + 2 + length])
        pos += 2 + length
    if pos != len(data) or len(entries) != tile.width:
        raise LogIntegrityError(
            f"{tile.entries_path} is not {entries_said(tile.width, 'length-prefixed ')}:"
            " the bundle was edited or truncated"
        )
    return entries


LEVEL0_KEPT = 4
"""Full level-0 tiles `TileNodes` keeps besides the ones it always keeps: the audit
reads them in order, each once (`_checked_entries`)."""


class TileNodes:
    """A `merkle.NodeReader` over the tiles of a tree of ``size`` leaves, fetched on demand.

    Node ``(level, index)`` is hashed from ``2**(level % 8)`` consecutive hashes of one
    tile at level ``level // 8`` (tlog-tiles: "the Merkle Tree levels between those
    expressed by the tile hashes are reconstructed by hashing"). The tiles above level 0
    and the partial tiles of the tree's right edge are kept once fetched, about 73 bytes
    per 256 leaves; of the full level-0 tiles, only the last `LEVEL0_KEPT` (before, every
    tile was kept: about 73 bytes per leaf, 0.7 GB for a log of 10^7 entries). Raises
    LogError for a node that is not a complete subtree of the tree, LogIntegrityError
    for a tile of the wrong length, and what ``fetch`` raises.
    """

    def __init__(self, size: int, fetch: Fetch) -> None:
        self.size = size
        self._fetch = fetch
        self._tiles: dict[tuple[int, int], list[bytes]] = {}
        self._level0: OrderedDict[int, list[bytes]] = OrderedDict()
        self._fetched: set[tuple[int, int]] = set()

    @property
    def fetched(self) -> int:
        """How many different tiles were fetched so far."""
        return len(self._fetched)

    def tile(self, level: int, index: int) -> tuple[Tile, list[bytes]]:
        """The tile ``index`` of tile level ``level`` at this tree size, and its hashes."""
        hashes_here = self.size >> (TILE_HEIGHT * level)
        if index >= -(-hashes_here // TILE_WIDTH):
            raise LogError(f"tile {level}/{index} is past the tree of size {self.size}")
        full = (index + 1) * TILE_WIDTH <= hashes_here
        tile = Tile(level, index, TILE_WIDTH if full else hashes_here % TILE_WIDTH)
        key = (level, index)
        kept = self._tiles.get(key)
        if kept is None and level == 0 and full:
            kept = self._level0.get(index)
            if kept is not None:
                self._level0.move_to_end(index)
        if kept is not None:
            return tile, kept
        hashes = split_hashes(self._fetch_tile(tile), tile)
        self._fetched.add(key)
        if level == 0 and full:
            self._level0[index] = hashes
            if len(self._level0) > LEVEL0_KEPT:
                self._level0.popitem(last=False)
        else:
            self._tiles[key] = hashes
        return tile, hashes

    def _fetch_tile(self, tile: Tile) -> bytes:
        try:
            return self._fetch(tile.path)
        except TileMissingError:
            if not tile.partial:
                raise
            # the log may delete a partial tile once the full one exists: its first
            # hashes are the partial tile's (tlog-tiles "Partial Tiles"); a "full"
            # tile of another length is malformed here too
            whole = Tile(tile.level, tile.index, TILE_WIDTH)
            return b"".join(split_hashes(self._fetch(whole.path), whole)[: tile.width])

    def __call__(self, keys: Sequence[merkle.NodeKey]) -> list[bytes]:
        out = []
        for level, index in keys:
            if level < 0 or index < 0 or (index + 1) << level > self.size:
                raise LogError(f"node {(level, index)} is not a complete subtree of the tree")
            tile_level, height = divmod(level, TILE_HEIGHT)
            first = index << height  # first hash, at tree level 8 * tile_level
            _, hashes = self.tile(tile_level, first // TILE_WIDTH)
            pos = first % TILE_WIDTH
            out.append(_perfect_root(hashes[pos : pos + (1 << height)]))
        return out


def check_tile_hashes(nodes: TileNodes, first_level: int = 1) -> None:
    """Check that each hash of every tile at level ``first_level`` (at least 1) and above
    is the root of the full tile below it (tlog-tiles: "each hash in a tile is the Merkle
    Tree Hash of a full tile at the level below"). Raises LogIntegrityError naming the
    first tile that disagrees. `audit_tiles` checks the level-0 tiles against level 1 as
    it reads their entries (`_checked_entries`), level 2 and above here."""
    levels = _levels(nodes.size)[max(1, first_level) :]
    for tile in (t for level in levels for t in level_tiles(nodes.size, level)):
        _, hashes = nodes.tile(tile.level, tile.index)
        for i, value in enumerate(hashes):
            _check_child(nodes, tile, i, value)


def _check_child(nodes: TileNodes, parent: Tile, i: int, value: bytes) -> None:
    """Raise LogIntegrityError unless the full tile under hash ``i`` of ``parent`` hashes
    to ``value``."""
    child, child_hashes = nodes.tile(parent.level - 1, parent.index * TILE_WIDTH + i)
    if _perfect_root(child_hashes) != value:
        raise LogIntegrityError(
            f"{child.path} does not hash to hash {i} of {parent.path}: a tile was edited"
        )


def _checked_entries(nodes: TileNodes, fetch: Fetch, start: int) -> Iterator[bytes]:
    """Entries from index ``start`` to the tree size, each checked against its leaf hash;
    on the way, every full level-0 tile (those before ``start`` too) against its hash in
    the level-1 tile above it, each tile read once."""
    parents = nodes.size >> TILE_HEIGHT  # hashes at level 1: one per full level-0 tile
    for tile in level_tiles(nodes.size, 0):
        if tile.index < parents:
            parent, hashes = nodes.tile(1, tile.index // TILE_WIDTH)
            _check_child(nodes, parent, tile.index % TILE_WIDTH, hashes[tile.index % TILE_WIDTH])
        first = tile.index * TILE_WIDTH
        if first + tile.width <= start:
            continue
        _, leaves = nodes.tile(0, tile.index)
        try:
            entries = decode_bundle(fetch(tile.entries_path), tile)
        except TileMissingError:
            if not tile.partial:
                raise
            full = Tile(0, tile.index, TILE_WIDTH)  # a partial bundle may be deleted, as above
            entries = decode_bundle(fetch(full.entries_path), full)[: tile.width]
        for i, entry in enumerate(entries):
            if first + i < start:
                continue
            if merkle.leaf_hash(entry) != leaves[i]:
                raise LogIntegrityError(
                    f"entry {first + i} in {tile.entries_path} does not hash to leaf {i} of"
                    f" {tile.path}: the entry bundle or the tile was edited"
                )
            yield entry


@dataclass(frozen=True)
class TileAudit:
    """The outcome of `audit_tiles`: the new audit state, the checkpoint, entries checked,
    and the tiles read."""

    state: AuditState
    checkpoint: Checkpoint
    entries_checked: int
    tiles_read: int


def _refuse_stale(new: Checkpoint, saved: Checkpoint) -> None:
    """Raise StaleCheckpointError when the tiles' checkpoint ``new`` is of a smaller tree
    than the ``saved`` one and signed no later (both carry this log's time line): a copy
    not updated yet, which proves nothing either way. A smaller tree signed later, or
    checkpoints without times, go on to `audit_step`'s ROLLBACK."""
    if (
        new.size < saved.size
        and new.timestamp is not None
        and saved.timestamp is not None
        and new.timestamp <= saved.timestamp
    ):
        when, then = (f"{c.timestamp:%Y-%m-%d %H:%M:%S} UTC" for c in (new, saved))
        raise StaleCheckpointError(
            f"the tiles' checkpoint ({new.size:,} entries, signed {when}) is older than the"
            f" one this audit saved ({saved.size:,} entries, signed {then}): a copy not"
            " updated yet (a mirror or cache) or an old checkpoint served again, which"
            " proves nothing against the log; nothing was checked and the saved state is"
            " kept. Audit again later, or against the log's own server (a smaller tree"
            " signed after the saved one would be a ROLLBACK)"
        )


def audit_tiles(
    fetch: Fetch, verifier_key: str, state: AuditState | None, *, full: bool = True
) -> TileAudit:
    """Audit a tiled log from its files alone, trusting only the log key ``verifier_key``.

    Checks, in order: the checkpoint's signature (c2sp.org/signed-note); every tile hash
    at level >= 2 against the full tile below it; the root hashed from the tiles against
    the checkpoint's (RFC 9162 2.1.1); with a saved ``state``, a consistency proof computed
    from the tiles against the saved root (RFC 9162 2.1.4.2: catches a fork or rollback);
    then in one pass over the level-0 tiles, each read once: every full one against its
    hash at level 1, and every entry (from 0 when ``full`` or on a first audit, else from
    the saved size) against its leaf hash in it; and the entries' own root against the
    checkpoint (`provenance.log.audit.audit_step`). Memory: see `TileNodes`. Raises
    LogIntegrityError naming the first failure; what ``fetch`` raises when a file cannot
    be read.
    """
    note_bytes = fetch(CHECKPOINT_PATH)
    if len(note_bytes) > MAX_NOTE_BYTES:  # refused before it is decoded (`split_note`)
        raise LogIntegrityError(
            f"the checkpoint file is {len(note_bytes):,} bytes, more than the"
            f" {MAX_NOTE_BYTES:,} a signed note may hold"
        )
    try:
        note = note_bytes.decode()
    except UnicodeDecodeError as e:
        raise LogIntegrityError("the checkpoint file is not UTF-8 text") from e
    new = open_trusted(note, NoteVerifier.from_vkey(verifier_key), "the tiled log's")
    old = None
    if state is not None:
        old = Checkpoint.parse_body(state.checkpoint[: state.checkpoint.rfind("\n\n") + 1])
        _refuse_stale(new, old)
    nodes = TileNodes(new.size, fetch)
    check_tile_hashes(nodes, first_level=2)  # level 1 against level 0: with the entries
    if merkle.root(new.size, nodes) != new.root_hash:
        raise LogIntegrityError(
            f"the tiles of the tree of size {new.size} do not hash to the checkpoint's root:"
            " a tile was edited"
        )
    proof: list[bytes] = []
    start = 0
    if old is not None:
        if 0 < old.size < new.size:
            proof = merkle.consistency_proof(old.size, new.size, nodes)
        if not full:
            start = min(old.size, new.size)
    entries = _checked_entries(nodes, fetch, start)
    new_state, checkpoint, checked = audit_step(
        state, verifier_key, note, proof, entries, from_start=start == 0
    )
    return TileAudit(new_state, checkpoint, checked, nodes.fetched)
