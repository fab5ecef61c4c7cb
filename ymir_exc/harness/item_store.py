"""Dataset items and key sets kept on disk (sqlite in a temporary file), so that reading and
preparing a million images holds no per-image object in memory::

    store = ItemStore()
    store.append(Item("/data/a.jpg", [box]))       # written to disk, not kept
    len(store), store.boxes                         # 1, 1
    for item in store: ...                          # read back in order, a page at a time
    seen = KeySet()
    seen.add("ab12..."), seen.add("ab12...")        # True, False (first time only)

Each file is deleted when its object is garbage collected (or at interpreter exit). An
:class:`ItemStore` is a read-only :class:`~collections.abc.Sequence` once filled (``len``,
iteration, indexing, slicing; ``store + list`` gives a list), so code written for a list of
items reads it unchanged.
"""

from __future__ import annotations

import os
import pickle
import sqlite3
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from ymir_exc.formats.annotations import BBox


@dataclass
class Item:
    """One image and its ground truth (empty for candidates / unlabeled images)."""

    image_path: str
    boxes: list[BBox] = field(default_factory=list)
    #: hex sha1 of the image bytes, once computed (:func:`~ymir_exc.harness.datasets.resolve_duplicates`)
    sha1: str | None = None


#: rows read per query while iterating: a few MB of items at most
PAGE = 4096


def close_db(db: sqlite3.Connection, path: str) -> None:
    """Close ``db`` and delete its file ``path`` (already gone: nothing to do)."""
    db.close()
    try:
        os.unlink(path)
    except OSError:
        pass


def temp_db(prefix: str, schema: str) -> tuple[sqlite3.Connection, str]:
    """A new sqlite file in ``TMPDIR`` with ``schema``, no journal, no fsync.

    Raises:
        OSError: the file cannot be made (``TMPDIR`` full or not writable).
    """
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".sqlite")
    os.close(fd)
    db = sqlite3.connect(path, check_same_thread=False)
    db.executescript("PRAGMA journal_mode = OFF;\nPRAGMA synchronous = OFF;\n" + schema)
    return db, path


