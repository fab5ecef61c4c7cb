"""Small hostile files that would blow up memory or time: deep JSON nesting, overlong JSON
tokens, YAML alias bombs, zero-filled members of an imported package. Every reproduction runs in
a subprocess under an address-space limit and a timeout, and its peak memory and time are asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from ymir_exc.env import EnvConfig
from ymir_exc.harness import collect
from ymir_exc.harness.workspace import env_yaml

#: every measured reproduction runs under this address-space limit (bytes) and timeout (seconds)
AS_LIMIT = 1536 << 20
TIMEOUT = 60

BOUNDED = r"""
import resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
t0 = time.monotonic()
{body}
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]  # kB, this process only
print("SECONDS", time.monotonic() - t0, "PEAK_RSS_MIB", int(hwm) // 1024, flush=True)
"""


def run_bounded(body: str, *args: str) -> tuple:
    """Run ``body`` in a fresh interpreter under :data:`AS_LIMIT`; (stdout, seconds, peak RSS in MiB)."""
    code = BOUNDED.format(limit=AS_LIMIT, body=textwrap.dedent(body))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=TIMEOUT,
                          env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1].split()
    return proc.stdout, float(last[1]), int(last[3])


def _env(tmp_path):
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "in" / "candidate-index.tsv").write_text(f"{tmp_path}/in/assets/a.jpg\n")
    return EnvConfig.model_validate(env_yaml(["infer"], "t1", "1.1.0", str(tmp_path / "in"), str(tmp_path / "out")))


CHECK_INFER = """
from ymir_exc.env import EnvConfig
from ymir_exc.harness import collect
from ymir_exc.harness.workspace import env_yaml
root = sys.argv[1]
env = EnvConfig.model_validate(env_yaml(["infer"], "t1", "1.1.0", root + "/in", root + "/out"))
rep = collect.check_infer(env, ["tree"], keep_results=True)
print("PROBLEMS", rep.problems, "RESULTS", len(rep.results))
"""


def test_deeply_nested_infer_result_is_refused_in_bounded_memory(tmp_path):
    _env(tmp_path)
    depth = 200_000  # 400 KB; ijson.parse's prefixes took ~970 MB at depth 20,000 and 24 GB+ here
    (tmp_path / "out" / "infer-result.json").write_bytes(b'{"detection": ' + b"[" * depth + b"]" * depth + b"}")
    out, seconds, peak = run_bounded(CHECK_INFER, str(tmp_path))
    print("measured", seconds, "s", peak, "MiB")
    assert f"nested deeper than {collect.MAX_JSON_DEPTH} levels (refused)" in out and "RESULTS 0" in out
    assert seconds < 5 and peak < 200, (seconds, peak)


@pytest.mark.parametrize("token", [b'"' + b"k" * (64 << 20) + b'"',             # a 64 MiB key
                                   b'"' + b'\\"' * (32 << 20) + b'"',           # a key of escaped quotes
                                   b'"a": {"boxes": [' + b"7" * (64 << 20) + b"]}"])  # a 64 MiB number
def test_overlong_json_token_is_refused_in_linear_time(tmp_path, token):
    _env(tmp_path)
    body = token + b': {"boxes": []}' if token.endswith(b'"') else token
    (tmp_path / "out" / "infer-result.json").write_bytes(b'{"detection": {' + body + b"}}")
    del body, token
    out, seconds, peak = run_bounded(CHECK_INFER, str(tmp_path))
    print("measured", seconds, "s", peak, "MiB")
    assert f"a string or number longer than {collect.MAX_JSON_TOKEN_BYTES} bytes (refused)" in out
    assert seconds < 5 and peak < 200, (seconds, peak)  # ijson alone: 4 MB 0.08 s, 16 MB 1 s, quadratic


def test_tokens_up_to_the_bound_and_long_number_arrays_pass(tmp_path):
    env = _env(tmp_path)
    key = "a" * (collect.MAX_JSON_TOKEN_BYTES - 20) + '\\"x.jpg'  # long, with an escaped quote
    polygon = ",".join(["12345"] * 100_000)  # 600 KB of numbers without a quote: not one long token
    text = '{"detection": {"%s": {"boxes": []}, "b.jpg": {"boxes": [], "poly": [%s]}}}' % (key, polygon)
    (tmp_path / "out" / "infer-result.json").write_text(text)
    rep = collect.check_infer(env, ["tree"], keep_results=True)
    assert rep.images == 2 and not any("longer than" in p or "nested" in p for p in rep.problems), rep.problems
    # one byte over the bound, split across the scan's chunks, is refused
    (tmp_path / "out" / "infer-result.json").write_text(
        '{"detection": {"a.jpg": {"boxes": []}, "pad": "%s", "%s": 1}}'
        % ("p" * (collect._SCAN_CHUNK - 40), "q" * (collect.MAX_JSON_TOKEN_BYTES + 1)))
    assert "longer than" in collect.check_infer(env, ["tree"]).problems[0]
    (tmp_path / "out" / "infer-result.json").write_text(
        '{"detection": {"a.jpg": {"boxes": [], "deep": %s1%s}}}' % ("[" * 60, "]" * 60))
    assert collect.check_infer(env, ["tree"]).problems == []
