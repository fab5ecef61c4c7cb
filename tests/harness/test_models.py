import io
import tarfile

import pytest
import yaml

from ymir_exc.errors import ModelError
from ymir_exc.harness.models import INFO_NAME, ModelStore, build_info, write_reproducible_targz

INFO = {
    "executor_config": {"class_names": ["cat", "dog"]},
    "task_context": {"executor": "img", "producer": "me", "mAP": 0.6},
    "stages": {
        "stage_2000": {
            "stage_name": "stage_2000",
            "files": ["model-2000.params", "model-symbol.json"],
            "mAP": 0.6,
            "timestamp": 1655975205,
            "mAR": 0.6,
            "TP": 60,
            "FP": 30,
            "FN": 30,
        }
    },
    "best_stage_name": "stage_2000",
    "package_version": "2.0.0",
}


def _tar(path, members, info=INFO, extra=None):
    with tarfile.open(path, "w:gz") as tar:

        def add(name, data, **kw):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            for k, v in kw.items():
                setattr(ti, k, v)
            tar.addfile(ti, io.BytesIO(data))

        for name, data in members.items():
            add(name, data)
        if info is not None:
            add(INFO_NAME, yaml.safe_dump(info).encode())
        for ti in extra or []:
            tar.addfile(ti, io.BytesIO(b"" if ti.size == 0 else b"x" * ti.size))
    return path


GOOD = {"stage_2000/model-2000.params": b"params", "stage_2000/model-symbol.json": b"{}"}


def test_same_members_pack_to_the_same_hash(tmp_path):
    store = ModelStore(tmp_path / "store")
    f = tmp_path / "w.pt"
    f.write_bytes(b"weights")
    info = build_info(
        {"class_names": ["a"]},
        {"executor": "x"},
        {"s1": {"stage_name": "s1", "files": ["w.pt"], "timestamp": 1, "mAP": 0.5}},
        "s1",
    )
    h1 = store.pack([("s1/w.pt", str(f))], info)
    f.touch()  # a new mtime must not change the package
    h2 = store.pack([("s1/w.pt", str(f))], info)
    assert h1 == h2 and (store.location / h1).is_file()
    with tarfile.open(store.location / h1) as tar:
        assert sorted(tar.getnames()) == ["s1/w.pt", INFO_NAME]
        assert {m.mtime for m in tar.getmembers()} == {0} and {m.uid for m in tar.getmembers()} == {0}


def test_import_prints_hash_and_is_reproducible(tmp_path):
    store = ModelStore(tmp_path / "store")
    m = store.import_package(_tar(tmp_path / "p.tar.gz", GOOD))
    assert m.info.best_stage_name == "stage_2000" and m.mAP() == 0.6 and m.class_names == ["cat", "dog"]
    again = store.import_package(_tar(tmp_path / "p2.tar.gz", dict(reversed(list(GOOD.items())))))
    assert again.hash == m.hash


def test_unpack_extracts_the_chosen_stage(tmp_path):
    store = ModelStore(tmp_path / "store")
    m = store.import_package(_tar(tmp_path / "p.tar.gz", GOOD))
    got = store.unpack(m.hash[:8], tmp_path / "models")
    assert got["files"] == ["stage_2000/model-2000.params", "stage_2000/model-symbol.json"]
    assert (tmp_path / "models" / "stage_2000" / "model-2000.params").read_bytes() == b"params"
    with pytest.raises(ModelError, match="stage 'nope'"):
        store.unpack(m.hash, tmp_path / "m2", "nope")


def test_legacy_1_1_0_package_is_upgraded(tmp_path):
    info = {
        "executor_config": {"class_names": ["cat"]},
        "task_context": {"executor": "old", "mAP": 0.3},
        "models": ["model.params", "model.json"],
        "package_version": "1.1.0",
    }
    store = ModelStore(tmp_path / "store")
    m = store.import_package(_tar(tmp_path / "old.tar.gz", {"model.params": b"1", "model.json": b"2"}, info))
    assert m.info.best_stage_name == "default_best_stage" and m.mAP() == 0.3
    assert m.info.stages["default_best_stage"].files == ["model.params", "model.json"]


def _member(name, type_=tarfile.REGTYPE, linkname="", size=0):
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.linkname = linkname
    ti.size = size
    return ti


@pytest.mark.parametrize(
    "bad,match",
    [
        (_member("../evil.sh", size=1), r"'\.\.'"),
        (_member("/etc/evil", size=1), "absolute"),
        (_member("stage_2000/link", tarfile.SYMTYPE, "/etc/passwd"), "symlink"),
        (_member("stage_2000/hard", tarfile.LNKTYPE, "stage_2000/model-symbol.json"), "hard link"),
        (_member("dev", tarfile.CHRTYPE), "special"),
    ],
)
def test_unsafe_members_are_refused(tmp_path, bad, match):
    store = ModelStore(tmp_path / "store")
    with pytest.raises(ModelError, match=match):
        store.import_package(_tar(tmp_path / "p.tar.gz", GOOD, extra=[bad]))
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def test_missing_stage_file_and_missing_key_are_refused(tmp_path):
    store = ModelStore(tmp_path / "store")
    with pytest.raises(ModelError, match="model-symbol.json"):
        store.import_package(_tar(tmp_path / "p.tar.gz", {"stage_2000/model-2000.params": b"x"}))
    info = {k: v for k, v in INFO.items() if k != "executor_config"}
    with pytest.raises(ModelError) as e:
        store.import_package(_tar(tmp_path / "q.tar.gz", GOOD, info))
    assert e.value.key == "executor_config"


def test_not_a_tar_gz_and_corrupted_store_are_refused(tmp_path):
    store = ModelStore(tmp_path / "store")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"definitely not gzip")
    with pytest.raises(ModelError, match="not a tar.gz"):
        store.import_package(junk)
    m = store.import_package(_tar(tmp_path / "p.tar.gz", GOOD))
    with open(m.path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(ModelError, match="corrupted"):
        store.get(m.hash)


def test_latest_and_prefix_resolution(tmp_path):
    store = ModelStore(tmp_path / "store")
    with pytest.raises(ModelError, match="no model"):
        store.resolve("latest")
    m = store.import_package(_tar(tmp_path / "p.tar.gz", GOOD))
    assert store.resolve("latest").name == m.hash
    with pytest.raises(ModelError, match=r"too short \(min 6"):
        store.resolve(m.hash[:3])
    with pytest.raises(ModelError, match="not found"):
        store.resolve("abcdef0123")
    assert store.resolve(m.hash[:6]).name == m.hash


def test_write_reproducible_targz_refuses_duplicates(tmp_path):
    with pytest.raises(ModelError, match="duplicate"):
        write_reproducible_targz([("a", b"1"), ("a", b"2")], tmp_path / "x.tar.gz")
