"""The SDK's fast paths (bench/) against their plain reference implementations.

The references live beside the fast paths in :mod:`ymir_exc._fast`: the plain per-item code
each fast path replaces; on random inputs, valid and broken, both must yield / write the same
thing and raise the same error.
"""

from __future__ import annotations

import os
import random

import pytest

from ymir_exc import _fast, monitor
from ymir_exc import dataset_reader as dr
from ymir_exc import result_writer as rw
from ymir_exc.env import DatasetType
from ymir_exc.errors import IndexFileError, ResultError

# ------------------------------------------------------------------ item_paths


def _outcome(it):
    items = []
    try:
        for pair in it:
            items.append(pair)
    except IndexFileError as e:
        return items, (type(e), str(e), e.line)
    return items, None


_ODD = ["", " ", "\t", "\t\t", "\r", "\r\n", "\u3000", "\x85", "\x0b", "é", "\u2028", "\x00", "  \t x"]


def _random_index(rnd, n, training, odd_rate):
    out = []
    for i in range(n):
        a = f"/in/assets/{i % 97:02x}/{rnd.getrandbits(64):016x}.jpg"
        b = a.replace("assets", "annotations")[:-4] + ".txt"
        line = f"{a}\t{b}" if training else a
        if rnd.random() < odd_rate:
            odd = rnd.choice(_ODD)
            where = rnd.randrange(4)
            line = [odd + line, line + odd, odd, line.replace("\t", odd)][where]
        out.append(line + ("\n" if (i < n - 1 or rnd.random() < 0.7) else ""))
    data = "".join(out).encode("utf-8")
    if rnd.random() < odd_rate:  # invalid UTF-8 somewhere
        k = rnd.randrange(len(data) + 1)
        data = data[:k] + rnd.choice([b"\xff", b"\xc3", b"\xe2\x82"]) + data[k:]
    return data


@pytest.mark.parametrize("block", [_fast._BLOCK_SIZE, 8192])
@pytest.mark.parametrize("dataset_type", [DatasetType.TRAINING, DatasetType.CANDIDATE])
def test_item_paths_matches_line_by_line_reading(ws, monkeypatch, block, dataset_type):
    monkeypatch.setattr(_fast, "_BLOCK_SIZE", block)
    name = "train-index.tsv" if dataset_type == DatasetType.TRAINING else "candidate-index.tsv"
    path = ws.in_dir / name
    rnd = random.Random(f"{block}-{dataset_type}")
    for trial in range(60):
        n = rnd.choice([0, 1, 2, 5, 300, 3000])
        odd = rnd.choice([0.0, 0.0, 0.001, 0.01, 0.2])
        path.write_bytes(_random_index(rnd, n, training=rnd.random() < 0.8, odd_rate=odd))
        got = _outcome(dr.item_paths(dataset_type))
        want = _outcome(_fast.item_path_lines(str(path), dataset_type != DatasetType.CANDIDATE))
        assert got == want, f"trial {trial}: n={n} odd={odd}"


def test_item_paths_is_lazy_and_closable(ws):
    (ws.in_dir / "train-index.tsv").write_text("/a\t/b\n/c\t/d\n")
    it = dr.item_paths(DatasetType.TRAINING)
    assert next(it) == ("/a", "/b")
    it.close()
    assert list(it) == []
    ws.write_env(input={"training_index_file": ""})
    lazy = dr.item_paths(DatasetType.TRAINING)  # no error before the first item is asked for
    with pytest.raises(IndexFileError):
        next(lazy)


# ------------------------------------------------------------------ write_mining_result


class _PathStr(str):
    pass


def _random_mining(rnd):
    import numpy as np

    n = rnd.choice([0, 1, 2, 3, 50, 5000, 9000])
    pool = [0.0, -0.0, 0.5, 1, 1e-300, 1e17, np.float32(0.25), np.int64(3), rnd.random()]
    pairs = []
    for i in range(n):
        p = f"/in/assets/{i:05d}-{rnd.getrandbits(20)}.jpg"
        s = rnd.choice(pool) if rnd.random() < 0.3 else round(rnd.random(), rnd.choice([2, 6, 17]))
        pairs.append((p, s) if rnd.random() < 0.9 else [p, s])
    if n and rnd.random() < 0.3:  # one broken item
        i = rnd.randrange(n)
        pairs[i] = rnd.choice(
            [
                (pairs[i][0], float("nan")),
                (pairs[i][0], float("inf")),
                (pairs[i][0], "0.5"),
                (pairs[i][0], True),
                ("", 0.1),
                ("/a\tb", 0.1),
                ("/a\nb", 0.1),
                (pairs[rnd.randrange(n)][0], 0.3),
                (_PathStr("/sub/class.jpg"), 0.2),
            ]
        )
    if rnd.random() < 0.1:
        return tuple(pairs)
    if rnd.random() < 0.1:
        return iter(pairs)
    return pairs