class KeySet:
    """A set of strings on disk that answers "first time?" (:meth:`add`) and membership.

    Raises:
        OSError: the temporary file cannot be made.
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._db, path = temp_db("ymir-exc-keys-", "CREATE TABLE k (k TEXT PRIMARY KEY) WITHOUT ROWID;")
        self._closer = weakref.finalize(self, close_db, self._db, path)
        self._db.executemany("INSERT OR IGNORE INTO k VALUES (?)", ((k,) for k in keys))

    def add(self, key: str) -> bool:
        """Add ``key``; True when it was not there yet."""
        return self._db.execute("INSERT OR IGNORE INTO k VALUES (?)", (key,)).rowcount == 1

    def __contains__(self, key: object) -> bool:
        return self._db.execute("SELECT 1 FROM k WHERE k = ?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM k").fetchone()[0])


class ItemStore(Sequence[Item]):
    """An append-only sequence of :class:`Item` on disk, in the order
    appended; :attr:`boxes` is the total number of boxes.

    Raises:
        OSError: the temporary file cannot be made or written.
    """

    def __init__(self, items: Iterable[Item] = ()) -> None:
        self._db, path = temp_db("ymir-exc-items-", "CREATE TABLE item (path TEXT NOT NULL, rest BLOB);")
        self._closer = weakref.finalize(self, close_db, self._db, path)
        self._n = 0
        self.boxes = 0
        self.extend(items)

    def append(self, item: Item) -> None:
        """Add ``item`` at the end (its boxes and sha1 pickled beside the path)."""
        self.extend((item,))

    def extend(self, items: Iterable[Item]) -> None:
        """Add ``items`` at the end, in order."""
        rows = []
        for it in items:
            rows.append((it.image_path, pickle.dumps((it.boxes, it.sha1)) if (it.boxes or it.sha1) else None))
            self.boxes += len(it.boxes)
            if len(rows) >= PAGE:
                self._insert(rows)
        self._insert(rows)

    def _insert(self, rows: list[tuple[str, bytes | None]]) -> None:
        self._db.executemany("INSERT INTO item (path, rest) VALUES (?, ?)", rows)
        self._n += len(rows)
        rows.clear()

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[Item]:
        return self._rows(0, self._n)

    def _rows(self, start: int, stop: int) -> Iterator[Item]:
        """Items ``start`` .. ``stop - 1`` (rowids are positions + 1: nothing is ever deleted)."""
        while start < stop:
            page = self._db.execute(
                "SELECT path, rest FROM item WHERE rowid > ? AND rowid <= ? ORDER BY rowid",
                (start, min(stop, start + PAGE)),
            ).fetchall()
            start += PAGE
            for path, rest in page:
                boxes, sha1 = pickle.loads(rest) if rest is not None else ([], None)
                yield Item(path, boxes, sha1)

    @overload
    def __getitem__(self, i: int) -> Item: ...
    @overload
    def __getitem__(self, i: slice) -> list[Item]: ...
    def __getitem__(self, i: int | slice) -> Item | list[Item]:
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            if step != 1:
                return list(self)[i]
            return list(self._rows(start, stop))
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("ItemStore index out of range")
        return next(self._rows(i, i + 1))

    def __add__(self, other: Sequence[Item]) -> list[Item]:
        return list(self) + list(other)

    def __radd__(self, other: Sequence[Item]) -> list[Item]:
        return list(other) + list(self)

    def __repr__(self) -> str:
        return f"ItemStore({self._n} items, {self.boxes} boxes)"


def same_kind(like: Sequence[Any], items: Iterable[Item]) -> Sequence[Item]:
    """``items`` as an :class:`ItemStore` when ``like`` is one, else as a list: a dataset read
    from disk stays on disk through class mapping, duplicate resolution and candidate choice."""
    return ItemStore(items) if isinstance(like, ItemStore) else list(items)


def n_boxes(items: Sequence[Item]) -> int:
    """The number of boxes of ``items`` (an :class:`ItemStore` knows it without reading)."""
    return items.boxes if isinstance(items, ItemStore) else sum(len(i.boxes) for i in items)


def sorted_paths(paths: Iterable[str], *, by_parts: bool = False, unique: bool = False) -> Iterator[str]:
    """``paths`` sorted on disk (an external sort: memory does not grow with their number).

    Args:
        by_parts: order as :class:`pathlib.PurePosixPath` objects compare (part by part: ``a/b``
            before ``a-x``), else as strings (``a-x`` before ``a/b``).
        unique: each path once.

    Order is that of the file-system bytes, which is Python's string order for every name that
    is UTF-8 (names with undecodable bytes may sort differently from ``sorted``).

    Raises:
        OSError: the temporary file cannot be made or written.
    """
    db, tmp = temp_db(
        "ymir-exc-paths-",
        "CREATE TABLE p (k BLOB NOT NULL, n INTEGER NOT NULL, path BLOB NOT NULL, PRIMARY KEY (k, n)) WITHOUT ROWID;",
    )
    try:
        rows: list[tuple[bytes, int, bytes]] = []
        sql = f"INSERT {'OR IGNORE ' if unique else ''}INTO p VALUES (?, ?, ?)"
        for n, path in enumerate(paths):
            raw = os.fsencode(path)
            rows.append((raw.replace(b"/", b"\x00") if by_parts else raw, 0 if unique else n, raw))
            if len(rows) >= PAGE:
                db.executemany(sql, rows)
                rows.clear()
        db.executemany(sql, rows)
        for (raw,) in db.execute("SELECT path FROM p ORDER BY k, n"):
            yield os.fsdecode(raw)
    finally:
        close_db(db, tmp)
