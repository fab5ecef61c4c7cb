"""Streaming writers (ymir_exc.streaming): the same bytes as the one-shot writers for the same
input, bounded buffers, atomic replacement, the same validation."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ymir_exc import result_writer as rw
from ymir_exc._digests import SeenNames
from ymir_exc.errors import EnvFileError, NotSupportedError, ResultError
from ymir_exc.streaming import (
    InferResultWriter,
    MiningResultWriter,
    merge_mining_parts,
    read_mining_part,
    write_mining_part,
)

NAMES = st.text(
    alphabet=st.characters(blacklist_characters="\t\n\r/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=12
)
SCORES = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 1e-300]),
    st.integers(-5, 5),
)
BOX = st.fixed_dictionaries(
    {"x": st.integers(-5, 500), "y": st.integers(-5, 500), "w": st.integers(-2, 300), "h": st.integers(-2, 300)}
)
ANN = st.builds(
    lambda n, s, b: {"class_name": n, "score": s, "box": b},
    st.sampled_from(["cat", "dog"]),
    st.floats(min_value=0, max_value=1),
    BOX,
)
ONCE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _bytes(ws, name):
    return (ws.out_dir / name).read_bytes()


@ONCE
@given(st.dictionaries(NAMES, st.lists(ANN, max_size=4), max_size=20), st.integers(1, 200))
def test_infer_writer_gives_the_one_shot_writer_s_bytes_and_warning(ws, caplog, result, buffer_bytes):
    result = {f"/in/assets/{k[-2:]}/{k}": v for k, v in result.items()}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ymir_exc"):
        rw.write_infer_result(result)
    one_shot = _bytes(ws, "infer-result.json")
    warned = [r.getMessage().split(": ", 1)[1] for r in caplog.records]
    os.unlink(ws.out_dir / "infer-result.json")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ymir_exc"):
        with InferResultWriter(buffer_bytes=buffer_bytes) as w:
            for path, anns in result.items():
                w.add(path, anns)
    assert _bytes(ws, "infer-result.json") == one_shot
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == warned
    degenerate = sum(1 for v in result.values() for a in v if a["box"]["w"] <= 0 or a["box"]["h"] <= 0)
    assert warned == ([f"dropped {degenerate} box(es) with w or h <= 0"] if degenerate else [])


def test_infer_writer_legacy_protocol_matches_too(ws):
    ws.write_env(protocol_version="0.1.0")
    result = {"/in/x.jpg": [rw.Annotation(class_name="dog", score=0.25, box=rw.Box(x=1, y=2, w=3, h=4))]}
    rw.write_infer_result(result)
    one_shot = _bytes(ws, "infer-result.json")
    with InferResultWriter() as w:
        w.add("/in/x.jpg", result["/in/x.jpg"])
    assert _bytes(ws, "infer-result.json") == one_shot and b'"annotations"' in one_shot


@pytest.mark.parametrize(
    "adds,match",
    [
        ([("/a/x.jpg", []), ("/b/x.jpg", [])], "share the basename 'x.jpg'"),
        (
            [("/a/x.jpg", [{"class_name": "horse", "score": 0.5, "box": {"x": 0, "y": 0, "w": 1, "h": 1}}])],
            "not in class_names",
        ),
        ([("/a/x.jpg", [{"class_name": "dog", "score": 1.5, "box": {"x": 0, "y": 0, "w": 1, "h": 1}}])], "score"),
        ([("/a/", [])], "no basename"),
    ],
)
def test_infer_writer_errors_leave_the_previous_file(ws, adds, match):
    (ws.out_dir / "infer-result.json").write_text("previous")
    with pytest.raises(ResultError, match=match):
        with InferResultWriter() as w:
            for p, a in adds:
                w.add(p, a)
    assert (ws.out_dir / "infer-result.json").read_text() == "previous"
    assert not [n for n in os.listdir(ws.out_dir) if n.endswith(".tmp")]


def test_infer_writer_flushes_a_bounded_buffer(ws):
    with InferResultWriter(buffer_bytes=64) as w:
        for i in range(50):
            w.add(f"/in/{i}.jpg", [])
            assert w._size < 64 + 40  # never more than one entry past the limit
    assert w.count == 50


def test_infer_writer_refuses_segmentation(ws):
    with pytest.raises(NotSupportedError):
        InferResultWriter(algorithm="segmentation")


PAIRS = st.lists(st.tuples(NAMES, SCORES), max_size=40, unique_by=lambda t: t[0])


@ONCE
@given(PAIRS, st.integers(1, 7))
def test_mining_writer_gives_the_one_shot_writer_s_bytes(ws, pairs, run_items):
    pairs = [(f"/in/{p}", s) for p, s in pairs]
    rw.write_mining_result(pairs)
    one_shot = _bytes(ws, "result.tsv")
    os.unlink(ws.out_dir / "result.tsv")
    with MiningResultWriter(run_items=run_items) as w:  # several spilled runs, merged
        w.add_all(pairs)
    assert _bytes(ws, "result.tsv") == one_shot
    assert sorted(os.listdir(ws.out_dir)) == ["models", "result.tsv"]  # no run file left


@ONCE
@given(PAIRS, st.integers(1, 4))
def test_merged_parts_of_any_sharding_give_the_one_shot_bytes(ws, pairs, world):
    pairs = [(f"/in/{p}", s) for p, s in pairs]
    rw.write_mining_result(pairs)
    one_shot = _bytes(ws, "result.tsv")
    parts = []
    for rank in range(world):  # rank r takes candidates r, r + world, ...
        part = str(ws.root / f"part-{rank}.tsv")
        write_mining_part(part, [(i, p, s) for i, (p, s) in enumerate(pairs) if i % world == rank])
        parts.append(part)
    assert merge_mining_parts(parts, expected=len(pairs)) == len(pairs)
    assert _bytes(ws, "result.tsv") == one_shot


def test_mining_ties_keep_the_input_order_across_parts(ws):
    pairs = [("/in/a", 0.5), ("/in/b", np.float32(0.5)), ("/in/c", 1), ("/in/d", 0.5)]
    write_mining_part(str(ws.root / "p0"), [(0, "/in/a", 0.5), (2, "/in/c", 1)])
    write_mining_part(str(ws.root / "p1"), [(1, "/in/b", np.float32(0.5)), (3, "/in/d", 0.5)])
    merge_mining_parts([str(ws.root / "p0"), str(ws.root / "p1")])
    assert _bytes(ws, "result.tsv") == b"/in/c\t1.0\n/in/a\t0.5\n/in/b\t0.5\n/in/d\t0.5\n"
    rw.write_mining_result(pairs)
    assert _bytes(ws, "result.tsv") == b"/in/c\t1.0\n/in/a\t0.5\n/in/b\t0.5\n/in/d\t0.5\n"


@pytest.mark.parametrize(
    "pairs,match",
    [
        ([("/a", float("nan"))], "not finite"),
        ([("/a", "0.5")], "not a number"),
        ([("/a", True)], "not a number"),
        ([("/a", 0.1), ("/a", 0.2)], "more than once"),
        ([("/a\tb", 0.1)], "tab"),
        ([("", 0.1)], "empty"),
    ],
)
def test_mining_writer_refuses_what_the_one_shot_writer_refuses(ws, pairs, match):
    with pytest.raises(ResultError, match=match):
        rw.write_mining_result(pairs)
    with pytest.raises(ResultError, match=match):
        with MiningResultWriter(run_items=1) as w:
            w.add_all(pairs)
    assert sorted(os.listdir(ws.out_dir)) == ["models"]


def test_merge_refuses_unsorted_or_malformed_parts_and_a_wrong_count(ws):
    p = ws.root / "p"
    p.write_text("0.1\t0\t/a\n0.9\t1\t/b\n")
    with pytest.raises(ResultError, match="not sorted"):
        merge_mining_parts([str(p)])
    p.write_text("0.1 /a\n")
    with pytest.raises(ResultError) as e:
        list(read_mining_part(str(p)))
    assert e.value.line == 1 and e.value.path == str(p)
    write_mining_part(str(p), [(0, "/a", 0.1)])
    with pytest.raises(ResultError, match="expected 2"):
        merge_mining_parts([str(p)], expected=2)
    assert not (ws.out_dir / "result.tsv").exists()


def test_merge_refuses_a_non_finite_score_naming_the_part_and_line(ws):
    p = ws.root / "p"
    for bad in ("nan", "inf", "-inf"):
        p.write_text(f"0.9\t0\t/a\n{bad}\t3\t/d.jpg\n")
        with pytest.raises(ResultError, match="not finite") as e:
            merge_mining_parts([str(p)])
        assert e.value.path == str(p) and e.value.line == 2
    assert not (ws.out_dir / "result.tsv").exists()


def test_write_mining_part_refuses_an_index_given_twice(ws):
    p = ws.root / "p"
    with pytest.raises(ResultError, match="index 1 is given twice") as e:
        write_mining_part(str(p), [(1, "/b.jpg", 0.1), (1, "/c.jpg", 0.2)])
    assert "/c.jpg" in str(e.value)
    assert not p.exists()


def test_infer_writer_with_a_path_and_protocol_needs_no_env_yaml(ws, tmp_path):
    result = {"/in/x.jpg": [rw.Annotation(class_name="dog", score=0.25, box=rw.Box(x=1, y=2, w=3, h=4))]}
    rw.write_infer_result(result)
    one_shot = _bytes(ws, "infer-result.json")
    ws.env_file.unlink()
    target = tmp_path / "out.json"
    with InferResultWriter(path=str(target), protocol_version="1.0.0", class_names=["cat", "dog"]) as w:
        w.add("/in/x.jpg", result["/in/x.jpg"])
    assert target.read_bytes() == one_shot
    with pytest.raises(ResultError, match="not in class_names"):
        with InferResultWriter(path=str(target), protocol_version="1.0.0", class_names=["cat"]) as w:
            w.add("/in/x.jpg", result["/in/x.jpg"])
    assert target.read_bytes() == one_shot
    with InferResultWriter(path=str(target), protocol_version="0.1.0") as w:
        w.add("/in/x.jpg", result["/in/x.jpg"])
    assert b'"annotations"' in target.read_bytes()
    with pytest.raises(EnvFileError, match="env.yaml not found"):
        InferResultWriter(path=str(target))
    with pytest.raises(ValueError, match="protocol_version"):
        InferResultWriter(path=str(target), protocol_version="9")


def test_seen_names_finds_repeats_within_and_across_batches():
    seen = SeenNames(batch=3)
    assert [seen.add(n, n.upper()) for n in ("a", "b", "c", "d")] == [None] * 4
    assert seen.add("d", "D2") == "D2"  # within the pending batch
    assert len(seen) == 4
    seen = SeenNames(batch=3)
    for n in ("a", "b", "c", "d"):
        seen.add(n, n)
    assert seen.add("x", "x") is None
    assert seen.add("b", "b again") == "b again"  # fills the batch: merged against a, b, c
    seen = SeenNames(batch=3)
    for n in ("a", "b", "c", "d"):
        seen.add(n, n)
    assert seen.add("a", "a again") is None and seen.finish() == "a again"
    names = [f"n{i}" for i in range(5000)]  # digests of many kinds (some end with a zero byte)
    seen = SeenNames(batch=97)
    assert all(seen.add(n, n) is None for n in names) and seen.finish() is None and len(seen) == 5000
    assert [seen.add(n, n) for n in names[:96]] == [None] * 96 and seen.add(names[96], "last") == "n0"


def test_streaming_writers_catch_repeats_from_earlier_batches(ws, monkeypatch):
    monkeypatch.setattr(SeenNames.__init__, "__defaults__", (4,))
    with pytest.raises(ResultError, match=r"basename 'a\.jpg' \(the second: '/y/a\.jpg'\)"):
        with InferResultWriter() as w:
            for p in ["/x/a.jpg", "/x/b.jpg", "/x/c.jpg", "/x/d.jpg", "/x/e.jpg", "/y/a.jpg"]:
                w.add(p, [])
    assert not (ws.out_dir / "infer-result.json").exists()
    pairs = [(f"/p{i}", i / 10) for i in range(9)] + [("/p1", 0.05)]
    with pytest.raises(ResultError, match="'/p1' appears more than once"):
        with MiningResultWriter(run_items=3) as w:
            w.add_all(pairs)
    assert sorted(os.listdir(ws.out_dir)) == ["models"]
