import json

from ymir_exc.task import Detection, Task


def test_typed_task_reads_items_and_writes_every_result(ws):
    img = ws.in_dir / "a.jpg"
    anno = ws.in_dir / "a.txt"
    anno.write_text("1, 0, 0, 9, 19\n")
    (ws.in_dir / "train-index.tsv").write_text(f"{img}\t{anno}\n")
    (ws.in_dir / "candidate-index.tsv").write_text(f"{img}\n")
    ws.write_config(class_names=["cat", "dog"], export_format="ark:raw", gpu_id="0,1")
    task = Task.current()
    assert task.tasks == ["training"] and task.gpu_ids == [0, 1] and task.count("train") == 1
    [item] = list(task.items("train"))
    assert (item.boxes[0].class_name, item.boxes[0].w, item.boxes[0].h) == ("dog", 10, 20)
    task.progress(0.4)
    assert ws.monitor_text().split("\t")[2] == "0.40"
    ws.model_file("w.pt")
    task.save_stage("epoch_1", ["w.pt"], mAP=0.5, mAR=0.6)
    assert ws.result()["model_stages"]["epoch_1"]["mAR"] == 0.6
    task.save_mining({"/a.jpg": 0.1, "/b.jpg": 0.7})
    assert (ws.out_dir / "result.tsv").read_text().splitlines()[0].startswith("/b.jpg\t")
    task.save_infer({str(img): [Detection("cat", 0.5, 1, 2, 3, 4)]})
    data = json.loads((ws.out_dir / "infer-result.json").read_text())
    assert data["detection"]["a.jpg"]["boxes"][0]["box"] == {"x": 1, "y": 2, "w": 3, "h": 4}


# ---------------------------------------------------------------- Executor hands out a Task


def _mining_and_infer(ws):
    img = ws.in_dir / "a.jpg"
    (ws.in_dir / "candidate-index.tsv").write_text(f"{img}\n")
    ws.write_env(run_training=False, run_mining=True, run_infer=True)
    ws.write_config(class_names=["cat"], model_params_path=["m.json"])
    return img


def test_executor_passes_a_task_to_task_functions(ws):
    from ymir_exc.executor import Executor

    seen = []

    def train(task):
        seen.append((type(task).__name__, task.running, task.class_names, task.env.task_id))
        task.progress(0.5)

    assert Executor(training=train).run() == 0
    assert seen == [("Task", "training", ["cat", "dog"], "t-test")]


def test_executor_class_setup_runs_once_and_mining_and_infer_share_its_model(ws):
    from ymir_exc.executor import Executor

    img = _mining_and_infer(ws)
    calls = []

    class Model:
        def __init__(self):
            calls.append("init")

        def setup(self, task):
            calls.append(("setup", task.running, task.tasks))
            self.model = object()  # stands for a loaded model

        def mine(self, task):
            calls.append(("mine", id(self.model)))
            task.progress(1.0)  # mining's share: half of the run
            assert ws.monitor_text().split("\t")[2] == "0.50"
            task.save_mining({str(img): 0.3})

        def infer(self, task):
            calls.append(("infer", id(self.model)))
            task.save_infer({str(img): [Detection("cat", 0.9, 1, 2, 3, 4)]})

    assert Executor(Model).run() == 0
    assert calls[:2] == ["init", ("setup", None, ["mining", "infer"])]
    (mine_call, mine_id), (infer_call, infer_id) = calls[2:]
    assert (mine_call, infer_call) == ("mine", "infer") and mine_id == infer_id
    assert (ws.out_dir / "result.tsv").read_text().startswith(f"{img}\t")
    assert ws.monitor_text().split("\t")[2:4] == ["1.00", "3"]


def test_executor_accepts_an_instance_and_refuses_a_task_its_class_lacks(ws):
    from ymir_exc.code import ExecutorReturnCode as RC
    from ymir_exc.executor import Executor

    class OnlyInfer:
        def infer(self, task):
            raise AssertionError("not reached: mining is enabled too")

    _mining_and_infer(ws)
    assert Executor(OnlyInfer()).run() == 1
    assert ws.monitor_text().splitlines()[0].split("\t")[3:] == ["4", str(RC.RC_EXEC_CONFIG_ERROR)]
    assert "does not support mining" in ws.monitor_text()


def test_executor_setup_failure_ends_in_state_4_with_its_return_code(ws):
    from ymir_exc.errors import ModelError
    from ymir_exc.executor import Executor

    class Broken:
        def setup(self, task):
            raise ModelError("no weights", key="model_params_path")

        def train(self, task):
            raise AssertionError("not reached")

    assert Executor(Broken).run() == 1
    assert ws.monitor_text().splitlines()[0].split("\t")[3:] == ["4", str(ModelError.return_code)]


def test_executor_refuses_a_class_mixed_with_functions_or_without_task_methods():
    import pytest

    from ymir_exc.executor import Executor

    class M:
        def train(self, task):
            pass

    with pytest.raises(TypeError, match="not both"):
        Executor(M, infer=lambda task: None)

    class Nothing:
        def train(self):
            pass

    Executor(Nothing)  # a train method is enough
    with pytest.raises(TypeError, match="none of the methods"):
        Executor(type("Empty", (), {"mine": None}))


def test_executor_keeps_the_merged_config_for_functions_taking_cfg(ws):
    """Functions written for earlier versions (``def train(cfg)``) still get the EasyDict; a
    parameter annotated ``Task`` or named otherwise gets the Task; no parameter gets nothing."""
    from ymir_exc.executor import Executor
    from ymir_exc.task import Task

    seen = []

    def old(cfg):
        seen.append((type(cfg).__name__, cfg.ymir.task_id, cfg.param.class_names))

    def annotated(cfg: Task):
        seen.append(type(cfg).__name__)

    assert Executor(training=old).run() == 0
    assert Executor(training=annotated).run() == 0
    assert Executor(training=lambda: seen.append("none")).run() == 0
    assert Executor(training=lambda t: seen.append(type(t).__name__)).run() == 0
    assert seen == [("EasyDict", "t-test", ["cat", "dog"]), "Task", "none", "Task"]


def test_a_bad_hyper_parameter_read_through_hyperparams_ends_as_a_config_error(ws):
    """A declared key with a bad value: ConfigFileError -> state 4, return code 300001 (not 160004)."""
    from pydantic import Field

    from ymir_exc import HyperParams
    from ymir_exc.executor import Executor

    class TrainParams(HyperParams):
        epochs: int = Field(10, ge=1, description="passes over the training set")

    ws.write_config(epochs=0)

    def train(task):
        TrainParams.from_config(task.param)

    assert Executor(training=train).run() != 0
    line, *rest = ws.monitor_text().splitlines()
    assert line.split("\t")[3:] == ["4", "300001"]
    assert any("epochs" in r for r in rest)
