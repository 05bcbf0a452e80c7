from pathlib import Path

import pytest

from tasft.config import DataSource, TrainConfig, to_dict
from tasft.errors import TasftError
from tasft.methods.ta_sft import TaSftSettings
from tasft.run_config import load_train_config, validate


def test_defaults_are_the_offline_demo():
    cfg = load_train_config()
    assert cfg.model == "smollm2-135m-instruct"
    assert cfg.method == "ta-sft" and cfg.method_settings == TaSftSettings(penalty="emd", lambda_=1.0)
    assert cfg.harmful_data.harvest is True


def test_overrides_parse_types_and_nested_keys():
    cfg = load_train_config(None, ["ta_sft.penalty=emd_lb", "ta_sft.lambda=0.5", "lora.r=8", "harmful_data.limit=3",
                                   "train_data=/x/y.jsonl", "report_to=none"])
    assert cfg.method_settings.penalty == "emd_lb" and cfg.method_settings.lambda_ == 0.5
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
        (["ta_sft.penalty=kl"], "ta_sft.penalty: unknown penalty 'kl'"),
        (["ta_sft.lambda=-1"], "ta_sft.lambda: must be >= 0"),
        (["ta_sft.lamda=1"], "ta_sft: unknown key 'lamda' (did you mean 'lambda'?)"),
        (["penalty=emd"], "penalty: TA-SFT's settings moved into their block: write ta_sft.penalty"),
        (["lambda=2"], "lambda: TA-SFT's settings moved into their block: write ta_sft.lambda"),
        (["method=sft", "ta_sft.lambda=2"], "ta_sft: settings of method ta-sft, but this run's method is sft"),
        (["method=ta-sft", "stl.examples=3"], "stl: settings of method stl, but this run's method is ta-sft"),
        (["method=npo", "npo.beta=0"], "npo.beta: must be > 0"),
        (["method=simnpo", "simnpo.gamma=-1"], "simnpo.gamma: must be >= 0"),
        (["max_steps=ten"], "max_steps: expected an integer"),
        (["batch_size=0"], "batch_size: must be > 0"),
        (["ta_sft.target=fuzzy"], "ta_sft.target: 'fuzzy' is not one of onehot, soft"),
        (["ta_sft.penalty=nlcl", "ta_sft.target=soft"], "soft targets apply to emd, emd_lb"),
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
    path.write_text("model: x\nmethod: [unclosed\nta_sft: {penalty: emd}\n")
    with pytest.raises(TasftError, match=r"bad\.yaml:\d+: malformed YAML"):
        load_train_config(str(path))


def test_missing_config_file(tmp_path):
    with pytest.raises(TasftError, match="config file not found"):
        load_train_config(str(tmp_path / "nope.yaml"))


def test_to_dict_round_trips_through_yaml_names():
    cfg = validate(TrainConfig(method_settings=TaSftSettings(lambda_=2.5)))
    data = to_dict(cfg)
    assert data["ta_sft"]["lambda"] == 2.5 and "lambda_" not in data["ta_sft"] and "method_settings" not in data
    assert load_train_config(None, [f"ta_sft.lambda={data['ta_sft']['lambda']}"]).method_settings.lambda_ == 2.5
    assert validate(TrainConfig(method="sft")).method_settings is None
    assert validate(TrainConfig(method="stl")).method_settings.examples == 100  # a method's defaults, filled in


def test_base_file_is_read_first_and_overridden_key_by_key(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("ta_sft: {lambda: 0.5}\ntrain_data:\n  path: data/du.jsonl\n  limit: 7\n")
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\nmethod: ta-sft\ntrain_data:\n  limit: 3\n")
    cfg = load_train_config(str(tmp_path / "sub" / "child.yaml"))
    assert cfg.method == "ta-sft" and cfg.method_settings.lambda_ == 0.5
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
    assert methods == {"sft", "ta-sft", "stl", "kto", "npo", "simnpo"}
    contrastive = load_train_config(str(configs[0].parent / "ta-sft-emd-contrastive.yaml"))
    assert contrastive.contrastive.enabled and contrastive.method_settings.penalty == "emd"
    assert contrastive.max_steps == 100


def test_the_gpu_recipe_is_a_valid_lora_bf16_config(tmp_path):
    from tasft.training.args import training_kwargs

    path = Path(__file__).resolve().parents[1] / "configs" / "gpu" / "llama2-7b-lora-bf16.yaml"
    cfg = load_train_config(str(path))
    assert cfg.precision == "bf16" and cfg.dtype == "bfloat16" and cfg.lora.target_modules == "all-linear"
    assert cfg.method == "ta-sft" and cfg.method_settings.penalty == "emd" and cfg.harmful_data.limit == 100
    kwargs = training_kwargs(cfg, tmp_path, model=None)
    assert kwargs["bf16"] and kwargs["activation_checkpointing"] and kwargs["optim"] == "adamw_torch_fused"
