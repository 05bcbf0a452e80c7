"""λ by constraint (ta_sft.lambda_budget): the dual update's formula, and a run whose logged λ follows it."""

from __future__ import annotations

import json
import math

import pytest

from tasft.methods.dual import dual_update

from .conftest import SHARED


def test_dual_update_moves_lambda_against_the_constraint():
    # held-out NLL 10 % over the reference with a 2 % budget: g = 0.08, λ shrinks by exp(−η g)
    assert dual_update(1.0, 2.2, 2.0, 0.02, 20.0, 1.0) == pytest.approx(math.exp(-20 * 0.08))
    assert dual_update(1.0, 1.9, 2.0, 0.02, 20.0, 1.0) > 1.0  # under budget: more penalty
    assert dual_update(1.0, 2.04, 2.0, 0.02, 20.0, 1.0) == pytest.approx(1.0)  # on the boundary: unchanged
    assert dual_update(1e-3, 100.0, 1.0, 0.0, 20.0, 1.0) == pytest.approx(1e-3)  # clipped at λ0 / 1000


def test_a_run_logs_lambda_and_follows_the_update(tiny_model_dir, tiny_data, tmp_path):
    from tasft import load_train_config, train
    from tests.conftest import tiny_overrides

    out = tmp_path / "run"
    cfg = load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, max_steps=4, measure="false",
                                                 **{"ta_sft.lambda_budget": 0.0, "ta_sft.lambda_reference_nll": 5.5,
                                                    "ta_sft.lambda_step": 5.0}))
    metrics = train(cfg, progress=False)
    logged = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "lambda" in r]
    assert len(logged) == 4
    lam = 1.0
    for r in logged:  # each step's λ is the update from the previous one at the held-out NLL measured then
        lam = dual_update(lam, r["heldout_nll"], 5.5, 0.0, 5.0, 1.0)
        assert r["lambda"] == pytest.approx(lam, rel=1e-6)
    assert len({r["lambda"] for r in logged}) == 4 and metrics["lambda_final"] == pytest.approx(lam, rel=1e-6)
    assert metrics["lambda_budget"] == 0.0


def test_a_budget_without_heldout_rows_is_one_line_error(tiny_model_dir, tiny_data, tmp_path, capfd):
    from tasft.cli import main
    from tests.conftest import tiny_overrides

    argv = ["train"]
    for o in tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "run", eval_data="null",
                            **{"ta_sft.lambda_budget": 0.02}):
        argv += ["--set", o]
    assert main(argv) != 0
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].endswith("ta_sft.lambda_budget needs held-out D_u rows to measure (set eval_data)")


@pytest.mark.parametrize("older_checkpoint", [False, True])
def test_a_resumed_run_goes_on_from_the_saved_lambda(tiny_model_dir, tiny_data, tmp_path, older_checkpoint):
    """λ and its reference NLL are the term's state in each checkpoint (tasft_term.json; a checkpoint written
    before that holds them as tasft_lambda.json, which resumes the same way)."""
    from tasft import load_train_config, train
    from tests.conftest import tiny_overrides

    out = tmp_path / "run"
    settings = {"ta_sft.lambda_budget": 0.0, "ta_sft.lambda_step": 5.0, "measure": "false", "save_steps": 2,
                "keep_checkpoints": "true"}
    train(load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, max_steps=2, **settings)),
          progress=False)
    saved = json.loads((out / "checkpoint-2" / "tasft_term.json").read_text())
    if older_checkpoint:
        (out / "checkpoint-2" / "tasft_term.json").rename(out / "checkpoint-2" / "tasft_lambda.json")
    metrics = train(load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, max_steps=4, **settings)),
                    resume=True, progress=False)
    logged = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "lambda" in r]
    step3 = next(r for r in logged if r["step"] == 3)
    assert step3["lambda"] == pytest.approx(dual_update(saved["lambda"], step3["heldout_nll"], saved["reference_nll"],
                                                        0.0, 5.0, 1.0), rel=1e-6)
    assert metrics["steps"] == 4


@pytest.mark.skipif(not (SHARED / "data").exists(), reason="needs ../shared/data")
def test_the_controller_measures_rows_the_evaluation_does_not_score():
    """λ is steered on the last held-out rows; the full spec's reference NLL is measured on the first 100."""
    from tasft.config import DataSource
    from tasft.data import Tokenized, load_source
    from tasft.evaluation.specs import get_spec
    from tasft.methods.dual import HELDOUT_ROWS, LambdaController
    from tasft.suites import load_suite

    class Term:
        lam, controller = 1.0, None

    rows = [Tokenized([1, 2, 3], 1, 2, 0, f"row{i}") for i in range(40)]
    assert [r.origin for r in LambdaController(Term(), rows, 0, 0.02, 20.0).rows] == [f"row{i}" for i in range(24, 40)]

    data = SHARED / "data"
    heldout = load_source(DataSource(str(data / "alpaca_eval/text_davinci_003.json"), split="heldout",
                                     missing_response="skip"), "eval", True)
    limit = get_spec("full").suite_limits["alpaca-eval"]
    scored = {it["prompt"] for it in load_suite("alpaca-eval", data, limit=limit)}
    steered = {r.prompt_text for r in heldout[-HELDOUT_ROWS:]}
    assert len(steered) == HELDOUT_ROWS and not steered & scored


