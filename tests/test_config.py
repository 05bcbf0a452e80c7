from pathlib import Path

import pytest

from tasft.config import DataSource, TrainConfig, load_train_config, to_dict, validate
from tasft.errors import TasftError


def test_defaults_are_the_offline_demo():
    cfg = load_train_config()
    assert cfg.model == "smollm2-135m-instruct"
    assert cfg.method == "ta-sft" and cfg.penalty == "emd" and cfg.lambda_ == 1.0
    assert cfg.harmful_data.harvest is True


def test_overrides_parse_types_and_nested_keys():
    cfg = load_train_config(None, ["penalty=emd_lb", "lambda=0.5", "lora.r=8", "harmful_data.limit=3",
                                   "train_data=/x/y.jsonl", "report_to=none"])
    assert cfg.penalty == "emd_lb" and cfg.lambda_ == 0.5
    assert cfg.lora.r == 8 and cfg.lora.alpha == 32
    assert cfg.harmful_data.limit == 3 and cfg.harmful_data.path == "demo:toxic_prompts.jsonl"
    assert cfg.train_data == DataSource("/x/y.jsonl")
    assert cfg.report_to == ["none"]
    assert load_train_config(None, ["learning_rate=1e-3"]).learning_rate == 1e-3  # YAML reads 1e-3 as text


def test_yaml_relative_paths_resolve_against_the_yaml_directory(tmp_path):
    sub = tmp_path / "cfg"
    sub.mkdir()
    (sub / "run.yaml").write_text("train_data: data/a.jsonl\nharmful_data: {path: ../h.jsonl, exclude: [ev]}\n")
    cfg = load_train_config(str(sub / "run.yaml"))
    assert Path(cfg.train_data.path) == sub / "data" / "a.jsonl"
    assert Path(cfg.harmful_data.path) == tmp_path / "h.jsonl"
    assert Path(cfg.harmful_data.exclude[0]) == sub / "ev"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=dpo"], "unknown method 'dpo'"),
        (["penalty=kl"], "unknown penalty 'kl'"),
        (["lambda=-1"], "lambda: must be >= 0"),
        (["lamda=1"], "unknown key 'lamda' (did you mean 'lambda'?)"),
        (["max_steps=ten"], "max_steps: expected an integer"),
        (["batch_size=0"], "batch_size: must be > 0"),
        (["target=fuzzy"], "target: 'fuzzy' is not one of onehot, soft"),
        (["penalty=nlcl", "target=soft"], "soft targets apply to emd/emd_lb"),
        (["harmful_data=null"], "method ta-sft needs a harmful data set"),
        (["oops"], "expected key=value"),
    ],
)
def test_bad_values_are_one_line_errors(overrides, message):
    with pytest.raises(TasftError) as err:
        load_train_config(None, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_malformed_yaml_reports_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: x\nmethod: [unclosed\npenalty: emd\n")
    with pytest.raises(TasftError, match=r"bad\.yaml:\d+: malformed YAML"):
        load_train_config(str(path))


def test_missing_config_file(tmp_path):
    with pytest.raises(TasftError, match="config file not found"):
        load_train_config(str(tmp_path / "nope.yaml"))


def test_to_dict_round_trips_through_yaml_names():
    cfg = validate(TrainConfig(lambda_=2.5))
    data = to_dict(cfg)
    assert data["lambda"] == 2.5 and "lambda_" not in data
    assert load_train_config(None, [f"lambda={data['lambda']}"]).lambda_ == 2.5


def test_base_file_is_read_first_and_overridden_key_by_key(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("method: sft\nlambda: 0.5\ntrain_data:\n  path: data/du.jsonl\n  limit: 7\n")
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\nmethod: ta-sft\ntrain_data:\n  limit: 3\n")
    cfg = load_train_config(str(tmp_path / "sub" / "child.yaml"))
    assert cfg.method == "ta-sft" and cfg.lambda_ == 0.5
    # the base's relative path resolves against the base's own directory; the child's limit wins
    assert cfg.train_data.path == str(tmp_path / "data" / "du.jsonl") and cfg.train_data.limit == 3


def test_base_cycle_and_missing_base_are_one_line_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(TasftError, match="include each other in a cycle"):
        load_train_config(str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(TasftError, match="nowhere.yaml: config file not found"):
        load_train_config(str(tmp_path / "c.yaml"))


def test_every_method_config_loads():
    configs = sorted((Path(__file__).resolve().parents[1] / "configs" / "methods").glob("*.yaml"))
    methods = {load_train_config(str(p)).method for p in configs if p.name != "base.yaml"}
    assert methods == {"sft", "ta-sft", "stl", "kto"}
    contrastive = load_train_config(str(configs[0].parent / "ta-sft-emd-contrastive.yaml"))
    assert contrastive.contrastive.enabled and contrastive.penalty == "emd" and contrastive.max_steps == 100
