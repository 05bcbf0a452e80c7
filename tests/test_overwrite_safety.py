"""``--overwrite`` never deletes what tasft did not create: every spelling of the current directory, its parents,
the home directory, a git working tree, the filesystem root, a symlink and a user's own folder is refused with one
line, and the canary files in them survive. A directory tasft made is replaced.

Every end-to-end case runs inside a temporary fake home; the filesystem root and the real home are checked only with
``rmtree`` replaced by a recorder, so a regression here can never delete anything outside the test's folder."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tasft import outputs
from tasft.cli import main
from tasft.errors import TasftError

from .conftest import tiny_overrides


def _tree(root: Path) -> dict[str, str]:
    """Checksum of every file under ``root`` (the canaries and anything else)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A user's folder (the current directory) with canary files, inside a fake home with its own canary."""
    home = tmp_path / "home"
    work = home / "project" / "work"
    work.mkdir(parents=True)
    (home / "canary-home.txt").write_text("home\n")
    (home / "project" / "canary-parent.txt").write_text("parent\n")
    (work / "canary.txt").write_text("do not delete\n")
    (work / "notes").mkdir()
    (work / "notes" / "n.md").write_text("notes\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return work


def _train(tiny_model_dir, tiny_data, out: str, *flags: str) -> list[str]:
    args = ["train", *flags]
    for item in tiny_overrides(tiny_model_dir, tiny_data, Path("unused")):
        if not item.startswith("output_dir="):
            args += ["--set", item]
    return [*args, "--set", f"output_dir={out}"]


def _refused(capfd, argv: list[str]) -> str:
    code = main(argv)
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("tasft: error: "), err
    return err[0]


@pytest.mark.parametrize("spelling", ["", ".", "./", "CWD", "..", "../..", "~/", "HOME"])
def test_train_overwrite_refuses_the_current_directory_its_parents_and_home(
        tiny_model_dir, tiny_data, workdir, capfd, spelling):
    home = Path(os.environ["HOME"])
    out = {"CWD": str(workdir), "HOME": str(home)}.get(spelling, spelling)
    before = _tree(home)
    msg = _refused(capfd, _train(tiny_model_dir, tiny_data, out, "--overwrite"))
    assert "output_dir" in msg and ("never deletes it" in msg or "must name a directory" in msg)
    assert _tree(home) == before
    assert not list(workdir.glob(".tasft-output"))


@pytest.mark.parametrize("spelling", [".", "CWD", "..", "~/"])
def test_evaluate_overwrite_refuses_the_same_places(tiny_model_dir, tiny_data, workdir, capfd, spelling):
    home = Path(os.environ["HOME"])
    out = {"CWD": str(workdir)}.get(spelling, spelling)
    (workdir / "eval_config.json").write_text('{"model": "x"}\n')  # even one that looks like an evaluation
    before = _tree(home)
    msg = _refused(capfd, ["evaluate", "--model", str(tiny_model_dir), "--suites", str(tiny_data["toxic"]),
                           "--harm-scorer", "none", "--out", out, "--overwrite"])
    assert msg.startswith("tasft: error: --out ") and "never deletes it" in msg
    assert _tree(home) == before


def test_overwrite_refuses_a_folder_tasft_did_not_create(tiny_model_dir, tiny_data, workdir, capfd):
    mine = workdir / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work\n")
    before = _tree(workdir)
    msg = _refused(capfd, _train(tiny_model_dir, tiny_data, str(mine), "--overwrite"))
    assert "was not created by tasft" in msg
    msg = _refused(capfd, ["evaluate", "--model", str(tiny_model_dir), "--suites", str(tiny_data["toxic"]),
                           "--harm-scorer", "none", "--out", str(mine), "--overwrite"])
    assert "was not created by tasft" in msg
    assert _tree(workdir) == before


def test_overwrite_refuses_a_git_working_tree_and_a_symlink(tiny_model_dir, tiny_data, workdir, capfd):
    repo = workdir / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "src.py").write_text("print('hi')\n")
    outputs.claim(repo, "train", "test").release()  # even marked: a git tree is never deleted
    link_target = workdir / "real-run"
    outputs.claim(link_target, "train", "test").release()
    (link_target / "canary.txt").write_text("behind a link\n")
    (workdir / "link").symlink_to(link_target)
    before = _tree(workdir)
    assert "git working tree" in _refused(capfd, _train(tiny_model_dir, tiny_data, str(repo), "--overwrite"))
    assert "symbolic link" in _refused(capfd, _train(tiny_model_dir, tiny_data, str(workdir / "link"), "--overwrite"))
    assert _tree(workdir) == before


