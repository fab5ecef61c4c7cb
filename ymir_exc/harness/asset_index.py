"""The per-asset state of one :func:`ymir_exc.harness.workspace.write_in_dir`, kept on disk
(sqlite in a temporary file) so that preparing a million images holds no per-image object in
memory::

    idx = AssetIndex()
    idx.add_asset("ab.jpg", "/data/a.jpg", "/w/in/assets/ab/ab.jpg")   # True: first time
    idx.add_asset("ab.jpg", "/data/copy-of-a.jpg", "...")               # False: same bytes
    idx.add_line("train", "ab")                                        # True once per split
    dict(idx.sources)                                                  # {'ab.jpg': '/data/a.jpg'}

The file is deleted when the index is garbage collected (or at interpreter exit). Lookups cost
a B-tree search each (microseconds); the views :attr:`AssetIndex.sources` and
:attr:`AssetIndex.linked` read the table on demand.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import overload

from ymir_exc.harness.item_store import close_db, temp_db

_SCHEMA = """
CREATE TABLE asset (name TEXT PRIMARY KEY, src TEXT NOT NULL, path TEXT NOT NULL, linked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE line (split TEXT NOT NULL, h TEXT NOT NULL, PRIMARY KEY (split, h)) WITHOUT ROWID;
CREATE TABLE note (h TEXT PRIMARY KEY) WITHOUT ROWID;
"""


class AssetIndex:
    """Which assets, index lines and annotation files one ``write_in_dir`` has already made.

    Raises:
        OSError: the temporary file cannot be made (``TMPDIR`` full or not writable).
    """

    def __init__(self) -> None:
        self._db, path = temp_db("ymir-exc-assets-", _SCHEMA)
        self._closer = weakref.finalize(self, close_db, self._db, path)
        # the views hold the index (not only its connection): the file lives as long as they do
        self.sources = _Sources(self)
        self.linked = _Linked(self)

    def _first(self, sql: str, params: tuple[str, ...]) -> bool:
        return self._db.execute(sql, params).rowcount == 1

    def add_asset(self, name: str, src: str, path: str) -> bool:
        """Record asset ``name`` (``<sha1>.<ext>``) from image ``src`` at ``path``; True the first time."""
        return self._first("INSERT OR IGNORE INTO asset (name, src, path) VALUES (?, ?, ?)", (name, src, path))

    def add_line(self, split: str, h: str) -> bool:
        """Record an index line of ``split`` for the image bytes ``h``; True the first time."""
        return self._first("INSERT OR IGNORE INTO line (split, h) VALUES (?, ?)", (split, h))

    def add_note(self, h: str) -> bool:
        """Record the annotation file of the image bytes ``h``; True the first time (that item's
        boxes are written; later copies share the file)."""
        return self._first("INSERT OR IGNORE INTO note (h) VALUES (?)", (h,))

    def mark_linked(self, names: Iterable[str]) -> None:
        """Flag these assets as placed by hard link (:attr:`linked`)."""
        self._db.executemany("UPDATE asset SET linked = 1 WHERE name = ?", ((n,) for n in names))


class _Sources(Mapping[str, str]):
    """asset name -> the first source image with those bytes, in the order they were added."""

    def __init__(self, index: AssetIndex) -> None:
        self._index = index
        self._db = index._db

    def __getitem__(self, name: str) -> str:
        row = self._db.execute("SELECT src FROM asset WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise KeyError(name)
        return str(row[0])

    def __iter__(self) -> Iterator[str]:
        return (str(r[0]) for r in self._db.execute("SELECT name FROM asset ORDER BY rowid"))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM asset").fetchone()[0])


class _Linked(Sequence[tuple[str, str]]):
    """(source image, asset path) of every asset placed as a hard link, in the order placed."""

    def __init__(self, index: AssetIndex) -> None:
        self._index = index
        self._db = index._db

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return (
            (str(s), str(p)) for s, p in self._db.execute("SELECT src, path FROM asset WHERE linked ORDER BY rowid")
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM asset WHERE linked").fetchone()[0])

    @overload
    def __getitem__(self, i: int) -> tuple[str, str]: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[tuple[str, str]]: ...
    def __getitem__(self, i: int | slice) -> tuple[str, str] | Sequence[tuple[str, str]]:
        return list(self)[i]
