"""collect on hostile result files: streamed, bounded memory, precise problems, and the
5-million-line memory test."""

import json
import subprocess
import sys
import time

import pytest

from ymir_exc.env import EnvConfig
from ymir_exc.harness import collect
from ymir_exc.harness.workspace import env_yaml


def _env(tmp_path, tasks=("mining", "infer")):
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "out").mkdir(exist_ok=True)
    return EnvConfig.model_validate(env_yaml(list(tasks), "t1", "1.1.0", str(tmp_path / "in"), str(tmp_path / "out")))


def _cands(tmp_path, names):
    paths = [f"{tmp_path}/in/assets/{n[-2:]}/{n}.jpg" for n in names]
    (tmp_path / "in" / "candidate-index.tsv").write_text("".join(p + "\n" for p in paths))
    return paths


def test_mining_ranks_stably_and_reports_every_kind_of_problem(tmp_path):
    env = _env(tmp_path)
    a, b, c, d = _cands(tmp_path, ["aa01", "bb02", "cc03", "dd04"])
    (tmp_path / "out" / "result.tsv").write_bytes(
        f"{a}\t0.9\n{b}\t0.5\n{a}\t0.1\n\nunknown.jpg\t0.4\n{c}\t0.7\n{c}x\tnan\n{c}\tnot-a-number\n".encode()
        + b"\xff\xfe\t0.3\n"
        + b"cc03\t0.2\n"
    )
    rep = collect.check_mining(env)
    assert list(rep.ranked) == [(a, 0.9), (c, 0.7), (b, 0.5), ("unknown.jpg", 0.4), ("cc03", 0.2)]
    assert rep.ranked[:2] == [(a, 0.9), (c, 0.7)] and len(rep.ranked) == 5
    assert rep.duplicates == 1 and rep.unknown == 1 and rep.blank == 1 and rep.missing == 1  # d has no score
    text = "\n".join(rep.problems)
    for expected in (
        "result.tsv:7: score 'nan' is not finite",
        "result.tsv:8: score 'not-a-number' is not a number",
        "result.tsv:9: not UTF-8",
        "result.tsv:6: scores are not sorted",
        "1 blank line(s)",
        f"1 duplicate path(s), e.g. {a}",
        "1 path(s) not among the candidates, e.g. unknown.jpg",
        f"1 candidate(s) without a score, e.g. {d}",
    ):
        assert expected in text, (expected, text)


def test_a_nan_score_is_one_problem_not_also_a_candidate_without_a_score(tmp_path):
    env = _env(tmp_path)
    a, b = _cands(tmp_path, ["aa01", "bb02"])
    (tmp_path / "out" / "result.tsv").write_text(f"{a}\t0.9\n{b}\tnan\n")
    rep = collect.check_mining(env)
    assert rep.problems == [
        "result.tsv:2: score 'nan' is not finite".replace("result.tsv", str(tmp_path / "out" / "result.tsv"))
    ]
    assert rep.missing == 0


def test_mining_result_link_is_refused(tmp_path):
    env = _env(tmp_path)
    _cands(tmp_path, ["aa01"])
    secret = tmp_path / "secret"
    secret.write_text("x\t1\n")
    (tmp_path / "out" / "result.tsv").symlink_to(secret)
    rep = collect.check_mining(env)
    assert len(rep.ranked) == 0 and "result.tsv: a symbolic link (refused" in rep.problems[0]


