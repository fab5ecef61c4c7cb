import pytest

from ymir_exc import monitor, util
from ymir_exc.code import ExecutorReturnCode, ExecutorState
from ymir_exc.errors import MonitorError


def _fields(ws):
    return ws.monitor_text().splitlines()[0].split("\t")


def test_monitor_line_format(ws):
    monitor.write_monitor_logger(0.25)
    tid, ts, pct, state, rc = _fields(ws)
    assert (tid, pct, state, rc) == ("t-test", "0.25", "2", "0") and float(ts) > 1e9


@pytest.mark.parametrize("bad", [-0.1, 1.01, float("nan"), "0.5", None])
def test_percent_outside_0_1_is_refused(ws, bad):
    with pytest.raises(MonitorError):
        monitor.write_monitor_logger(bad)


def test_writes_the_state_given_as_upstream(ws):
    # upstream: percent:.2f and the state as given; 1.0 running stays running
    monitor.write_monitor_logger(0.999)
    assert _fields(ws)[2:4] == ["1.00", "2"]
    monitor.write_monitor_logger(1.0)
    assert _fields(ws)[2:5] == ["1.00", "2", "0"]
    monitor.write_monitor_logger(1.0, ExecutorState.ES_DONE)
    assert _fields(ws)[2:4] == ["1.00", "3"]


def test_progress_never_goes_backwards(ws):
    monitor.write_monitor_logger(0.5)
    monitor.write_monitor_logger(0.2)
    assert _fields(ws)[2] == "0.50"


def test_error_state_with_message(ws):
    monitor.write_monitor_logger(0.3, ExecutorState.ES_ERROR, ExecutorReturnCode.RC_EXEC_OOM, msg="boom\ntrace")
    lines = ws.monitor_text().splitlines()
    assert lines[0].split("\t")[2:] == ["0.30", "4", "300103"] and lines[1:] == ["boom", "trace"]


def test_mining_and_infer_share_progress(ws):
    ws.write_env(run_training=False, run_mining=True, run_infer=True)
    cfg = util.get_merged_config()
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "mining", 0.5)
    assert _fields(ws)[2] == "0.25"
    monitor.write_monitor_logger_for_multiple_tasks(cfg, monitor.YmirTask.INFER, 0.5)
    assert _fields(ws)[2] == "0.75"
    # a task env.yaml does not enable is written as is, as upstream (never an error)
    monitor.write_monitor_logger_for_multiple_tasks(cfg, "training", 0.9)
    assert _fields(ws)[2] == "0.90"
    with pytest.raises(MonitorError):
        monitor.write_monitor_logger_for_multiple_tasks(cfg, "no-such-task", 0.5)


def test_ymir_stage_progress_mapping(ws):
    w = util.YmirStageWeight([0.1, 0.8, 0.1])
    assert util.get_ymir_process(util.YmirStage.TASK, 0.5, weights=w) == pytest.approx(0.1 + 0.4)
    assert util.get_ymir_process(util.YmirStage.POSTPROCESS, 1.0, task_idx=1, task_num=2) == pytest.approx(1.0)
    util.write_ymir_monitor_process(
        util.get_merged_config(), "training", 0.5, util.YmirStage.PREPROCESS, stage_weights=w
    )
    assert _fields(ws)[2] == "0.05"


def test_write_error_uses_the_errors_return_code(ws):
    from ymir_exc.errors import IndexFileError

    monitor.write_error(IndexFileError("blank line", path="/in/train-index.tsv", line=3))
    first, msg = ws.monitor_text().splitlines()[:2]
    assert first.split("\t")[3:] == ["4", "300002"] and "/in/train-index.tsv:3" in msg


def test_tensorboard_text_and_scalars_are_written(ws):
    monitor.write_tensorboard_text("hello", tag="note")
    monitor.write_tensorboard_scalars({"train/loss": 0.5}, step=1)
    monitor.close_tensorboard_writers()
    files = list((ws.out_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert files and all(f.stat().st_size > 0 for f in files)


def test_tensorboard_keeps_every_step_written_within_one_second(ws):
    import struct

    from tensorboardX.proto.event_pb2 import Event

    for step in range(5):
        monitor.write_tensorboard_scalars({"train/loss": 1.0 / (step + 1)}, step=step)
    monitor.close_tensorboard_writers()
    steps = []
    for f in (ws.out_dir / "tensorboard").glob("events.out.tfevents.*"):
        data = f.read_bytes()
        pos = 0
        while pos < len(data):  # TFRecord: u64 length, u32 crc, payload, u32 crc
            (n,) = struct.unpack("<Q", data[pos : pos + 8])
            ev = Event.FromString(data[pos + 12 : pos + 12 + n])
            pos += 12 + n + 4
            if ev.summary.value:
                steps.append(ev.step)
    assert sorted(steps) == [0, 1, 2, 3, 4]


def test_unparsable_env_yaml_reports_to_the_harness_monitor_file(ws, monkeypatch):
    ws.env_file.write_text("task_id: [broken\n")
    hint = ws.out_dir / "monitor.txt"
    monkeypatch.setenv("YMIR_EXC_MONITOR_FILE", str(hint))
    monitor.write_error(RuntimeError("boom"))
    assert hint.read_text().splitlines()[0].split("\t")[3] == "4"
