import pytest

from ymir_exc import env, settings
from ymir_exc.errors import ConfigFileError, EnvFileError


def test_env_yaml_is_parsed_into_typed_paths(ws):
    cfg = env.get_current_env()
    assert cfg.run_training is True and cfg.task_id == "t-test"
    assert cfg.input.training_index_file == f"{ws.in_dir}/train-index.tsv"
    assert cfg.output.monitor_file == f"{ws.out_dir}/monitor.txt"
    assert cfg.protocol_tuple == (1, 1, 0)


def test_absent_protocol_version_means_legacy_0_0_1(ws):
    ws.write_env(protocol_version=None)
    assert env.get_current_env().protocol_version == "0.0.1"


def test_defaults_follow_the_contract():
    cfg = env.EnvConfig()
    assert cfg.output.training_result_file == "/out/models/result.yaml"
    assert cfg.output.infer_result_file == "/out/infer-result.json"
    assert cfg.input.config_file == "/in/config.yaml"


@pytest.mark.parametrize("version", ["3.0.0", "banana", "1.x"])
def test_unknown_protocol_version_names_file_and_key(ws, version):
    ws.write_env(protocol_version=version)
    with pytest.raises(EnvFileError) as e:
        env.get_current_env()
    assert e.value.path == str(ws.env_file) and e.value.key == "protocol_version"
    assert e.value.line is not None


def test_malformed_env_yaml_names_the_line(ws):
    ws.env_file.write_text("task_id: t1\nrun_training: [true\n")
    with pytest.raises(EnvFileError) as e:
        env.get_current_env()
    assert e.value.path == str(ws.env_file) and e.value.line is not None
    assert str(ws.env_file) in str(e.value)


def test_empty_env_yaml_is_an_error(ws):
    ws.env_file.write_text("")
    with pytest.raises(EnvFileError, match="empty"):
        env.get_current_env()


def test_wrong_type_in_env_yaml_names_the_key(ws):
    ws.write_env(run_training="sometimes")
    with pytest.raises(EnvFileError) as e:
        env.get_current_env()
    assert e.value.key == "run_training"


def test_env_yaml_that_is_not_a_mapping(ws):
    ws.env_file.write_text("- a\n- b\n")
    with pytest.raises(EnvFileError, match="mapping"):
        env.get_current_env()


def test_missing_env_yaml(ws, monkeypatch):
    monkeypatch.setattr(settings, "DEFAULT_ENV_FILE_PATH", str(ws.root / "nope.yaml"))
    with pytest.raises(EnvFileError, match="not found"):
        env.get_current_env()


def test_env_cache_sees_a_rewritten_file(ws):
    assert env.get_current_env().task_id == "t-test"
    ws.write_env(task_id="t-other-and-longer")
    assert env.get_current_env().task_id == "t-other-and-longer"


def test_executor_config_errors(ws):
    ws.config_file.write_text("a: [1\n")
    with pytest.raises(ConfigFileError) as e:
        env.get_executor_config()
    assert e.value.line is not None
    ws.config_file.write_text("")
    assert env.get_executor_config() == {}
    ws.config_file.write_text("[1, 2]\n")
    with pytest.raises(ConfigFileError, match="mapping"):
        env.get_executor_config()
