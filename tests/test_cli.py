"""Bad input through the CLI: one line on stderr, exit code 2, nothing overwritten."""

import json
import os
import subprocess
import sys

import pytest

from tasft.cli import main

from .conftest import tiny_overrides, write_jsonl


def _train_args(tiny_model_dir, tiny_data, out, **extra):
    args = ["train"]
    for item in tiny_overrides(tiny_model_dir, tiny_data, out, **extra):
        args += ["--set", item]
    return args


def _error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err and err[-1].startswith("tasft: error: ")
    assert not any("Traceback" in line for line in err)
    return err[-1]


def test_missing_data_file(tiny_model_dir, tiny_data, tmp_path, capsys):
    msg = _error(capsys, _train_args(tiny_model_dir, tiny_data, tmp_path / "o", train_data=tmp_path / "nope.jsonl"))
    assert "nope.jsonl: data file not found" in msg


def test_unreadable_data_file(tiny_model_dir, tiny_data, tmp_path, capsys):
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"prompt": "caf\xe9", "response": "x"}\n')
    msg = _error(capsys, _train_args(tiny_model_dir, tiny_data, tmp_path / "o", train_data=bad))
    assert "cannot read data file" in msg


def test_malformed_json_line_names_file_and_line(tiny_model_dir, tiny_data, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": oops}\n')
    msg = _error(capsys, _train_args(tiny_model_dir, tiny_data, tmp_path / "o", train_data=bad))
    assert "bad.jsonl:2: malformed JSON line" in msg


def test_malformed_yaml_names_file_and_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: x\n  penalty: : emd\n")
    msg = _error(capsys, ["train", "--config", str(cfg)])
    assert "c.yaml:2: malformed YAML" in msg


def test_records_without_a_response(tiny_model_dir, tiny_data, tmp_path, capsys):
    path = write_jsonl(tmp_path / "noresp.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "only"}])
    msg = _error(capsys, _train_args(tiny_model_dir, tiny_data, tmp_path / "o", train_data=path))
    assert "noresp.jsonl:2: record has no response" in msg


@pytest.mark.parametrize("which", ["train_data", "harmful_data"])
def test_empty_du_or_dh(tiny_model_dir, tiny_data, tmp_path, capsys, which):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    msg = _error(capsys, _train_args(tiny_model_dir, tiny_data, tmp_path / "o", **{which: empty}))
    assert f"{which}: no records" in msg


@pytest.mark.parametrize(
    "extra, expected",
    [({"method": "dpo"}, "unknown method 'dpo'"), ({"ta_sft.penalty": "kl"}, "unknown penalty 'kl'"),
     ({"ta_sft.lambda": -0.5}, "ta_sft.lambda: must be >= 0")],
)
def test_bad_method_penalty_lambda(tiny_model_dir, tiny_data, tmp_path, capsys, extra, expected):
    out = tmp_path / "o"
    assert expected in _error(capsys, _train_args(tiny_model_dir, tiny_data, out, **extra))
    assert not out.exists()


def test_unknown_model_offline(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "o"
    msg = _error(capsys, _train_args("no-such-org/no-such-model-xyz", tiny_data, out))
    assert "unknown model 'no-such-org/no-such-model-xyz'" in msg and "offline" in msg


def test_output_dir_exists_is_not_overwritten(tiny_model_dir, tiny_data, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "result.json").write_text('{"keep": true}')
    msg = _error(capsys, _train_args(tiny_model_dir, tiny_data, out))
    assert "already exists" in msg and "--overwrite" in msg
    assert json.loads((out / "result.json").read_text()) == {"keep": True}
    assert [p.name for p in out.iterdir()] == ["result.json"]


def test_prompt_longer_than_max_length(tiny_model_dir, tiny_data, tmp_path, capsys):
    path = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "word " * 300, "response": "ok"}])
    msg = _error(capsys, _train_args(tiny_model_dir, tiny_data, tmp_path / "o", train_data=path, max_length=32))
    assert "long.jsonl:1: prompt is longer than max_length=32" in msg


def test_generate_prompt_too_long_and_existing_output(tiny_model_dir, tiny_data, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "word " * 300}])
    msg = _error(capsys, ["generate", "--model", str(tiny_model_dir), "--prompts", str(prompts),
                          "--out", str(tmp_path / "g.jsonl"), "--max-prompt-tokens", "64"])
    assert "p.jsonl:1: prompt is longer than max_prompt_tokens=64" in msg
    existing = tmp_path / "done.jsonl"
    existing.write_text("keep\n")
    msg = _error(capsys, ["generate", "--model", str(tiny_model_dir), "--prompts", str(tiny_data["toxic"]),
                          "--out", str(existing)])
    assert "already exists" in msg and existing.read_text() == "keep\n"


def test_harvest_writes_records_and_keeps_text_off_stdout(tiny_model_dir, tiny_data, tmp_path, capsys):
    out = tmp_path / "h.jsonl"
    code = main(["harvest", "--model", str(tiny_model_dir), "--prompts", str(tiny_data["toxic"]), "--out", str(out),
                 "--limit", "3", "--max-new-tokens", "6", "--seed", "1"])
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert code == 0 and len(rows) == 3
    assert {"prompt", "response", "model", "seed"} <= set(rows[0]) and rows[0]["seed"] == 1
    for row in rows:
        if row["response"].strip():
            assert row["response"] not in captured.out
    assert "wrote 3 harvested responses" in captured.out


def test_real_process_prints_exactly_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "tasft", "train", "--set", "ta_sft.lambda=-1"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "tasft: error: ta_sft.lambda: must be >= 0, got -1.0"


@pytest.mark.parametrize(("rank", "printed"), [("0", True), ("1", False)])
def test_only_the_main_process_reports_a_training_run(monkeypatch, capsys, tmp_path, rank, printed):
    metrics = {k: 0 for k in ("method", "penalty", "lambda", "steps", "before", "after", "train_seconds",
                              "tokens_per_second")}
    monkeypatch.setattr("tasft.training.pipeline.train", lambda *a, **k: metrics)
    monkeypatch.setenv("RANK", rank)
    assert main(["train", "--set", f"output_dir={tmp_path / 'run'}/"]) == 0
    out = capsys.readouterr().out
    assert ("saved to" in out) is printed
    # what to do next: evaluate the run beside it (never inside it), then report
    assert (f"tasft evaluate --model {tmp_path / 'run'} --out {tmp_path / 'run'}-eval" in out) is printed
