"""Declarative hyper-parameters (``ymir_exc.params``): config values are read the way the platform
writes them, a bad one is a ConfigFileError naming the key, and every bundled executor's img-man
templates hold exactly its models' defaults (so a default is written in one place)."""

from __future__ import annotations

import doctest
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Literal

import pytest
import yaml
from easydict import EasyDict as edict
from pydantic import Field

import ymir_exc.params
from ymir_exc import ConfigFileError, ExecutorReturnCode
from ymir_exc.harness.executors import BUNDLED_DIR
from ymir_exc.params import HyperParams
from ymir_exc.util import get_bool

ROOT = Path(__file__).resolve().parents[2]


class Params(HyperParams):
    epochs: int = Field(10, ge=1, le=1000, description="passes")
    lr: float = Field(0.5, gt=0.0, le=10.0, description="step size")
    half: bool = Field(False, description="fp16")
    algo: Literal["entropy", "random"] = Field("entropy", description="mining score")
    name: str = Field("yolov8n.yaml", description="a model file")


def test_module_docstring_examples_run():
    result = doctest.testmod(ymir_exc.params, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


@pytest.mark.parametrize(
    ("key", "bad", "says"),
    [
        ("epochs", 0, "must be an integer in [1, 1000], got 0"),
        ("epochs", 1.5, "must be an integer in [1, 1000], got 1.5"),
        ("epochs", "many", "must be an integer in [1, 1000], got 'many'"),
        ("epochs", True, "must be an integer in [1, 1000], got True"),
        ("lr", 0, "must be a number in (0.0, 10.0], got 0"),
        ("lr", "nan", "must be a number in (0.0, 10.0], got 'nan'"),
        ("lr", float("inf"), "must be a number in (0.0, 10.0], got inf"),
        ("lr", False, "must be a number in (0.0, 10.0], got False"),
        ("half", "maybe", "must be true or false, got 'maybe'"),
        ("half", 2, "must be true or false, got 2"),
        ("algo", "greedy", "must be one of ['entropy', 'random'], got 'greedy'"),
        ("name", ["a"], "must be a string, got ['a']"),
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_key_the_value_and_what_is_allowed(key, bad, says):
    with pytest.raises(ConfigFileError) as e:
        Params.from_config({key: bad}, source="/in/config.yaml")
    assert (e.value.key, e.value.message, e.value.path) == (key, says, "/in/config.yaml")
    assert e.value.return_code == ExecutorReturnCode.RC_EXEC_CONFIG_ERROR
    assert str(e.value) == f"/in/config.yaml: key '{key}': {says}"


def test_strings_holding_numbers_coerce_and_integral_floats_are_integers():
    p = Params.from_config({"epochs": " 8.0 ", "lr": "1e-3", "name": 11})
    assert (p.epochs, p.lr, p.name) == (8, 0.001, "11")
    assert type(p.epochs) is int and type(p.lr) is float
    q = Params.from_config({"epochs": 7.0, "lr": 2})
    assert (q.epochs, q.lr, type(q.lr)) == (7, 2.0, float)


def test_choices_ignore_case_and_blanks_and_yaml_scalars_match_by_their_text():
    class Cache(HyperParams):
        cache: Literal["false", "ram", "disk"] = Field("false", description="cache")

    assert Params.from_config({"algo": " Random "}).algo == "random"
    assert Cache.from_config({"cache": False}).cache == "false"
    assert Cache.from_config({"cache": "RAM"}).cache == "ram"


@pytest.mark.parametrize(
    "raw", [True, False, 1, 0, "t", "T", "true", "True", "TRUE", "1", "f", "F", "false", "False", "FALSE", "0"]
)
def test_bools_accept_what_upstream_get_bool_accepts(raw):
    assert Params.from_config({"half": raw}).half is get_bool(edict(param={"half": raw}), "half")


@pytest.mark.parametrize(("raw", "value"), [("yes", True), (" Y ", True), ("on", True), ("no", False), ("N", False)])
def test_bools_also_accept_yes_no_on_off(raw, value):
    assert Params.from_config({"half": raw}).half is value


def test_unknown_reserved_and_null_keys_take_the_defaults():
    p = Params.from_config(
        {"class_names": ["tree"], "gpu_id": "0", "task_id": "t1", "epochs": None, "nope": 1, "lr": "2"}
    )
    assert p == Params(lr=2.0)
    with pytest.raises(ConfigFileError, match="must be a mapping"):
        Params.from_config(["epochs"])


def test_template_problems_name_unknown_keys_other_defaults_bad_values_and_undocumented_fields(tmp_path):
    class Loose(HyperParams):
        epochs: int = Field(10, ge=1)

    assert Params.template_problems({"epochs": 10, "lr": 0.5, "half": False, "algo": "entropy"}) == []
    assert Params.template_problems({"epochs": 12, "lrate": 0.5, "half": "x"}) == [
        "key 'epochs': the template's default 12 is not the model's 10",
        "key 'lrate': not a field of Params",
        "key 'half': the template's value does not validate: must be true or false, got 'x'",
    ]
    assert Loose.template_problems({"epochs": 10}) == ["key 'epochs': the field has no description"]
    assert Params.template_problems({"epochs": 10.0}) == []  # read as the model reads config.yaml
    (tmp_path / "list.yaml").write_text("- 1\n")
    assert Params.template_problems(tmp_path / "list.yaml") == ["the template is not a mapping of keys: [1]"]
    assert Params.template_problems([1]) == ["the template is not a mapping of keys: [1]"]
    (tmp_path / "empty.yaml").write_text("# only a comment\n")
    assert Params.template_problems(tmp_path / "empty.yaml") == [f"empty template: {tmp_path / 'empty.yaml'}"]
    # a template may set a subset of the fields (one model, several tasks)
    assert Params.template_problems({"epochs": 10}) == []


def test_a_field_without_a_default_fails_when_the_class_is_defined():
    with pytest.raises(TypeError, match=r"every hyper-parameter needs a default.*no default: epochs, lr"):

        class NoDefault(HyperParams):
            epochs: int = Field(ge=1, description="passes")
            lr: float
            half: bool = False

    class WithFactory(HyperParams):
        sizes: list = Field(default_factory=list, description="sizes")

    assert WithFactory.from_config({}).sizes == []


def test_a_rendered_template_loads_as_the_defaults_and_passes_the_check(tmp_path):
    text = Params.render_template(header="two\nlines")
    assert text.startswith("# two\n# lines\n\n# passes\nepochs: 10\n")
    (tmp_path / "t.yaml").write_text(text)
    assert yaml.safe_load(text) == Params().model_dump()
    assert Params.template_problems(tmp_path / "t.yaml") == []
    assert Params.render_template(["half"]) == "# fp16\nhalf: false\n"


# ------------------------------------------------------------------ the bundled executors' templates


def _load(path: Path, name: str) -> ModuleType:
    """A module of an executor's app/ folder, loaded from its file (the folders are scripts, and
    the repository's and the bundled copy must not share a module name)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the annotations through the module
    spec.loader.exec_module(module)
    return module


EXECUTORS = {
    "det-demo-tmi": (
        "app/demo_model.py",
        {"training": "TrainParams", "mining": "MiningParams", "infer": "InferParams"},
    ),
    "det-yolo-tmi": (
        "app/ymir_yolo/params.py",
        {"training": "TrainParams", "mining": "PredictParams", "infer": "PredictParams"},
    ),
}
FOLDERS = {"det-demo-tmi": ROOT / "det-demo-tmi", "det-yolo-tmi": ROOT / "templates" / "det-yolo-tmi"}


@pytest.mark.parametrize("where", ["repository", "bundled"])
@pytest.mark.parametrize("executor", sorted(EXECUTORS))
def test_each_img_man_template_holds_exactly_the_model_s_defaults(executor, where):
    folder = FOLDERS[executor] if where == "repository" else BUNDLED_DIR / executor
    module_file, models = EXECUTORS[executor]
    module = _load(folder / module_file, f"_params_{where}_{executor.replace('-', '_')}")
    for task, model_name in models.items():
        template = folder / "img-man" / f"{task}-template.yaml"
        model = getattr(module, model_name)
        assert model.template_problems(template) == [], f"{template} vs {model_name}"
        assert yaml.safe_load(template.read_text()), template  # not empty: each task has keys


def test_det_demo_readme_table_of_hyper_parameters_matches_the_models():
    """The README's table (key | template | default | meaning) says what the models hold."""
    module = _load(ROOT / "det-demo-tmi" / "app" / "demo_model.py", "_params_readme_det_demo_tmi")
    models = {"training": module.TrainParams, "mining": module.MiningParams, "infer": module.InferParams}
    readme = (ROOT / "det-demo-tmi" / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| ([\w ]+) \| ([^|]+) \|", readme, re.M)
    assert len(rows) >= 14
    templates = {
        t: yaml.safe_load((ROOT / "det-demo-tmi" / "img-man" / f"{t}-template.yaml").read_text()) for t in models
    }
    table_keys = set()
    for key, where, shown in rows:
        table_keys.add(key)
        tasks = list(models) if where == "all" else where.split()
        shown_defaults = [yaml.safe_load(v.strip().strip("`")) for v in shown.split(" / ")]
        if len(shown_defaults) == 1:
            shown_defaults *= len(tasks)
        for task, shown_default in zip(tasks, shown_defaults, strict=True):
            assert key in templates[task], f"README: {key} in the {task} template"
            assert models[task].model_fields[key].default == shown_default, f"README: {key} default for {task}"
    assert table_keys == set().union(*templates.values())  # every template key has a row


def test_a_validator_s_own_message_is_the_error_s():
    """det-yolo-tmi's ``aldd_window`` validator (odd) and ``gpu_id`` check say what is wrong."""
    module = _load(FOLDERS["det-yolo-tmi"] / "app/ymir_yolo/params.py", "_params_validators_det_yolo_tmi")
    with pytest.raises(ConfigFileError) as e:
        module.PredictParams.from_config({"aldd_window": "4"})
    assert (e.value.key, e.value.message) == ("aldd_window", "must be odd (the window is centred on a cell), got 4")
    with pytest.raises(ConfigFileError) as e:
        module.TrainParams.from_config({"gpu_id": "cuda:0"})
    assert e.value.key == "gpu_id" and "got 'cuda:0'" in e.value.message
    p = module.PredictParams.from_config({"gpu_id": 1, "half": "yes"})
    assert (p.device, p.devices, p.half) == ("1", ("1",), True)
    assert module.PredictParams.from_config({"half": True}).half is False  # no fp16 on CPU
