"""Tile arithmetic of C2SP ``tlog-tiles`` over the stored-hash layout.

A tile of height ``h`` at level ``L`` and number ``N`` lists ``W`` consecutive hashes at
tree level ``h*L``, starting at hash ``N * 2**h`` (``W == 2**h`` for a full tile, fewer
for the partial rightmost one). ``tlog-tiles`` fixes ``h = 8``: 256 hashes, 8,192 bytes.
Every hash of a tile is a stored hash, so serving a tile is one read of
``tile_hash_indexes(tile)``, and any stored hash can be recomputed from the tile that
``tile_for_index`` names (Go's ``sumdb/tlog`` ``TileForIndex``, ``HashFromTile``,
``NewTiles`` and ``ReadTileData``).

Paths follow ``tlog-tiles``: ``tile/<L>/<N>[.p/<W>]`` with ``<N>`` in 3-digit groups,
all but the last prefixed ``x``; level ``-1`` is an entry bundle, ``tile/entries/<N>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.tlog.hashing import HASH_SIZE, Hash, node_hash, split_stored_hash_index
from shared.tlog.hashing import stored_hash_index as _stored_hash_index

TILE_HEIGHT = 8
ENTRIES_LEVEL = -1
_PATH_BASE = 1000


class TileError(ValueError):
    """A malformed tile path or tile data that does not hold the requested hash."""


@dataclass(frozen=True, slots=True)
class Tile:
    level: int
    n: int
    width: int
    height: int = TILE_HEIGHT

    def __post_init__(self) -> None:
        if not 1 <= self.height <= 30 or not -1 <= self.level <= 63:
            raise TileError(f"invalid tile height {self.height} or level {self.level}")
        if self.n < 0 or not 1 <= self.width <= 1 << self.height:
            raise TileError(f"invalid tile number {self.n} or width {self.width}")

    @property
    def is_full(self) -> bool:
        return self.width == 1 << self.height

    def path(self) -> str:
        """The ``tlog-tiles`` path (height 8 only)."""
        if self.height != TILE_HEIGHT:
            raise TileError("tlog-tiles paths exist only for tiles of height 8")
        n = self.n
        n_str = f"{n % _PATH_BASE:03d}"
        while n >= _PATH_BASE:
            n //= _PATH_BASE
            n_str = f"x{n % _PATH_BASE:03d}/{n_str}"
        level = "entries" if self.level == ENTRIES_LEVEL else str(self.level)
        partial = "" if self.is_full else f".p/{self.width}"
        return f"tile/{level}/{n_str}{partial}"


_TILE_PATH = re.compile(
    r"tile/(?P<level>entries|0|[1-9][0-9]?)/(?P<n>(?:x[0-9]{3}/)*[0-9]{3})(?:\.p/(?P<w>[1-9][0-9]*))?"
)


def parse_tile_path(path: str) -> Tile:
    """Parse a ``tlog-tiles`` path; only the canonical spelling is accepted."""
    m = _TILE_PATH.fullmatch(path)
    if m is None:
        raise TileError(f"malformed tile path {path!r}")
    level = ENTRIES_LEVEL if m["level"] == "entries" else int(m["level"])
    n = 0
    for group in m["n"].split("/"):
        n = n * _PATH_BASE + int(group.removeprefix("x"))
    width = 1 << TILE_HEIGHT
    if m["w"] is not None:
        width = int(m["w"])
        if width >= 1 << TILE_HEIGHT:
            raise TileError(f"malformed tile path {path!r}")
    try:
        tile = Tile(level=level, n=n, width=width)
    except TileError:
        raise TileError(f"malformed tile path {path!r}") from None
    if tile.path() != path:  # e.g. a leading x000/ group
        raise TileError(f"malformed tile path {path!r}")
    return tile


def _tile_for_index(h: int, index: int) -> tuple[Tile, int, int]:
    level, n = split_stored_hash_index(index)
    tile_level = level // h
    level -= tile_level * h  # level within the tile
    tile_n = (n << level) >> h
    n -= (tile_n << h) >> level  # n within the tile at that level
    width = (n + 1) << level
    return Tile(level=tile_level, n=tile_n, width=width, height=h), n << level, (n + 1) << level


def tile_for_index(index: int, height: int = TILE_HEIGHT) -> Tile:
    """The narrowest tile from which the stored hash at ``index`` can be computed."""
    tile, _, _ = _tile_for_index(height, index)
    return tile


def _tile_hash(hashes: list[Hash]) -> Hash:
    if len(hashes) == 1:
        return hashes[0]
    half = len(hashes) // 2
    return node_hash(_tile_hash(hashes[:half]), _tile_hash(hashes[half:]))


def hash_from_tile(tile: Tile, data: bytes, index: int) -> Hash:
    """The stored hash at ``index``, given the data of ``tile_for_index(index)`` or a
    wider tile at the same coordinates."""
    if tile.level < 0:
        raise TileError("entry bundles hold no hashes")
    if len(data) < tile.width * HASH_SIZE:
        raise TileError(f"{len(data)} bytes is too short for a tile of width {tile.width}")
    t1, start, end = _tile_for_index(tile.height, index)
    if (t1.level, t1.n) != (tile.level, tile.n) or tile.width < t1.width:
        raise TileError(f"index {index} is in tile {t1}, not {tile}")
    hashes = [data[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(start, end)]
    return _tile_hash(hashes)


def new_tiles(old_size: int, new_size: int, height: int = TILE_HEIGHT) -> list[Tile]:
    """Tiles to publish when the tree grows from ``old_size`` to ``new_size`` (Go's
    ``NewTiles``): the full tiles completed and the partial tiles that changed."""
    if height <= 0:
        raise TileError(f"invalid tile height {height}")
    tiles: list[Tile] = []
    level = 0
    while new_size >> (height * level) > 0:
        old_n = old_size >> (height * level)
        new_n = new_size >> (height * level)
        if old_n != new_n:
            for n in range(old_n >> height, new_n >> height):
                tiles.append(Tile(level=level, n=n, width=1 << height, height=height))
            n = new_n >> height
            width = new_n - (n << height)
            if width > 0:
                tiles.append(Tile(level=level, n=n, width=width, height=height))
        level += 1
    return tiles


def tile_hash_indexes(tile: Tile) -> list[int]:
    """Stored indexes of the hashes in ``tile``, in tile order (Go's ``ReadTileData``)."""
    if tile.level < 0:
        raise TileError("entry bundles hold no hashes")
    start = tile.n << tile.height
    level = tile.height * tile.level
    return [_stored_hash_index(level, start + i) for i in range(tile.width)]
