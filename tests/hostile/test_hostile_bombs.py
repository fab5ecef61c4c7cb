"""Small hostile files that would blow up memory or time: deep JSON nesting, overlong JSON
tokens, YAML alias bombs, zero-filled members of an imported package. Every reproduction runs in
a subprocess under an address-space limit and a timeout, and its peak memory and time are asserted."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

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
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1].split()
    return proc.stdout + proc.stderr, float(last[1]), int(last[3])


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


@pytest.mark.parametrize(
    "token",
    [
        b'"' + b"k" * (64 << 20) + b'"',  # a 64 MiB key
        b'"' + b'\\"' * (32 << 20) + b'"',  # a key of escaped quotes
        b'"a": {"boxes": [' + b"7" * (64 << 20) + b"]}",
    ],
)  # a 64 MiB number
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
        % ("p" * (collect._SCAN_CHUNK - 40), "q" * (collect.MAX_JSON_TOKEN_BYTES + 1))
    )
    assert "longer than" in collect.check_infer(env, ["tree"]).problems[0]
    (tmp_path / "out" / "infer-result.json").write_text(
        '{"detection": {"a.jpg": {"boxes": [], "deep": %s1%s}}}' % ("[" * 60, "]" * 60)
    )
    assert collect.check_infer(env, ["tree"]).problems == []


def laughs(levels: int = 10, indent: str = "") -> str:
    """A "billion laughs" YAML mapping: ``levels`` anchors, each a list of 9 aliases of the previous
    one (9**10 = 3.5 billion strings once expanded) in under 400 bytes."""
    lines = [f"{indent}a: &a [" + ",".join(["lol"] * 9) + "]"]
    for i in range(1, levels):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{indent}{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_parse_yaml_text_refuses_alias_bombs_but_not_shared_objects():
    import yaml

    from ymir_exc.env import MAX_YAML_NODES, parse_yaml_text, yaml_expanded_nodes
    from ymir_exc.errors import ConfigFileError

    with pytest.raises(
        ConfigFileError, match=f"cfg.yaml: not valid YAML: its aliases expand to more than {MAX_YAML_NODES} nodes"
    ):
        parse_yaml_text("class_names: [a]\nbomb:\n" + laughs(indent="  "), ConfigFileError, "cfg.yaml")
    with pytest.raises(ConfigFileError, match="recursive alias"):
        parse_yaml_text("a: &a [1, *a]\n", ConfigFileError, "cfg.yaml")
    with pytest.raises(ConfigFileError, match="nested too deeply"):
        parse_yaml_text("[" * 20000, ConfigFileError, "cfg.yaml")
    shared = {"k": [1, 2, 3]}
    text = yaml.safe_dump({"x": shared, "y": [shared] * 100})  # safe_dump writes &id001 / *id001
    assert "*id001" in text and parse_yaml_text(text, ConfigFileError, "c.yaml")["y"][99] == shared
    one = 1 + 1 + (1 + 3)  # {"k": [1, 2, 3]}: the mapping, its key, the list and its 3 items
    assert yaml_expanded_nodes({"x": shared, "y": [shared] * 100}) == 1 + (1 + one) + (1 + 1 + 100 * one)
    assert yaml_expanded_nodes(yaml.safe_load(laughs(3))) == 1 + 3 + (1 + 9) + (1 + 9 * 10) + (1 + 9 * 91)


IMPORT = """
from ymir_exc.cli import main
print("RC", main(sys.argv[1:]))
"""


def test_alias_bomb_in_ymir_info_is_refused_by_models_import(tmp_path):
    import io
    import tarfile

    from hostile_util import Host

    host = Host(tmp_path / "host")
    info = (
        "unknown:\n" + laughs(indent="  ") + "executor_config:\n  class_names: [tree]\n  bomb: *j\n"
        "task_context: {executor: x}\nstages: {s1: {stage_name: s1, files: [w.pt], timestamp: 1, mAP: 0.5}}\n"
        "best_stage_name: s1\npackage_version: 2.0.0\n"
    )
    assert len(laughs()) < 400
    pkg = tmp_path / "bomb.tar.gz"
    with tarfile.open(pkg, "w:gz") as tar:
        for name, data in (("s1/w.pt", b"w"), ("ymir-info.yaml", info.encode())):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    out, seconds, peak = run_bounded(
        IMPORT, "models", "--model-location", str(host.store.location), "import", "--package-path", str(pkg)
    )
    print("measured", seconds, "s", peak, "MiB")
    assert "RC 2" in out and "ymir-info.yaml is not valid YAML: its aliases expand to more than" in out, out
    assert seconds < 10 and peak < 200  # before: 9 GB and still growing
    host.assert_unchanged()


RUN = """
from ymir_exc.cli import main
print("RC", main(sys.argv[1:]))
"""


def test_alias_bomb_in_result_yaml_fails_the_run(tmp_path):
    from hostile_util import Host, make_executor

    host = Host(tmp_path / "host")
    result = (
        laughs() + "evaluate_config:\n  bomb: *j\nbest_stage_name: s1\n"
        "model_stages: {s1: {stage_name: s1, files: [w.pt], timestamp: 1, mAP: 0.5}}\n"
    )
    ex = make_executor(
        tmp_path / "ex",
        f"""
        os.makedirs(OUT + "/models", exist_ok=True)
        open(OUT + "/models/w.pt", "wb").write(b"w")
        open(OUT + "/models/result.yaml", "w").write({result!r})
        monitor()
    """,
    )
    out, seconds, peak = run_bounded(
        RUN,
        "run",
        str(ex),
        "--dataset",
        str(host.voc),
        "--work-dir",
        str(tmp_path / "w"),
        "--model-location",
        str(host.store.location),
        "--quiet",
    )
    print("measured", seconds, "s", peak, "MiB")
    assert "RC 3" in out and "result.yaml: not valid YAML: its aliases expand to more than" in out, out
    assert seconds < 30 and peak < 300
    assert sorted(p.name for p in host.store.location.iterdir()) == [host.good_hash]  # nothing packed
    host.assert_unchanged()


def test_local_out_folder_is_not_world_writable(tmp_path):
    """Only a container (which may run as another --user, or a mapped uid) gets a 0o777 out/; in a
    local run any local user could otherwise drop files or links into it while the executor runs."""
    from ymir_exc.harness.datasets import load_sample
    from ymir_exc.harness.workspace import PrepareOptions, prepare

    local = prepare(tmp_path / "l", load_sample("trees"), ["training"], {"training": {}}, task_id="t")
    assert (local.out_dir.stat().st_mode & 0o777) == 0o755
    box = prepare(
        tmp_path / "c",
        load_sample("trees"),
        ["training"],
        {"training": {}},
        PrepareOptions(container=True),
        task_id="t",
    )
    assert (box.out_dir.stat().st_mode & 0o777) == 0o777


def test_bomb_split_into_members_under_the_member_limit_is_refused(tmp_path, monkeypatch):
    """17 members of 63 MiB of zeros (each under --bomb-member-size) in a ~1 MB package: refused by
    the total (over 1 GiB and 100 x the package), without extracting anything."""
    import io
    import tarfile

    from hostile_util import Host

    host = Host(tmp_path / "host")
    pkg = tmp_path / "split.tar.gz"
    zeros = bytes(63 << 20)
    with tarfile.open(pkg, "w:gz", compresslevel=1) as tar:
        info = (
            b"executor_config: {class_names: [tree]}\ntask_context: {executor: x}\n"
            b"stages: {s1: {stage_name: s1, files: [w.pt], timestamp: 1, mAP: 0.5}}\nbest_stage_name: s1\n"
        )
        for name, data in [("ymir-info.yaml", info)] + [(f"s1/z{i}.bin", zeros) for i in range(17)]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    del zeros
    assert pkg.stat().st_size < (1 << 30) / 100
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    out, seconds, peak = run_bounded(
        IMPORT, "models", "--model-location", str(host.store.location), "import", "--package-path", str(pkg)
    )
    print("measured", pkg.stat().st_size, "bytes", seconds, "s", peak, "MiB")
    assert "RC 2" in out and f"over {1 << 30} bytes in all: refused as a decompression bomb" in out, out
    assert seconds < 15 and peak < 200  # before: imported after 90 s
    assert list(tmp.iterdir()) == []
    host.assert_unchanged()
    from ymir_exc.harness.models import ImportLimits, scan_package

    info, members = scan_package(pkg, ImportLimits(bomb_total_bytes=2 << 30))  # the floor is a limit to raise
    assert len(members) == 18 and info["best_stage_name"] == "s1"


def test_deep_infer_result_fails_the_run_before_predictions_are_written(tmp_path):
    """The run collects (and refuses) infer-result.json before predictions.json is built from it."""
    from hostile_util import Host, make_executor

    host = Host(tmp_path / "host")
    ex = make_executor(
        tmp_path / "ex",
        """
        open(OUT + "/infer-result.json", "w").write('{"detection": ' + "[" * 200000 + "]" * 200000 + "}")
        monitor()
    """,
    )
    out, seconds, peak = run_bounded(
        RUN,
        "run",
        str(ex),
        "--dataset",
        str(host.voc),
        "--work-dir",
        str(tmp_path / "w"),
        "--model-location",
        str(host.store.location),
        "--quiet",
        "--task",
        "infer",
        "--model",
        host.good_hash,
    )
    print("measured", seconds, "s", peak, "MiB")
    assert "RC 3" in out and "infer-result.json: nested deeper than 64 levels (refused)" in out, out
    assert not (tmp_path / "w" / "predictions.json").exists() and seconds < 30 and peak < 300
    host.assert_unchanged()