def test_write_mining_result_matches_the_reference(ws):
    rnd = random.Random(11)
    out = ws.out_dir / "result.tsv"
    for trial in range(80):
        pairs = _random_mining(rnd)
        listed = list(pairs) if not isinstance(pairs, (list, tuple)) else pairs
        if not isinstance(pairs, (list, tuple)):
            pairs = iter(listed)
        try:
            want, want_err = _fast.mining_text_plain(listed), None
        except ResultError as e:
            want, want_err = None, (str(e), e.key)
        if out.exists():
            out.unlink()
        try:
            rw.write_mining_result(pairs)
            got, got_err = out.read_text(encoding="utf-8"), None
        except ResultError as e:
            got, got_err = None, (str(e), e.key)
            assert not out.exists()
        assert (got, got_err) == (want, want_err), f"trial {trial}"


# ------------------------------------------------------------------ write_infer_result


def _random_annotation(rnd, names):
    box = {
        "x": rnd.randrange(-5, 900),
        "y": rnd.randrange(0, 900),
        "w": rnd.randrange(1, 300),
        "h": rnd.randrange(1, 300),
    }
    score = rnd.choice([0.0, 1.0, 1, 0.5, round(rnd.random(), 3), rnd.random()])
    ann = {"class_name": rnd.choice(names), "score": score, "box": box}
    r = rnd.random()
    if r < 0.05:  # a bad one, as a dict
        ann = rnd.choice(
            [
                {**ann, "score": 1.5},
                {**ann, "box": {**box, "w": 0}},
                {**ann, "class_name": 3},
                {**ann, "box": {**box, "x": 1.5}},
            ]
        )
        return ann
    if r < 0.25:
        return ann
    a = rw.Annotation(**ann)
    if r < 0.28:  # changed after validation: checked against the format when written
        a.score = rnd.choice([float("nan"), 7, True, 2.5])
    elif r < 0.30:
        a.box.x = rnd.choice([True, 3.0])
    return a


def test_write_infer_result_matches_the_reference(ws):
    rnd = random.Random(12)
    out = ws.out_dir / "infer-result.json"
    for trial in range(120):
        protocol = rnd.choice(["1.1.0", None])
        ws.write_env(protocol_version=protocol)
        class_names = rnd.choice([["cat", "dog"], ["cat", "dog", 'é "x"', "tree\\n"], []])
        ws.write_config(class_names=class_names)
        names = (class_names or ["cat"]) + (["horse"] if rnd.random() < 0.1 else [])
        data = {}
        for i in range(rnd.choice([0, 1, 3, 40])):
            folder = rnd.choice(["/in/a", "/in/b", "/in/ü"])
            name = rnd.choice([f"{i}.jpg", f"ü {i}.png", f'{i}"q.jpg']) if rnd.random() < 0.98 else ""
            anns = [_random_annotation(rnd, names) for _ in range(rnd.choice([0, 1, 10]))]
            data[f"{folder}/{name}"] = anns if rnd.random() < 0.9 else tuple(anns)
        algorithm = rnd.choice(["detection", "detection", "detection", "detection", "seg é", None, 5])
        box_key = "boxes" if protocol else "annotations"
        try:
            want, want_err = (
                _fast.infer_text_plain(data, algorithm, box_key, class_names or None, rw._validated_annotation),
                None,
            )
        except ResultError as e:
            want, want_err = None, (str(e), e.key)
        if out.exists():
            out.unlink()
        try:
            rw.write_infer_result(data, algorithm=algorithm)
            got, got_err = out.read_text(encoding="utf-8"), None
        except ResultError as e:
            got, got_err = None, (str(e), e.key)
        assert (got, got_err) == (want, want_err), f"trial {trial}"


# ------------------------------------------------------------------ result.yaml


