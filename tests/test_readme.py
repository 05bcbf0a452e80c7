"""The README's and the documentation's examples are the ones tests run: the Python API page's examples run as
written, every `tasft train` command is a valid config, every file a command names exists, and the README has an
example of every command."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), flags=re.S)
#: the pages a user copies commands from: the README and the guides (not the result files' own notes)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands() -> list[str]:
    """Every command line of the pages' bash blocks (continuation lines joined)."""
    lines = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S):
            lines += [line.strip() for line in block.replace("\\\n", " ").splitlines()]
    return lines


def test_the_api_page_has_the_api_examples():
    assert len(BLOCKS) == 3 and "losses.emd" in BLOCKS[0] and "tasft.train" in BLOCKS[1]
    assert "TASFTTrainer(" in BLOCKS[2]


def test_the_readme_shows_every_command():
    """README.md's command block has an example of every command the parser knows; the README fits a screen."""
    from tasft.cli import build_parser
    from tasft.cli_reference import _subcommands

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = {line.split()[1] for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
             for line in block.splitlines() if line.startswith("tasft ")}
    assert set(_subcommands(build_parser())) <= shown
    assert len(readme.splitlines()) <= 150


def test_losses_example_runs():
    exec(compile(BLOCKS[0], "docs/api.md:losses", "exec"), {})


@pytest.mark.slow
def test_train_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = BLOCKS[1].replace("runs/api-demo", str(tmp_path / "api-demo"))
    scope: dict = {}
    exec(compile(code, "docs/api.md:train", "exec"), scope)
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
    exec(compile(code, "docs/api.md:trl-style", "exec"), scope)
    assert scope["trainer"].state.global_step == 2 and (tmp_path / "out" / "model.safetensors").exists()


def test_every_train_command_in_the_docs_is_a_valid_config(monkeypatch):
    import shlex

    from tasft.run_config import load_train_config

    monkeypatch.chdir(ROOT)
    commands = [shlex.split(line.split("#")[0]) for line in _commands() if line.startswith("tasft train")]
    assert len(commands) >= 8
    for argv in commands:
        config = argv[argv.index("--config") + 1] if "--config" in argv else None
        overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
        load_train_config(config, overrides)  # raises a TasftError naming the bad key or file


def test_files_named_by_the_docs_commands_exist():
    """Every --prompts / --config / --suites / --verdicts file a command names is in the repo (or the shared data)."""
    import shlex

    from tasft.suites import suite_file

    named = []
    for line in _commands():
        if not line.startswith("tasft "):
            continue
        argv = shlex.split(line.split("#")[0])
        for flag in ("--prompts", "--config", "--verdicts"):
            if flag in argv:
                named.append(argv[argv.index(flag) + 1])
        if "--suites" in argv:
            named += [f for s in argv[argv.index("--suites") + 1].split(",") if (f := suite_file(s)) is not None]
    assert len(named) >= 10
    for name in named:
        assert (ROOT / name).is_file(), f"a documented command names {name}, which does not exist"