def test_infer_is_streamed_and_checked_key_by_key(tmp_path):
    env = _env(tmp_path)
    _cands(tmp_path, ["aa01", "bb02", "cc03"])
    box = {"class_name": "tree", "score": 0.5, "box": {"x": 1, "y": 2, "w": 3, "h": 4}}
    text = (
        '{"detection": {"aa01.jpg": {"boxes": [%s, %s]}, "aa01.jpg": {"boxes": []}, "zz.jpg": {"boxes": []},'
        ' "bb02.jpg": {"boxes": "no"}}}' % (json.dumps(box), json.dumps(dict(box, score=2)))
    )
    (tmp_path / "out" / "infer-result.json").write_text(text)
    rep = collect.check_infer(env, ["tree"])
    assert rep.images == 3 and rep.boxes == 1 and rep.with_boxes == 1 and rep.dropped["score not in [0, 1]"] == 1
    assert rep.duplicates == 1 and rep.unknown == 1 and rep.missing == 1
    text = "\n".join(rep.problems)
    assert "detection.bb02.jpg: no 'boxes' list" in text and "1 key(s) repeated" in text
    assert "1 candidate(s) without an entry, e.g. cc03.jpg" in text
    kept = collect.check_infer(env, ["tree"], keep_results=True).results
    assert kept["aa01.jpg"] == [] and kept["zz.jpg"] == [] and "bb02.jpg" not in kept  # the last "aa01.jpg" wins
    assert collect.check_infer(env, ["tree"]).results is None


@pytest.mark.parametrize(
    "content,problem",
    [
        ("[1, 2]", "the top level is not an object"),
        ('{"detection": [', "not valid JSON"),
        ('{"other": {}}', "no 'detection' object"),
    ],
)
def test_infer_layout_problems(tmp_path, content, problem):
    env = _env(tmp_path)
    (tmp_path / "out" / "infer-result.json").write_text(content)
    assert problem in collect.check_infer(env, ["tree"]).problems[0]


def test_monitor_check(tmp_path):
    env = _env(tmp_path)
    mon = tmp_path / "out" / "monitor.txt"
    mon.write_text(f"t1\t{time.time()}\t1.00\t3\t0\n")
    assert collect.check_monitor(env, "t1") == []
    mon.write_text("garbage")
    assert "not a monitor file" in collect.check_monitor(env, "t1")[0]
    mon.write_text(f"t2\t{time.time()}\t1.00\t3\t0\n")
    assert "task id 't2'" in collect.check_monitor(env, "t1")[0]


MEASURE = r"""
import resource, sys, time
from ymir_exc.env import EnvConfig
from ymir_exc.harness import collect
from ymir_exc.harness.workspace import env_yaml
root = sys.argv[1]
env = EnvConfig.model_validate(env_yaml(["mining"], "t1", "1.1.0", root + "/in", root + "/out"))
t0 = time.monotonic()
rep = collect.check_mining(env)
# VmHWM: this process's own peak (ru_maxrss keeps the pytest parent's peak across fork + exec)
peak = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")][0]
print(len(rep.ranked), rep.unknown, rep.ranked[0][0], rep.ranked[-1][0], round(time.monotonic() - t0, 1), peak,
      flush=True)
"""

LINES = 5_000_000


@pytest.mark.slow
def test_five_million_result_lines_stay_within_the_memory_bound(tmp_path):
    """Peak RSS of a child collecting 5,000,000 lines <= 200 MB + 40 bytes a line (400 MB)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "in" / "candidate-index.tsv").write_text("".join(f"/in/assets/{i:040x}.jpg\n" for i in range(1000)))
    with open(tmp_path / "out" / "result.tsv", "w") as f:
        step = 100_000
        for s in range(0, LINES, step):
            f.write("".join(f"/in/assets/{i:040x}.jpg\t{1 - i / LINES:.7f}\n" for i in range(s, s + step)))
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    n, unknown, first, last, seconds, peak_kib = proc.stdout.split()
    bound = 200e6 + 40 * LINES
    print(
        f"collect of {LINES} result.tsv lines: {seconds} s, peak RSS {int(peak_kib) * 1024 / 1e6:.0f} MB "
        f"(bound {bound / 1e6:.0f} MB)"
    )
    assert int(n) == LINES and int(unknown) == LINES - 1000
    assert first == f"/in/assets/{0:040x}.jpg" and last == f"/in/assets/{LINES - 1:040x}.jpg"
    assert int(peak_kib) * 1024 <= bound