def _random_yaml_value(rnd, depth=0):
    import math

    scalars = [
        "epoch_1",
        "w.pt",
        "a/b-c.d_e",
        "yes",
        "No",
        "null",
        "on",
        "1.0",
        "",
        "a b",
        "x: y",
        "-a",
        "é",
        "_x",
        "e5",
        "E",
        "inf",
        ".nan",
        "a" * 130,
        "~",
        "#c",
        "3",
        0,
        1,
        -7,
        10**20,
        True,
        False,
        None,
        0.0,
        -0.0,
        1.5,
        1e17,
        1e-7,
        12345678.9,
        math.nan,
        math.inf,
        -math.inf,
        0.1 + 0.2,
        3.0,
        "word " * 30,
        "a\nb",
        "tab\there",
        "x" * 90,
        "ü" * 50,
        "'q'",
        '"q"',
        "a:b",
        "@x",
        "2020-01-01",
    ]
    r = rnd.random()
    if depth < 3 and r < 0.2:
        return {
            rnd.choice(["k", "stage_name", "mAP", "yes", "a b", "x" * 130, "1", "é", "_"]) + str(i): _random_yaml_value(
                rnd, depth + 1
            )
            for i in range(rnd.choice([0, 1, 3]))
        }
    if depth < 3 and r < 0.35:
        return [
            rnd.choice(scalars) if rnd.random() < 0.9 else _random_yaml_value(rnd, depth + 1)
            for _ in range(rnd.choice([0, 1, 4]))
        ]
    return rnd.choice(scalars)


def test_result_yaml_text_is_what_safe_dump_writes():
    import yaml

    rnd = random.Random(13)
    for _ in range(3000):
        data = {
            f"key{i}" if rnd.random() < 0.8 else rnd.choice(["yes", "a b", "é", "1"]): _random_yaml_value(rnd)
            for i in range(rnd.choice([1, 2, 5]))
        }
        assert rw._yaml_dump(data) == yaml.safe_dump(data, sort_keys=False, allow_unicode=True), data


def test_model_stages_with_the_cache_match_without_it(ws, monkeypatch):
    import yaml

    ws.model_file("w.pt")
    rnd = random.Random(14)
    path = ws.out_dir / "models" / "result.yaml"

    def run(use_cache):
        if path.exists():
            path.unlink()
        texts = []
        rnd2 = random.Random(15)
        for i in range(40):
            if not use_cache:
                rw._result_cache.clear()
            if rnd2.random() < 0.1 and path.exists():  # someone else rewrites the file
                path.write_text(path.read_text() + "extra_key: 1\n")
            metrics = {"mAP": round(rnd2.random(), 3)}
            if rnd2.random() < 0.3:
                metrics.update(mAR=rnd2.random(), tp=rnd2.randrange(9))
            try:
                rw.write_model_stage(
                    f"s{rnd2.randrange(15)}",
                    ["w.pt"],
                    evaluation_result=metrics,
                    timestamp=rnd2.randrange(1000),
                    evaluate_config={"iou": 0.5} if i == 7 else None,
                )
            except ResultError as e:
                texts.append(str(e))
            texts.append(path.read_text())
        return texts

    with_cache = run(True)
    monkeypatch.setattr(rw, "_yaml_dump", lambda d: yaml.safe_dump(d, sort_keys=False, allow_unicode=True))
    assert with_cache == run(False)
    assert rnd


# ------------------------------------------------------------------ monitor


def test_monitor_skips_only_rewrites_that_would_change_nothing_but_the_time(ws, monkeypatch):
    path = ws.out_dir / "monitor.txt"
    monitor.write_monitor_logger(0.5)
    first = path.read_text()
    ino = os.stat(path).st_ino
    monitor.write_monitor_logger(0.501)  # prints as 0.50: nothing new
    assert path.read_text() == first and os.stat(path).st_ino == ino
    monitor.write_monitor_logger(0.51)
    assert path.read_text().split("\t")[2] == "0.51"
    monitor.write_monitor_logger(0.51, msg="note")  # a message is news
    assert path.read_text().endswith("note\n")
    path.write_text(first)  # changed behind our back: written again
    monitor.write_monitor_logger(0.51, msg="note")
    assert path.read_text().endswith("note\n")
    monkeypatch.setattr(monitor, "MIN_REFRESH_SECONDS", 0.0)  # the heartbeat: stale lines are refreshed
    before = path.read_text()
    monitor.write_monitor_logger(0.51, msg="note")
    assert path.read_text() != before and path.read_text().split("\t")[2:] == before.split("\t")[2:]