def test_a_reference_model_sets_the_budget_from_its_nll(tiny_model_dir, tiny_data, tmp_path):
    """lambda_reference_model measures the reference NLL on the controller's rows under that model: given the
    starting model itself, the run steers exactly as the default (the starting model's NLL, measured in-run); given
    another model (the starting weights perturbed), it steers otherwise."""
    import shutil

    import torch

    from tasft import load_train_config, train
    from tasft.models import load_model
    from tests.conftest import tiny_overrides

    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    perturbed = load_model(str(tiny_model_dir))
    torch.manual_seed(0)
    with torch.no_grad():
        for w in perturbed.parameters():
            w.add_(0.05 * torch.randn_like(w))
    perturbed.save_pretrained(other)
    logs = {}
    for name, extra in (("default", {}), ("itself", {"ta_sft.lambda_reference_model": str(tiny_model_dir)}),
                        ("other", {"ta_sft.lambda_reference_model": str(other)})):
        out = tmp_path / name
        settings = {"ta_sft.lambda_budget": 0.0, "ta_sft.lambda_step": 5.0, "measure": "false", **extra}
        train(load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, max_steps=3, **settings)),
              progress=False)
        logs[name] = [(r["heldout_nll"], r["lambda"]) for r in map(json.loads, (out / "log.jsonl").read_text()
                                                                   .splitlines()) if "lambda" in r]
    flat = {name: [value for pair in rows for value in pair] for name, rows in logs.items()}  # approx takes flat lists
    assert len(logs["itself"]) == 3 and flat["itself"] == pytest.approx(flat["default"], rel=1e-6)
    assert logs["other"][0][1] != pytest.approx(logs["default"][0][1], rel=1e-3)  # another reference, another λ


def test_a_reference_run_sets_the_budget_step_by_step(tiny_model_dir, tiny_data, tmp_path):
    """log_heldout_nll writes a run's held-out NLL curve; a λ-by-constraint run with lambda_reference_run compares
    its NLL after step t with that curve's value at step t (not with one number for the whole run)."""
    from tasft import load_train_config, train
    from tasft.methods.dual import HELDOUT_FILE
    from tests.conftest import tiny_overrides

    sft = tmp_path / "sft"
    train(load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, sft, method="sft", measure="false",
                                                 log_heldout_nll="true")), progress=False)
    curve = json.loads((sft / HELDOUT_FILE).read_text())
    assert sorted(map(int, curve["steps"])) == [0, 1, 2, 3, 4] and len(curve["rows"]) == 16
    values = {int(k): v for k, v in curve["steps"].items()}
    assert values[4] < values[0]  # plain SFT at lr 1e-3 lowers the held-out NLL of its own data

    out = tmp_path / "run"
    train(load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, measure="false", **{
        "ta_sft.lambda_budget": 0.0, "ta_sft.lambda_step": 5.0, "ta_sft.lambda_reference_run": str(sft)})),
        progress=False)
    logged = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "lambda" in r]
    lam = 1.0
    for r in logged:
        lam = dual_update(lam, r["heldout_nll"], values[r["step"]], 0.0, 5.0, 1.0)
        assert r["lambda"] == pytest.approx(lam, rel=1e-6)
    assert [r["step"] for r in logged] == [1, 2, 3, 4]


def test_a_reference_run_that_cannot_be_followed_is_one_line_error(tiny_model_dir, tiny_data, tmp_path, capfd):
    """No curve, a curve of other rows, or one that stops before this run does: a one-line error naming it."""
    from tasft import load_train_config, train
    from tasft.cli import main
    from tasft.errors import TasftError
    from tasft.methods.dual import HELDOUT_FILE
    from tests.conftest import tiny_overrides

    def argv(out, reference, **extra):
        args = ["train"]
        for o in tiny_overrides(tiny_model_dir, tiny_data, out, measure="false", **{
                "ta_sft.lambda_budget": 0.02, "ta_sft.lambda_reference_run": str(reference)}, **extra):
            args += ["--set", o]
        return args

    assert main(argv(tmp_path / "a", tmp_path / "nothing")) == 2
    assert capfd.readouterr().err.strip().splitlines()[-1].endswith(
        f"{tmp_path / 'nothing' / HELDOUT_FILE} not found (train the reference with log_heldout_nll: true)")
    assert not (tmp_path / "a").exists()  # checked before the run writes anything

    short = tmp_path / "short"
    train(load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, short, method="sft", measure="false",
                                                 max_steps=2, log_heldout_nll="true")), progress=False)
    with pytest.raises(TasftError, match="has no held-out NLL at step 3"):
        train(load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "b", measure="false",
                                                     **{"ta_sft.lambda_budget": 0.02,
                                                        "ta_sft.lambda_reference_run": str(short)})), progress=False)
    with pytest.raises(TasftError, match="measured other held-out rows"):
        train(load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "c", measure="false",
                                                     max_steps=2, eval_data=str(tiny_data["harmful"]),
                                                     **{"ta_sft.lambda_budget": 0.02,
                                                        "ta_sft.lambda_reference_run": str(short)})), progress=False)


def test_a_resumed_run_keeps_its_curve_up_to_the_checkpoint(tiny_model_dir, tiny_data, tmp_path):
    from tasft import load_train_config, train
    from tasft.methods.dual import HELDOUT_FILE
    from tests.conftest import tiny_overrides

    out = tmp_path / "sft"

    def run(steps):
        train(load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, out, method="sft", measure="false",
                                                     log_heldout_nll="true", max_steps=steps, keep_checkpoints="true")),
              resume=steps > 2, progress=False)
        return json.loads((out / HELDOUT_FILE).read_text())["steps"]

    first = run(2)
    (out / HELDOUT_FILE).write_text(json.dumps({"rows": json.loads((out / HELDOUT_FILE).read_text())["rows"],
                                                "steps": {**first, "3": 99.0}}))  # a stopped attempt's step 3
    again = run(4)
    assert sorted(map(int, again)) == [0, 1, 2, 3, 4]
    assert {k: again[k] for k in first} == first and again["3"] != 99.0
