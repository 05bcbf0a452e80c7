"""The bad-input corpus: every case is one line ``tasft: error: ...`` on stderr, exit code 2, no traceback, and the
folder it ran in is unchanged — every pre-existing file has the same checksum and no file was added.

Each case runs ``tasft`` in-process from a fresh folder holding the inputs (good and bad data files, a user's own
folder, an earlier evaluation, models with corrupt weights or config) and a canary file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tasft.cli import main

from .conftest import BENIGN, HARMFUL, tiny_overrides, write_jsonl


@dataclass
class Case:
    id: str
    argv: object  # (ctx) -> list[str]
    expect: str  # a fragment of the one error line
    env: dict = field(default_factory=dict)
    read_only: str | None = None  # a folder (relative to the case's folder) to fail with EROFS on mkdir


class Ctx:
    """Paths of one case's folder (``root``) and the shared tiny model."""

    def __init__(self, root: Path, model: Path):
        self.root, self.model = root, model
        self.f = {name: str(root / name) for name in (
            "benign.jsonl", "harmful.jsonl", "toxic.jsonl", "long.jsonl", "empty.jsonl", "noresp.jsonl",
            "bad.jsonl", "latin1.jsonl", "bad.yaml", "list.yaml", "cycle_a.yaml", "existing.jsonl", "afile.txt",
            "userdir", "evals/prev", "garbage_weights", "garbage_config", "exp.yaml")}

    def train(self, *sets: str, flags: tuple[str, ...] = (), out: str | None = None) -> list[str]:
        data = {"benign": Path(self.f["benign.jsonl"]), "harmful": Path(self.f["harmful.jsonl"])}
        base = tiny_overrides(self.model, data, self.root / (out or "run"))
        argv = ["train", *flags]
        for item in [*base, *sets]:
            argv += ["--set", item]
        return argv

    def gen(self, *extra: str, out: str = "g.jsonl", prompts: str | None = None) -> list[str]:
        return ["generate", "--model", str(self.model), "--prompts", prompts or self.f["toxic.jsonl"],
                "--out", str(self.root / out), *extra]

    def ev(self, *extra: str, out: str = "ev", suites: str | None = None) -> list[str]:
        return ["evaluate", "--model", str(self.model), "--suites", suites or self.f["toxic.jsonl"],
                "--harm-scorer", "none", "--out", str(self.root / out), *extra]

    def harvest(self, *extra: str, out: str = "h.jsonl") -> list[str]:
        return ["harvest", "--model", str(self.model), "--prompts", self.f["toxic.jsonl"],
                "--out", str(self.root / out), *extra]


