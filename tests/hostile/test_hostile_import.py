"""``models import`` of hostile packages: every refusal happens from the tar headers, before
anything is extracted; the store and the previous good package survive; ``models list`` shows a
corrupted package as such. Includes the memory test of a 1 GiB member of zeros."""

import io
import json
import os
import subprocess
import sys
import tarfile

import pytest
import yaml
from hostile_util import Host

from ymir_exc.cli import main
from ymir_exc.harness.models import ModelStore

INFO = {
    "executor_config": {"class_names": ["tree"]},
    "task_context": {"executor": "x"},
    "stages": {"s1": {"stage_name": "s1", "files": ["w.pt"], "timestamp": 1, "mAP": 0.5}},
    "best_stage_name": "s1",
    "package_version": "2.0.0",
}


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path / "host")


class _Zeros(io.RawIOBase):
    """``n`` zero bytes, produced on demand (never held in memory)."""

    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def build(path, members, info=INFO, compresslevel=6):
    """A tar.gz of ``members``: (name, bytes | int size of zeros | TarInfo-type str), then ymir-info.yaml."""
    with tarfile.open(path, "w:gz", compresslevel=compresslevel) as tar:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            if data == "dir":
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            elif data == "symlink":
                ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(ti)
            elif isinstance(data, int):
                ti.size = data
                tar.addfile(ti, io.BufferedReader(_Zeros(data), 1 << 20))
            else:
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))
        if info is not None:
            raw = info if isinstance(info, bytes) else yaml.safe_dump(info).encode()
            ti = tarfile.TarInfo("ymir-info.yaml")
            ti.size = len(raw)
            tar.addfile(ti, io.BytesIO(raw))
    return path


def _import(host, path, *extra, tmp=None):
    return main(["models", "--model-location", str(host.store.location), "import", "--package-path", str(path), *extra])


def _refused(host, capsys, path, pattern, *extra):
    rc = _import(host, path, *extra)
    err = capsys.readouterr().err
    assert rc == 2 and "ymir-exc: error:" in err and pattern in err, err
    assert sorted(p.name for p in host.store.location.iterdir()) == [host.good_hash]
    host.assert_unchanged()
    return err


def test_a_good_package_imports(tmp_path, host, capsys):
    p = build(tmp_path / "ok.tar.gz", [("s1/w.pt", b"w")])
    assert _import(host, p) == 0 and "pack success" in capsys.readouterr().out


@pytest.mark.parametrize(
    "members,pattern",
    [
        ([("s1/w.pt", "symlink")], "symlink member refused"),
        ([("/abs/w.pt", b"x")], "absolute member path refused"),
        ([("s1/../../w.pt", b"x")], "'..' refused"),
        ([("s1/w.pt", b"x"), ("s1/w.pt/x", b"y")], "lies under 's1/w.pt', which is a file"),
        ([("s1/w.pt", b"x"), ("s1/w.pt", b"y")], "appears twice"),
        ([("s" * 300 + "/w.pt", b"x")], "over 255 bytes"),
        ([("s" * 101 + "/w.pt", b"x")], "101 bytes of UTF-8; at most 100"),
        ([("\u00e9" * 51 + "/w.pt", b"x")], "102 bytes of UTF-8; at most 100"),
    ],
)
def test_unsafe_or_conflicting_members_are_refused(tmp_path, host, capsys, members, pattern):
    _refused(host, capsys, build(tmp_path / "bad.tar.gz", members), pattern)


def test_long_stage_name_in_info_is_refused(tmp_path, host, capsys):
    long = "s" * 120
    info = json.loads(json.dumps(INFO).replace('"s1"', f'"{long}"'))
    _refused(host, capsys, build(tmp_path / "bad.tar.gz", [(f"{long}/w.pt", b"x")], info=info), "at most 100")


def test_info_over_1_mib_is_refused_unless_allowed(tmp_path, host, capsys):
    info = dict(INFO, task_context={"executor": "x", "padding": "p" * (1 << 20)})
    p = build(tmp_path / "big-info.tar.gz", [("s1/w.pt", b"x")], info=info)
    _refused(host, capsys, p, "ymir-info.yaml is 10")
    assert _import(host, p, "--max-info-size", str(2 << 20)) == 0


def test_too_many_members_are_refused_unless_allowed(tmp_path, host, capsys):
    p = build(tmp_path / "many.tar.gz", [("s1/w.pt", b"x")] + [(f"junk/{i}", b"") for i in range(10_000)])
    _refused(host, capsys, p, "more than 10000 members")
    assert _import(host, p, "--max-members", "20000") == 0


def test_bomb_rule_override(tmp_path, host, capsys):
    p = build(tmp_path / "bomb.tar.gz", [("s1/w.pt", 70 << 20)], compresslevel=1)
    _refused(host, capsys, p, "decompression bomb")
    assert _import(host, p, "--max-expansion", "0") == 0


def test_models_list_shows_a_corrupted_package(tmp_path, host, capsys):
    store = tmp_path / "store"
    (store).mkdir()
    (store / ("ab" * 20)).write_bytes(b"\x1f\x8b not really a package")
    ModelStore(store).pack([("s1/w.pt", b"w")], INFO)
    assert main(["models", "--model-location", str(store), "list"]) == 0
    out = capsys.readouterr().out
    assert f"{'ab' * 20}  CORRUPT: not a tar.gz model package" in out and "best s1" in out


MEASURE = """
import os, resource, sys
from ymir_exc.cli import main
rc = main(sys.argv[1:])
# VmHWM: this process's own peak (ru_maxrss keeps the pytest parent's peak across fork + exec)
peak = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")][0]
print("RC", rc, "PEAK_RSS_KIB", peak, flush=True)
"""


def test_one_gib_of_zeros_is_refused_with_little_memory_and_nothing_extracted(tmp_path, host):
    p = build(tmp_path / "zeros.tar.gz", [("s1/w.pt", 1 << 30)], compresslevel=1)
    assert p.stat().st_size < 8 << 20
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            MEASURE,
            "models",
            "--model-location",
            str(host.store.location),
            "import",
            "--package-path",
            str(p),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, TMPDIR=str(tmp)),
        timeout=300,
    )
    rc, peak_kib = proc.stdout.split()[1], int(proc.stdout.split()[3])
    print(f"import of a 1 GiB member of zeros: package {p.stat().st_size} bytes, peak RSS {peak_kib / 1024:.1f} MiB")
    assert rc == "2" and "decompression bomb" in proc.stderr
    assert peak_kib < 200 * 1024
    assert list(tmp.iterdir()) == []
    assert sorted(x.name for x in host.store.location.iterdir()) == [host.good_hash]
    host.assert_unchanged()
