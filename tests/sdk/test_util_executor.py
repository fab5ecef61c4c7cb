import os
import signal
import subprocess
import sys
import textwrap

import pytest
import yaml

from ymir_exc import util
from ymir_exc.code import ExecutorReturnCode as RC
from ymir_exc.errors import ConfigFileError
from ymir_exc.executor import Executor, return_code_for


def test_merged_config_has_param_and_ymir(ws):
    ws.write_config(class_names=["a"], epochs=3)
    cfg = util.get_merged_config()
    assert cfg.param.epochs == 3 and cfg.param.class_names == ["a"]
    assert cfg.ymir.output.models_dir == f"{ws.out_dir}/models"


def test_code_config_is_used_only_with_git_url(ws, tmp_path):
    code_cfg = tmp_path / "code.yaml"
    code_cfg.write_text("lr: 0.1\nepochs: 100\n")
    ws.write_config(code_config=str(code_cfg), epochs=3)
    assert "lr" not in util.get_merged_config().param
    ws.write_config(code_config=str(code_cfg), git_url="https://example.invalid/x.git", epochs=3)
    p = util.get_merged_config().param
    assert p.lr == 0.1 and p.epochs == 3


def test_get_weight_files_by_task_and_suffix(ws):
    models = ws.in_dir / "models" / "s1"
    models.mkdir(parents=True)
    (models / "a.pt").write_bytes(b"x")
    (models / "b.onnx").write_bytes(b"x")
    ws.write_config(pretrained_model_params=[str(models / "a.pt"), str(models / "b.onnx"), "s1/missing.pt"])
    assert util.get_weight_files(util.get_merged_config()) == [str(models / "a.pt")]
    ws.write_env(run_training=False, run_infer=True)
    ws.write_config(model_params_path=["s1/b.onnx"])
    assert util.get_weight_files(util.get_merged_config(), suffix=".onnx") == [f"{ws.in_dir}/models/s1/b.onnx"]


def test_get_bool(ws):
    ws.write_config(a="False", b=1, c="T", d="maybe", e=2, f="yes")
    cfg = util.get_merged_config()
    assert util.get_bool(cfg, "a") is False and util.get_bool(cfg, "b") is True and util.get_bool(cfg, "c") is True
    assert util.get_bool(cfg, "missing", default=False) is False
    assert util.get_bool(cfg, key="missing", default_value=False) is False
    assert util.get_bool(cfg, "missing") is True
    for bad in ("d", "e", "f"):  # upstream accepts t/true/1 and f/false/0 only
        with pytest.raises(ConfigFileError):
            util.get_bool(cfg, bad)


def test_saved_file_patterns(ws):
    ws.write_config(ymir_saved_file_patterns="best, .*\\.onnx$")
    cfg = util.get_merged_config()
    assert util.filter_saved_files(cfg, ["best.pt", "last.pt", "m.onnx"]) == ["best.pt", "m.onnx"]
    ws.write_config(ymir_saved_file_patterns="best, ([")
    # an invalid pattern is dropped (with a warning); the others still apply
    assert util.filter_saved_files(util.get_merged_config(), ["best.pt", "last.pt"]) == ["best.pt"]


def test_write_ymir_training_result_numeric_id(ws):
    w = ws.model_file("best.pt")
    ws.model_file("last.pt")
    ws.write_config(ymir_saved_file_patterns="best")
    util.write_ymir_training_result(
        util.get_merged_config(), [str(w), str(ws.out_dir / "models/last.pt")], id=5, map50=0.4
    )
    r = ws.result()
    assert r["model_stages"]["stage_5"]["files"] == ["best.pt"] and r["mAP"] == 0.4
    # the patterns leave no file: nothing is written (upstream's way to choose the stages)
    util.write_ymir_training_result(util.get_merged_config(), ["/x/last.pt"], id="last", map50=0.1)
    assert ws.result() == r


def test_format_saved_files_copies_outside_files(ws, tmp_path):
    src = tmp_path / "x.pt"
    src.write_bytes(b"1")
    assert util.format_saved_files(util.get_merged_config(), [str(src)]) == ["x.pt"]
    assert (ws.out_dir / "models" / "x.pt").exists()


@pytest.mark.parametrize(
    "exc,code",
    [
        (MemoryError(), RC.RC_EXEC_OOM),
        (RuntimeError("CUDA out of memory. Tried to allocate"), RC.RC_EXEC_OOM),
        (RuntimeError("CUDA error: device-side assert"), RC.RC_EXEC_CUDA_ERROR),
        (ConfigFileError("x"), RC.RC_EXEC_CONFIG_ERROR),
        (ValueError("something else"), RC.RC_CMD_CONTAINER_ERROR),
    ],
)
def test_exceptions_map_to_return_codes(exc, code):
    assert return_code_for(exc) == code


def test_executor_writes_state_4_and_returns_1_on_failure(ws, capsys):
    def train(cfg):
        raise MemoryError("too big")

    assert Executor(training=train).run() == 1
    first = ws.monitor_text().splitlines()[0].split("\t")
    assert first[3:] == ["4", str(RC.RC_EXEC_OOM)]
    assert "MemoryError: too big" in ws.monitor_text()
    assert "Traceback" in capsys.readouterr().err


def test_executor_dispatches_and_writes_done(ws):
    seen = []
    assert Executor(training=lambda cfg: seen.append(cfg.ymir.task_id)).run() == 0
    assert seen == ["t-test"] and ws.monitor_text().split("\t")[2:4] == ["1.00", "3"]


def test_executor_refuses_an_unsupported_task(ws):
    ws.write_env(run_training=False, run_mining=True)
    assert Executor(training=lambda cfg: None).run() == 1
    assert ws.monitor_text().splitlines()[0].split("\t")[4] == str(RC.RC_EXEC_CONFIG_ERROR)


def test_result_yaml_survives_a_writer_killed_mid_write(ws):
    """A writer process killed while rewriting result.yaml leaves the previous, valid file."""
    ws.model_file("w.pt")
    from ymir_exc import result_writer as rw

    rw.write_model_stage("s0", ["w.pt"], mAP=0.5, timestamp=1)
    before = (ws.out_dir / "models" / "result.yaml").read_text()
    script = textwrap.dedent(f"""
        import os, sys
        from ymir_exc import _io
        big = "x" * (64 << 20)
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        while True:
            _io.atomic_write({str(ws.out_dir / "models" / "result.yaml")!r}, big)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    text = (ws.out_dir / "models" / "result.yaml").read_text()
    # either the old file or a complete new one: never a truncated one
    assert text == before or text == "x" * (64 << 20)
    if text == before:
        assert yaml.safe_load(text)["best_stage_name"] == "s0"
    leftovers = [p for p in os.listdir(ws.out_dir / "models") if p.endswith(".tmp")]
    assert all(p.startswith(".result.yaml.") for p in leftovers)