def _populate(root: Path, model: Path) -> None:
    write_jsonl(root / "benign.jsonl", [{"prompt": p, "response": r} for p, r in BENIGN])
    write_jsonl(root / "harmful.jsonl", [{"prompt": p, "response": r} for p, r in HARMFUL])
    write_jsonl(root / "toxic.jsonl", [{"prompt": p} for p, _ in HARMFUL])
    write_jsonl(root / "long.jsonl", [{"prompt": "word " * 400, "response": "ok"}])
    write_jsonl(root / "noresp.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "only a prompt"}])
    (root / "empty.jsonl").write_text("")
    (root / "bad.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": oops}\n')
    (root / "latin1.jsonl").write_bytes(b'{"prompt": "caf\xe9", "response": "x"}\n')
    (root / "bad.yaml").write_text("model: x\n  penalty: : emd\n")
    (root / "list.yaml").write_text("- model\n- penalty\n")
    (root / "cycle_a.yaml").write_text("base: cycle_b.yaml\n")
    (root / "cycle_b.yaml").write_text("base: cycle_a.yaml\n")
    (root / "exp.yaml").write_text("study: lambda\ntrain_config: nowhere.yaml\nseries: []\n")
    (root / "existing.jsonl").write_text('{"id": "0", "response": "keep me"}\n')
    (root / "afile.txt").write_text("a plain file\n")
    (root / "userdir").mkdir()
    (root / "userdir" / "thesis.tex").write_text("years of work\n")
    prev = root / "evals" / "prev"
    prev.mkdir(parents=True)
    (prev / ".tasft-output").write_text('{"created_by": "tasft", "kind": "evaluate"}\n')
    (prev / "eval_config.json").write_text(json.dumps({"model": "other-model", "generation": {"max_new_tokens": 128}}))
    (prev / "metrics.json").write_text('{"summary": {}}\n')
    for name in ("garbage_weights", "garbage_config"):
        shutil.copytree(model, root / name)
    (root / "garbage_weights" / "model.safetensors").write_bytes(b"\x00\x01 not a safetensors file" * 40)
    (root / "garbage_config" / "config.json").write_text('{"model_type": ')
    (root / "canary.txt").write_text("must survive\n")


def _checksums(root: Path) -> dict[str, str]:
    """Every file's checksum and every folder (so an empty folder left behind is a difference too)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*"))}


T, G, E, H = Ctx.train, Ctx.gen, Ctx.ev, Ctx.harvest
CASES = [
    # --- train: the config file and overrides
    Case("config-missing", lambda c: ["train", "--config", str(c.root / "nope.yaml")], "config file not found"),
    Case("config-malformed", lambda c: ["train", "--config", c.f["bad.yaml"]], "bad.yaml:2: malformed YAML"),
    Case("config-not-a-mapping", lambda c: ["train", "--config", c.f["list.yaml"]], "must be a YAML mapping"),
    Case("config-base-cycle", lambda c: ["train", "--config", c.f["cycle_a.yaml"]], "include each other in a cycle"),
    Case("unknown-key", lambda c: T(c, "ta_sft.lamda=1"), "unknown key 'lamda' (did you mean 'lambda'?)"),
    Case("moved-key", lambda c: T(c, "lambda=1"), "write ta_sft.lambda"),
    Case("other-methods-block", lambda c: T(c, "method=sft", "ta_sft.lambda=2"), "settings of method ta-sft"),
    Case("set-without-equals", lambda c: T(c, "lambda"), "expected key=value"),
    Case("nested-key-on-scalar", lambda c: T(c, "seed.x=1"), "seed: expected an integer"),
    Case("method-unknown", lambda c: T(c, "method=dpo"), "unknown method 'dpo'"),
    Case("penalty-unknown", lambda c: T(c, "ta_sft.penalty=kl"), "unknown penalty 'kl'"),
    Case("lambda-negative", lambda c: T(c, "ta_sft.lambda=-0.5"), "ta_sft.lambda: must be >= 0"),
    Case("lambda-nan", lambda c: T(c, "ta_sft.lambda=nan"), "ta_sft.lambda: must be a finite number, got nan"),
    Case("lambda-inf", lambda c: T(c, "ta_sft.lambda=.inf"), "ta_sft.lambda: must be a finite number, got inf"),
    Case("lr-nan", lambda c: T(c, "learning_rate=nan"), "learning_rate: must be a finite number, got nan"),
    Case("lr-inf", lambda c: T(c, "learning_rate=.inf"), "learning_rate: must be a finite number, got inf"),
    Case("lr-zero", lambda c: T(c, "learning_rate=0"), "learning_rate: must be > 0"),
    Case("lr-string", lambda c: T(c, "learning_rate=fast"), "learning_rate: expected a number"),
    Case("max-grad-norm-negative", lambda c: T(c, "max_grad_norm=-1"), "max_grad_norm: must be >= 0"),
    Case("warmup-negative", lambda c: T(c, "warmup_steps=-5"), "warmup_steps: must be >= 0"),
    Case("weight-decay-negative", lambda c: T(c, "weight_decay=-0.1"), "weight_decay: must be >= 0"),
    Case("max-steps-zero", lambda c: T(c, "max_steps=0"), "max_steps: must be > 0"),
    Case("batch-size-text", lambda c: T(c, "batch_size=four"), "batch_size: expected an integer"),
    Case("heldout-fraction", lambda c: T(c, "train_data.heldout_fraction=1.5"), "heldout_fraction: must be in (0, 1)"),
    Case("data-limit-zero", lambda c: T(c, "train_data.limit=0"), "train_data.limit: must be > 0"),
    Case("soft-target-nlcl", lambda c: T(c, "ta_sft.penalty=nlcl", "ta_sft.target=soft"),
         "soft targets apply to emd, emd_lb"),
    Case("npo-beta-zero", lambda c: T(c, "method=npo", "npo.beta=0"), "npo.beta: must be > 0"),
    Case("lambda-reference-model-missing", lambda c: T(c, "ta_sft.lambda_budget=0.02",
                                                       "ta_sft.lambda_reference_model=./no/such/sft-run"),
         "model path './no/such/sft-run' does not exist"),
    Case("lambda-reference-model-no-budget", lambda c: T(c, f"ta_sft.lambda_reference_model={c.model}"),
         "ta_sft.lambda_reference_model: only used with ta_sft.lambda_budget"),
    Case("lambda-reference-twice", lambda c: T(c, "ta_sft.lambda_budget=0.02", "ta_sft.lambda_reference_nll=1.5",
                                               f"ta_sft.lambda_reference_model={c.model}"),
         "give one reference, not both"),
    Case("lambda-reference-run-twice", lambda c: T(c, "ta_sft.lambda_budget=0.02", "ta_sft.lambda_reference_nll=1.5",
                                                   "ta_sft.lambda_reference_run=runs/sft"),
         "ta_sft.lambda_reference_nll and ta_sft.lambda_reference_run: give one reference, not both"),
    Case("lambda-reference-run-no-budget", lambda c: T(c, "ta_sft.lambda_reference_run=runs/sft"),
         "ta_sft.lambda_reference_run: only used with ta_sft.lambda_budget"),
    Case("log-heldout-without-eval-data", lambda c: T(c, "log_heldout_nll=true", "eval_data=null"),
         "log_heldout_nll: needs held-out D_u rows to measure (set eval_data)"),
    Case("lora-r-zero", lambda c: T(c, "lora.r=0"), "lora.r: must be > 0"),
    Case("guard-collapse-zero", lambda c: T(c, "guard.collapse_steps=0"), "guard.collapse_steps: must be > 0 or null"),
    Case("stl-examples-zero", lambda c: T(c, "method=stl", "stl.examples=0"), "stl.examples: must be > 0"),
    Case("kto-beta-zero", lambda c: T(c, "method=kto", "kto.beta=0"), "kto.beta: must be > 0"),
    # --- train: where it writes
    Case("output-dir-empty", lambda c: T(c, "output_dir="), "output_dir: must name a directory"),
    Case("output-dir-proc", lambda c: T(c, "output_dir=/proc/tasft-run"), "output_dir /proc/tasft-run: cannot write"),
    Case("output-dir-read-only", lambda c: T(c, out="ro/run"), "Read-only file system", read_only="ro"),
    Case("output-dir-is-a-file", lambda c: T(c, out="afile.txt"), "exists and is not a directory"),
    Case("output-dir-user-folder", lambda c: T(c, out="userdir"), "already exists (use --overwrite"),
    Case("overwrite-user-folder", lambda c: T(c, out="userdir", flags=("--overwrite",)), "was not created by tasft"),
    Case("overwrite-cwd", lambda c: T(c, "output_dir=.", flags=("--overwrite",)), "is the current directory"),
    Case("overwrite-and-resume", lambda c: T(c, flags=("--overwrite", "--resume")), "exclude each other"),
    Case("resume-user-folder", lambda c: T(c, out="userdir", flags=("--resume",)), "holds no tasft training run"),
    Case("train-into-an-evaluation", lambda c: T(c, out="evals/prev"), "already exists"),
    Case("overwrite-an-evaluation", lambda c: T(c, out="evals/prev", flags=("--overwrite",)),
         "holds a tasft evaluation, not a tasft training run"),
    Case("output-dir-inside-the-model", lambda c: T(c, f"model={c.f['garbage_weights']}",
                                                     f"output_dir={c.f['garbage_weights']}/run"),
         "lies inside the starting model"),
    # --- train: data
    Case("train-data-missing", lambda c: T(c, f"train_data={c.root / 'nope.jsonl'}"),
         "nope.jsonl: data file not found"),
    Case("train-data-malformed", lambda c: T(c, f"train_data={c.f['bad.jsonl']}"), "bad.jsonl:2: malformed JSON line"),
    Case("train-data-latin1", lambda c: T(c, f"train_data={c.f['latin1.jsonl']}"), "cannot read data file"),
    Case("train-data-empty", lambda c: T(c, f"train_data={c.f['empty.jsonl']}"), "train_data: no records"),
    Case("harmful-data-empty", lambda c: T(c, f"harmful_data={c.f['empty.jsonl']}"), "harmful_data: no records"),
    Case("record-without-response", lambda c: T(c, f"train_data={c.f['noresp.jsonl']}"),
         "noresp.jsonl:2: record has no response"),
    Case("prompt-too-long", lambda c: T(c, f"train_data={c.f['long.jsonl']}", "max_length=32"),
         "long.jsonl:1: prompt is longer than max_length=32"),
    # --- train: the model
    Case("model-path-missing", lambda c: T(c, f"model={c.root / 'no-model'}"), "does not exist"),
    Case("model-hub-offline", lambda c: T(c, "model=no-such-org/no-such-model-xyz"),
         "not in the local Hugging Face cache (offline", env={"HF_HUB_OFFLINE": "1"}),
    Case("model-id-invalid", lambda c: T(c, "model=not a model id"), "not a valid Hugging Face model id"),
    Case("model-garbage-weights", lambda c: T(c, f"model={c.f['garbage_weights']}"), "does not load"),
    Case("model-garbage-config", lambda c: T(c, f"model={c.f['garbage_config']}"), "does not load"),
    # --- generate
    Case("gen-max-new-tokens-negative", lambda c: G(c, "--max-new-tokens", "-1"), "--max-new-tokens: must be"),
    Case("gen-batch-size-zero", lambda c: G(c, "--batch-size", "0"), "--batch-size: must be an integer >= 1"),
    Case("gen-batch-size-text", lambda c: G(c, "--batch-size", "abc"), "invalid int value: 'abc'"),
    Case("gen-temperature-zero", lambda c: G(c, "--sample", "--temperature", "0"), "--temperature: must be"),
    Case("gen-top-p", lambda c: G(c, "--top-p", "1.5"), "--top-p: must be in (0, 1]"),
    Case("gen-limit-zero", lambda c: G(c, "--limit", "0"), "--limit: must be >= 1"),
    Case("gen-prompts-missing", lambda c: G(c, prompts=str(c.root / "nope.jsonl")), "data file not found"),
    Case("gen-out-exists", lambda c: G(c, out="existing.jsonl"), "already exists (use --overwrite"),
    Case("gen-out-is-a-dir", lambda c: G(c, out="userdir"), "is a directory"),
    Case("gen-prompt-too-long", lambda c: G(c, "--max-prompt-tokens", "16", prompts=c.f["long.jsonl"]),
         "prompt is longer than max_prompt_tokens=16"),
    Case("gen-missing-required", lambda c: ["generate", "--model", str(c.model)],
         "the following arguments are required"),
    # --- evaluate
    Case("eval-limit-negative", lambda c: E(c, "--limit", "-1"), "--limit: must be >= 1, got -1"),
    Case("eval-limit-zero", lambda c: E(c, "--limit", "0"), "--limit: must be >= 1, got 0"),
    Case("eval-batch-size-zero", lambda c: E(c, "--batch-size", "0"), "--batch-size: must be an integer >= 1"),
    Case("eval-out-is-a-file", lambda c: E(c, out="afile.txt"), "exists and is not a directory"),
    Case("eval-out-user-folder", lambda c: E(c, out="userdir"), "holds no tasft evaluation"),
    Case("eval-overwrite-user-folder", lambda c: E(c, "--overwrite", out="userdir"), "was not created by tasft"),
    Case("eval-overwrite-cwd", lambda c: E(c, "--overwrite", out="."), "is the current directory"),
    Case("eval-other-model", lambda c: E(c, out="evals/prev"), "holds an evaluation of 'other-model'"),
    Case("eval-out-inside-the-model", lambda c: [*E(c)[:2], c.f["garbage_weights"],
                                                 *E(c, out="garbage_weights/eval")[3:]],
         "lies inside the model being evaluated"),
    Case("stl-data-missing", lambda c: T(c, "method=stl", f"stl.data={c.root / 'nope.json'}"),
         "nope.json: data file not found"),
    Case("eval-unknown-suite", lambda c: E(c, suites="nosuch"), "unknown suite 'nosuch'"),
    Case("eval-suite-limit-format", lambda c: E(c, "--suite-limit", "toxic"), "expected SUITE=N"),
    Case("eval-suite-limit-unknown", lambda c: E(c, "--suite-limit", "cona=5"),
         "suite limit for a suite not evaluated"),
    Case("eval-unknown-scorer", lambda c: [*E(c)[:-2], "--harm-scorer", "gpt9", "--out", str(c.root / "ev")],
         "unknown harmfulness scorer 'gpt9'"),
    Case("eval-prompt-too-long", lambda c: E(c, "--max-prompt-tokens", "16", suites=c.f["long.jsonl"]),
         "prompt is longer than max_prompt_tokens=16"),
    # --- harvest
    Case("harvest-samples-zero", lambda c: H(c, "--samples", "0"), "--samples must be >= 1"),
    Case("harvest-keep-zero", lambda c: H(c, "--keep-harmful", "0"), "--keep-harmful must be >= 1"),
    Case("harvest-out-exists", lambda c: H(c, out="existing.jsonl"), "already exists"),
    Case("harvest-prompt-too-long", lambda c: [*H(c, "--max-prompt-tokens", "4", "--keep-harmful", "2")],
         "prompt is longer than max_prompt_tokens=4"),
    # --- the other commands
    Case("rescore-not-an-evaluation", lambda c: ["rescore", c.f["userdir"]], "no metrics.json"),
    Case("experiment-config-bad", lambda c: ["experiment", "lambda", "--config", c.f["exp.yaml"],
                                             "--out", str(c.root / "exp")], "at least one series"),
    Case("experiment-unknown-study", lambda c: ["experiment", "nope", "--config", c.f["exp.yaml"], "--out", "x"],
         "invalid choice: 'nope'"),
    Case("unknown-command", lambda c: ["frobnicate"], "invalid choice: 'frobnicate'"),
    Case("no-command", lambda c: [], "the following arguments are required: command"),
]


def test_the_corpus_is_large_and_named_uniquely():
    assert len(CASES) >= 50
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tiny_model_dir, tmp_path, capfd, monkeypatch):
    root = tmp_path / "case"
    root.mkdir()
    _populate(root, tiny_model_dir)
    monkeypatch.chdir(root)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.read_only is not None:
        blocked = root / case.read_only
        real_mkdir = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if self == blocked or blocked in self.parents:
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(Path, "mkdir", mkdir)
    before = _checksums(root)
    argv = case.argv(Ctx(root, tiny_model_dir))
    capfd.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from inside parse_args
        code = exc.code
    err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("tasft: error: ") and "Traceback" not in err[0], err
    assert case.expect in err[0], err
    assert _checksums(root) == before
