from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.tlog.hashing import stored_hash_count, stored_hash_index
from shared.tlog.tiles import (
    Tile,
    TileError,
    hash_from_tile,
    new_tiles,
    parse_tile_path,
    tile_for_index,
    tile_hash_indexes,
)
from tests.unit.test_tlog_hashing import build

# Go's sumdb/tlog tile_test.go TestNewTilesForSize (height 10): (old, new, tile count).
GO_NEW_TILES_H10 = [
    (1, 1, 0),
    (100, 101, 1),
    (1023, 1025, 3),
    (1024, 1030, 1),
    (1030, 2000, 1),
    (1030, 10000, 10),
    (49516517, 49516586, 3),
]

# TileForIndex(8, index) printed by golang.org/x/mod v0.24.0 sumdb/tlog: (index, L, N, W).
GO_TILE_FOR_INDEX_H8 = [
    (0, 0, 0, 1),
    (1, 0, 0, 2),
    (2, 0, 0, 2),
    (5, 0, 0, 4),
    (510, 1, 0, 1),
    (511, 0, 1, 1),
    (512, 0, 1, 2),
    (513, 0, 1, 2),
    (1000, 0, 1, 248),
    (123456789, 0, 241126, 147),
]

# C2SP tlog-tiles.md: paths (index 1234067 is x001/x234/067) and the tiles of a tree of
# 70,000 entries; Go's tlog_test.go tilePaths, adapted to tlog-tiles' path (no height).
PATHS = [
    ("tile/0/x001/x234/067", Tile(level=0, n=1234067, width=256)),
    ("tile/0/x001/x234/067.p/8", Tile(level=0, n=1234067, width=8)),
    ("tile/4/001", Tile(level=4, n=1, width=256)),
    ("tile/4/001.p/5", Tile(level=4, n=1, width=5)),
    ("tile/5/x123/x456/078", Tile(level=5, n=123456078, width=256)),
    ("tile/entries/x003/x057/500", Tile(level=-1, n=3057500, width=256)),
    ("tile/entries/000.p/1", Tile(level=-1, n=0, width=1)),
]
BAD_PATHS = [
    "tile/5/123/456/078",  # groups without x
    "tile/-1/001",
    "tile/64/001",
    "tile/01/001",
    "tile/0/x000/001",  # leading zero group
    "tile/0/1",
    "tile/0/001.p/0",
    "tile/0/001.p/256",
    "tile/0/001.p/05",
    "tile/data/001",
    "tiles/0/001",
]


@pytest.mark.parametrize(("old", "new", "count"), GO_NEW_TILES_H10)
def test_go_new_tiles_counts(old: int, new: int, count: int) -> None:
    assert len(new_tiles(old, new, height=10)) == count


def test_c2sp_tiles_of_a_70000_tree() -> None:
    tiles = new_tiles(0, 70_000)
    full0 = [t for t in tiles if t.level == 0 and t.is_full]
    assert len(full0) == 273
    partial = sorted((t.level, t.width) for t in tiles if not t.is_full)
    assert partial == [(0, 112), (1, 17), (2, 1)]
    assert sum(1 for t in tiles if t.level == 1 and t.is_full) == 1
    assert len(tiles) == 277  # Go's NewTiles(8, 0, 70000) gives the same
    assert sorted((t.level, t.width) for t in new_tiles(0, 256)) == [(0, 256), (1, 1)]


@pytest.mark.parametrize(("index", "level", "n", "width"), GO_TILE_FOR_INDEX_H8)
def test_go_tile_for_index(index: int, level: int, n: int, width: int) -> None:
    assert tile_for_index(index) == Tile(level=level, n=n, width=width)


@pytest.mark.parametrize(("path", "tile"), PATHS)
def test_tile_paths(path: str, tile: Tile) -> None:
    assert tile.path() == path
    assert parse_tile_path(path) == tile


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_tile_paths(path: str) -> None:
    with pytest.raises(TileError):
        parse_tile_path(path)


@given(st.integers(1, 700), st.sampled_from([1, 2, 8]))
def test_every_stored_hash_is_readable_from_its_tile(size: int, height: int) -> None:
    # Go's TestTree tile checks: publish the tiles NewTiles names as the tree grows; each
    # stored hash is then recomputable from the tile TileForIndex names.
    storage = build([b"leaf %d" % i for i in range(size)])
    published: dict[tuple[int, int], bytes] = {}
    for tile in new_tiles(0, size, height):
        published[(tile.level, tile.n)] = b"".join(storage.read(tile_hash_indexes(tile)))
    for index in range(stored_hash_count(size)):
        tile = tile_for_index(index, height)
        data = published[(tile.level, tile.n)]
        wide = Tile(level=tile.level, n=tile.n, width=len(data) // 32, height=height)
        assert hash_from_tile(wide, data, index) == storage[index]


def test_tile_hash_indexes_are_level_hashes() -> None:
    tile = Tile(level=1, n=2, width=3)
    assert tile_hash_indexes(tile) == [stored_hash_index(8, 512 + i) for i in range(3)]


def test_hash_from_wrong_tile_fails() -> None:
    storage = build([b"leaf %d" % i for i in range(20)])
    tile = Tile(level=0, n=0, width=20)
    data = b"".join(storage.read(tile_hash_indexes(tile)))
    with pytest.raises(TileError):
        hash_from_tile(Tile(level=0, n=1, width=20), data, 3)
    with pytest.raises(TileError):
        hash_from_tile(Tile(level=0, n=0, width=2), data, stored_hash_index(0, 5))
    with pytest.raises(TileError):
        hash_from_tile(tile, data[:32], 3)
    with pytest.raises(TileError):
        Tile(level=0, n=0, width=257)
