"""The on-disk item store, key set and external path sort that keep prepare's memory flat."""

import random
import shutil
from pathlib import PurePosixPath

from ymir_exc.formats.annotations import BBox
from ymir_exc.harness.datasets import Dataset, load_dataset, load_sample, resolve_duplicates
from ymir_exc.harness.item_store import Item, ItemStore, KeySet, n_boxes, sorted_paths
from ymir_exc.harness.sources import source_dataset, source_images


def test_item_store_reads_back_what_was_appended_as_a_sequence():
    items = [Item(f"/d/{i}.jpg", [BBox(0, "tree", i, 1, 2, 3)] * (i % 3), "ab" if i % 2 else None) for i in range(9000)]
    store = ItemStore(items)
    assert len(store) == 9000 and list(store) == items and store.boxes == n_boxes(items)
    assert store[0] == items[0] and store[-1] == items[-1] and store[4095:4099] == items[4095:4099]
    assert store[::1000] == items[::1000] and store + [items[0]] == [*items, items[0]]
    assert not ItemStore() and bool(store)


def test_key_set_answers_first_time_and_membership():
    keys = KeySet(["a"])
    assert keys.add("b") and not keys.add("b") and not keys.add("a")
    assert "a" in keys and "c" not in keys and len(keys) == 2


def test_sorted_paths_orders_as_path_objects_or_strings():
    rnd = random.Random(3)
    names = ["a", "a-x.jpg", "a.b", "ab", "b", "é.jpg", "Z.jpg"]
    paths = ["/r/" + "/".join(rnd.choice(names) for _ in range(rnd.randrange(1, 4))) for _ in range(500)]
    assert list(sorted_paths(paths)) == sorted(paths)
    assert list(sorted_paths(paths, by_parts=True)) == [str(p) for p in sorted(map(PurePosixPath, paths))]
    assert list(sorted_paths(paths, unique=True)) == sorted(set(paths))


def test_folder_sources_stay_on_disk_and_duplicates_resolve_as_before(tmp_path):
    sample = load_sample("trees")
    src = tmp_path / "photos"
    src.mkdir()
    for i, it in enumerate(sample.candidate[:6]):
        shutil.copy(it.image_path, src / f"{i}.jpg")
    shutil.copy(sample.candidate[0].image_path, src / "copy.jpg")  # the same bytes twice
    ds = source_dataset(str(src))
    assert isinstance(ds.candidate, ItemStore) and [i.image_path for i in ds.candidate] == source_images(str(src))
    resolved = resolve_duplicates(ds)
    assert isinstance(resolved.candidate, ItemStore) and len(resolved.candidate) == 6
    assert resolved.notes == ["1 duplicate candidate image(s) dropped"]
    as_list = resolve_duplicates(Dataset("l", [], [], [], list(ds.candidate)))
    assert [i.image_path for i in as_list.candidate] == [i.image_path for i in resolved.candidate]
    assert isinstance(load_dataset(None).train, list)  # the bundled sample stays a list


def test_walk_finds_what_rglob_finds(tmp_path):
    from ymir_exc.harness.datasets import walk

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jpg").write_bytes(b"")
    (tmp_path / ".h.jpg").write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "a")  # listed, not entered
    assert sorted(walk(tmp_path)) == sorted(tmp_path.rglob("*"))
