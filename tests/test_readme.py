"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_the_api_examples():
    assert len(BLOCKS) == 3 and "losses.emd" in BLOCKS[0] and "tasft.train" in BLOCKS[1]
    assert "TASFTTrainer(" in BLOCKS[2]


def test_losses_example_runs():
    exec(compile(BLOCKS[0], "README.md:losses", "exec"), {})


@pytest.mark.slow
def test_train_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = BLOCKS[1].replace("runs/api-demo", str(tmp_path / "api-demo"))
    scope: dict = {}
    exec(compile(code, "README.md:train", "exec"), scope)
    assert scope["metrics"]["steps"] == 2 and (tmp_path / "api-demo" / "metrics.json").exists()


@pytest.mark.slow
def test_trl_style_example_runs(tmp_path, monkeypatch):
    """The TRL-style example on the default model, its D_h a stand-in file (the example reads `tasft harvest`'s)."""
    import json

    from tests.conftest import HARMFUL

    monkeypatch.chdir(ROOT)
    harmful = tmp_path / "harmful.jsonl"
    harmful.write_text("".join(json.dumps({"prompt": p, "response": r}) + "\n" for p, r in HARMFUL))
    code = BLOCKS[2].replace('"harmful.jsonl"', repr(str(harmful))).replace("runs/trl-style", str(tmp_path / "out"))
    scope: dict = {}
    exec(compile(code, "README.md:trl-style", "exec"), scope)
    assert scope["trainer"].state.global_step == 2 and (tmp_path / "out" / "model.safetensors").exists()


def test_every_train_command_in_the_readme_is_a_valid_config(monkeypatch):
    import shlex

    from tasft.run_config import load_train_config

    monkeypatch.chdir(ROOT)
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    commands = [shlex.split(line.split("#")[0]) for line in text.splitlines() if line.startswith("tasft train")]
    assert len(commands) >= 8
    for argv in commands:
        config = argv[argv.index("--config") + 1] if "--config" in argv else None
        overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        load_train_config(config, overrides)  # raises a TasftError naming the bad key or file


def test_files_named_by_readme_commands_exist():
    """Every --prompts / --config / --suites file a README command names is in the repo (or the shared data)."""
    import shlex

    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    named = []
    for line in text.splitlines():
        if not line.startswith("tasft "):
            continue
        argv = shlex.split(line.split("#")[0])
        for flag in ("--prompts", "--config"):
            if flag in argv:
                named.append(argv[argv.index(flag) + 1])
        if "--suites" in argv:
            named += [s for s in argv[argv.index("--suites") + 1].split(",") if "." in s]
    assert len(named) >= 10
    for name in named:
        assert (ROOT / name).is_file(), f"README names {name}, which does not exist"