def test_emptying_never_reaches_rmtree_for_protected_places(tmp_path, monkeypatch):
    """The root and the home directory, checked without any chance of deleting them: rmtree and unlink are
    replaced by recorders, and the marker is faked."""
    calls = []
    monkeypatch.setattr(outputs.shutil, "rmtree", lambda p, *a, **k: calls.append(p))
    monkeypatch.setattr(Path, "unlink", lambda self, *a, **k: calls.append(self))
    monkeypatch.setattr(outputs, "owner_kind", lambda p: "train")  # as if someone had planted the marker there
    for place in (Path("/"), Path.home(), Path.cwd(), Path.cwd().parent, outputs._PACKAGE_DIR.parent):
        with pytest.raises(TasftError, match="never deletes it"):
            outputs.empty_owned(place, "output_dir", "train")
    assert calls == []
    target = tmp_path / "run"
    (target / "sub").mkdir(parents=True)
    (target / "f.txt").write_text("x")
    outputs.empty_owned(target, "output_dir", "train")  # an ordinary owned folder does reach them
    assert sorted(calls) == [target / "f.txt", target / "sub"]


def test_a_run_never_empties_an_evaluation_or_a_folder_it_only_resumed(tiny_model_dir, tiny_data, workdir, capfd):
    """Kinds are kept apart, --resume refuses a user's folder, and a restart empties only an attempt's own files."""
    ev = workdir / "ev"
    outputs.claim(ev, "evaluate", "test").release()
    (ev / "generations.jsonl").write_text("hours of generation\n")
    mine = workdir / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work\n")
    attempt = workdir / "attempt"  # tasft's attempt that a user then put a file into
    outputs.claim(attempt, "train", "test").release()
    (attempt / "config.yaml").write_text("model: x\n")
    (attempt / "notes.txt").write_text("mine\n")
    before = _tree(workdir)
    assert "already exists" in _refused(capfd, _train(tiny_model_dir, tiny_data, str(ev)))
    assert "holds a tasft evaluation, not a tasft training run" in _refused(
        capfd, _train(tiny_model_dir, tiny_data, str(ev), "--overwrite"))
    assert "holds no tasft training run to resume" in _refused(
        capfd, _train(tiny_model_dir, tiny_data, str(mine), "--resume"))
    assert "already exists" in _refused(capfd, _train(tiny_model_dir, tiny_data, str(attempt)))
    assert _tree(workdir) == before and not (mine / outputs.MARKER).exists()


def test_overwrite_replaces_a_directory_tasft_made(tiny_model_dir, tiny_data, workdir, capfd):
    assert main(_train(tiny_model_dir, tiny_data, "runs/a", "--set", "max_steps=2")) == 0
    (workdir / "runs" / "a" / "stale.txt").write_text("from the first run\n")
    canary = _tree(workdir / "notes")
    assert main(_train(tiny_model_dir, tiny_data, "runs/a", "--overwrite", "--set", "max_steps=2")) == 0
    assert not (workdir / "runs" / "a" / "stale.txt").exists()
    assert (workdir / "runs" / "a" / "metrics.json").is_file() and (workdir / "runs" / "a" / outputs.MARKER).is_file()
    assert _tree(workdir / "notes") == canary and (workdir / "canary.txt").read_text() == "do not delete\n"
    capfd.readouterr()


def test_a_directory_in_use_is_neither_replaced_nor_reused(tiny_model_dir, tiny_data, workdir, capfd):
    run = workdir / "busy"
    lock = outputs.claim(run, "train", "test")  # held, as by a live process
    (run / "config.yaml").write_text("model: x\n")
    try:
        for flags in ((), ("--overwrite",), ("--resume",)):
            assert "in use by another tasft process" in _refused(capfd, _train(tiny_model_dir, tiny_data,
                                                                                str(run), *flags))
    finally:
        lock.release()
    assert (run / "config.yaml").read_text() == "model: x\n"
