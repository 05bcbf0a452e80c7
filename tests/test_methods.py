"""The method registry: stl, kto and the contrastive data option on the tiny model, plus their data construction."""

import json

import pytest
import torch

from tasft.data import prompt_key, read_records
from tasft.errors import TasftError
from tasft.methods import get_method
from tasft.methods.kto import class_weights, kto_stream
from tasft.run_config import load_train_config
from tasft.suites import load_suite
from tasft.training.contrastive import CONTRASTIVE_FILE, contrastive_records
from tasft.training.pipeline import train

from .conftest import HARMFUL, SHARED, tiny_overrides, write_jsonl

DATA = SHARED / "data"


def stl_records(cfg):
    """The STL method's extra training pairs for ``cfg``."""
    return get_method("stl").extra_records(cfg)[0]
needs_data = pytest.mark.skipif(not (DATA / "stl").is_dir(), reason="needs ../shared/data")


@pytest.fixture
def safety_file(tmp_path):
    """Twelve safe-refusal pairs, two of whose prompts are evaluation-suite prompts, and one for a D_h prompt."""
    malicious = [it["prompt"] for it in load_suite("malicious", DATA, limit=2)]
    rows = [{"instruction": f"Explain how to do harmful thing number {i}.", "input": "",
             "output": f"I cannot help with harmful thing {i}."} for i in range(9)]
    rows += [{"instruction": p, "input": "", "output": "I cannot help with that."} for p in malicious]
    rows.append({"instruction": HARMFUL[0][0], "input": "", "output": "I will not help you break into a car."})
    path = tmp_path / "safety.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def talkative_model_dir(tmp_path_factory):
    """The tiny model with the embeddings of special and whitespace-only tokens zeroed, so that greedy decoding
    emits words rather than end-of-turn or blank lines."""
    from tasft.models import load_model, load_tokenizer

    from .conftest import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("talkative"))
    model, tok = load_model(str(path)), load_tokenizer(str(path))
    with torch.no_grad():
        blank = [i for i in range(len(tok)) if not tok.decode([i]).strip()]
        model.get_input_embeddings().weight[sorted(set(blank) | set(tok.all_special_ids))] = 0.0
    model.save_pretrained(path)
    return path


def _cfg(tiny_model_dir, tiny_data, tmp_path, **extra):
    return load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, tmp_path / "run", data_dir=str(DATA),
                                                  **extra))


@needs_data
def test_stl_draw_is_seeded_and_never_uses_an_evaluation_prompt(tiny_model_dir, tiny_data, tmp_path, safety_file):
    banned = {prompt_key(it["prompt"]) for it in load_suite("malicious", DATA, limit=2)}
    cfg = _cfg(tiny_model_dir, tiny_data, tmp_path, method="stl", **{"stl.data": str(safety_file), "stl.examples": 10})
    first = stl_records(cfg)
    assert len(first) == 10 and not banned & {prompt_key(r.prompt_text) for r in first}
    assert [r.prompt for r in stl_records(cfg)] == [r.prompt for r in first]
    other = _cfg(tiny_model_dir, tiny_data, tmp_path, method="stl", **{"stl.data": str(safety_file),
                                                                         "stl.examples": 10, "stl.seed": 5})
    assert [r.prompt for r in stl_records(other)] != [r.prompt for r in first]
    too_many = _cfg(tiny_model_dir, tiny_data, tmp_path, method="stl",
                    **{"stl.data": str(safety_file), "stl.examples": 11})
    with pytest.raises(TasftError, match="stl.examples: asked for 11 safety pairs.*has 10"):
        stl_records(too_many)


@needs_data
def test_default_stl_file_excludes_every_evaluation_suite(tiny_model_dir, tiny_data, tmp_path):
    from tasft.suites import evaluation_prompt_keys

    cfg = _cfg(tiny_model_dir, tiny_data, tmp_path, method="stl", **{"stl.examples": 2000})
    drawn = stl_records(cfg)
    assert len(drawn) == 2000 and all(r.response for r in drawn)
    assert not evaluation_prompt_keys(DATA) & {prompt_key(r.prompt_text) for r in drawn}


@needs_data
def test_contrastive_pairs_known_answers_generated_ones_and_no_eval_prompts(talkative_model_dir, tiny_data, tmp_path,
                                                                         safety_file):
    from tasft.models import load_model, load_tokenizer

    malicious = load_suite("malicious", DATA, limit=1)[0]["prompt"]
    harmful = read_records(str(tiny_data["harmful"]))
    harmful += read_records(str(write_jsonl(tmp_path / "more.jsonl", [{"prompt": malicious, "response": "x y"}])))
    cfg = _cfg(talkative_model_dir, tiny_data, tmp_path, **{"contrastive.enabled": "true",
                                                            "contrastive.safety_data": str(safety_file),
                                                            "contrastive.max_new_tokens": 8})
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    model, tok = load_model(str(talkative_model_dir)), load_tokenizer(str(talkative_model_dir))
    pairs = contrastive_records(cfg, harmful, model, tok, out_dir)
    by_prompt = {r.prompt: r for r in pairs}
    assert malicious not in by_prompt  # evaluation prompt dropped
    assert by_prompt[HARMFUL[0][0]].response == "I will not help you break into a car."
    generated = [r for r in pairs if r.origin.startswith("contrastive (generated)")]
    assert len(pairs) == len(HARMFUL) and len(generated) == len(HARMFUL) - 1
    cached = [json.loads(line) for line in (out_dir / CONTRASTIVE_FILE).read_text().splitlines()]
    assert len(cached) == len(generated) and cached[0]["prompt"][0]["role"] == "system"
    again = contrastive_records(cfg, harmful, model, tok, out_dir)  # reads the cache: identical
    assert [(r.prompt, r.response) for r in again] == [(r.prompt, r.response) for r in pairs]


@needs_data
def test_contrastive_source_generated_writes_every_answer(tiny_data, tmp_path, safety_file, monkeypatch):
    seen = []
    monkeypatch.setattr("tasft.training.contrastive._generate_safe",
                        lambda cfg, records, *a: seen.extend(r.prompt for r in records) or [])
    harmful = read_records(str(tiny_data["harmful"]))
    for source, generated in (("auto", len(HARMFUL) - 1), ("generated", len(HARMFUL))):
        seen.clear()
        cfg = load_train_config(None, [f"harmful_data.path={tiny_data['harmful']}", "contrastive.enabled=true",
                                       f"contrastive.safety_data={safety_file}", f"contrastive.source={source}"])
        contrastive_records(cfg, harmful, None, None, tmp_path)
        assert len(seen) == generated  # auto takes the known STL answer for HARMFUL[0]; generated writes it too


def test_kto_class_weights_follow_trl_guidance():
    def settings(*extra):
        return load_train_config(None, ["method=kto", *extra]).method_settings

    assert class_weights(settings(), 200, 50) == (1.0, 4.0)
    assert class_weights(settings(), 30, 60) == (2.0, 1.0)
    assert class_weights(settings("kto.desirable_weight=0.5"), 200, 50) == (0.5, 2.0)
    assert class_weights(settings("kto.desirable_weight=0.5", "kto.undesirable_weight=3"), 200, 50) == (0.5, 3.0)


def test_kto_stream_is_seeded_whole_passes():
    items = [{"i": i} for i in range(5)]
    stream = kto_stream(items, 12, seed=3)
    assert len(stream) == 15
    for p in range(3):
        assert sorted(x["i"] for x in stream[p * 5:(p + 1) * 5]) == list(range(5))
    assert stream == kto_stream(items, 12, seed=3) and stream != kto_stream(items, 12, seed=4)


def _outputs_ok(out, method):
    for name in ("model.safetensors", "config.yaml", "metrics.json", "README.md", "log.jsonl"):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["steps"] == 4
    assert set(metrics["before"]) == {"harmful_logprob", "heldout_nll"} == set(metrics["after"])
    return metrics


@needs_data
def test_stl_run(tiny_model_dir, tiny_data, tmp_path, safety_file):
    cfg = _cfg(tiny_model_dir, tiny_data, tmp_path, method="stl", **{"stl.data": str(safety_file),
                                                                     "stl.examples": 5})
    metrics = _outputs_ok(tmp_path / "run", "stl") if train(cfg, progress=False) else None
    assert metrics["data"]["stl_examples"] == 5 and metrics["data"]["train_records"] == 8 + 5
    assert metrics["stl"] == {"examples": 5, "seed": 0} and "penalty" not in metrics
    assert metrics["label"] == "stl N=5"
    assert "5 STL safety pairs" in (tmp_path / "run" / "README.md").read_text()


@needs_data
def test_kto_run_uses_trl_with_balanced_weights(tiny_model_dir, tiny_data, tmp_path):
    cfg = _cfg(tiny_model_dir, tiny_data, tmp_path, method="kto")
    train(cfg, progress=False)
    metrics = _outputs_ok(tmp_path / "run", "kto")
    kto = metrics["kto"]
    assert kto["desirable"] == 8 and kto["undesirable"] == 4
    assert kto["desirable_weight"] * 8 == pytest.approx(kto["undesirable_weight"] * 4)
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("kl" in r for r in logs) and metrics["train_tokens"] > 0
    assert "KTO (TRL)" in (tmp_path / "run" / "README.md").read_text()


@needs_data
def test_ta_sft_with_contrastive_data(talkative_model_dir, tiny_data, tmp_path, safety_file):
    cfg = _cfg(talkative_model_dir, tiny_data, tmp_path, **{"ta_sft.penalty": "nlcl"},
               **{"contrastive.enabled": "true", "contrastive.safety_data": str(safety_file),
                  "contrastive.max_new_tokens": 8})
    train(cfg, progress=False)
    metrics = _outputs_ok(tmp_path / "run", "ta-sft")
    assert metrics["contrastive"] is True and metrics["data"]["contrastive_pairs"] == len(HARMFUL)
    assert metrics["data"]["train_records"] == 8 + len(HARMFUL)
    assert (tmp_path / "run" / CONTRASTIVE_FILE).is_file()


@pytest.mark.parametrize(("extra", "expected"), [
    ({"method": "dpo"}, "method: unknown method 'dpo'"),
    ({"method": "stl", "stl.examples": 0}, "stl.examples: must be > 0"),
    ({"method": "kto", "kto.beta": 0}, "kto.beta: must be > 0"),
    ({"method": "kto", "kto.undesirable_weight": -1}, "kto.undesirable_weight: must be > 0 or null"),
    ({"method": "kto", "batch_size": 1, "harmful_batch_size": 0}, "harmful_batch_size: must be > 0"),
    ({"contrastive.max_new_tokens": 0}, "contrastive.max_new_tokens: must be > 0"),
])
def test_method_settings_are_validated(tiny_model_dir, tiny_data, tmp_path, extra, expected):
    with pytest.raises(TasftError, match=expected):
        load_train_config(None, tiny_overrides(tiny_model_dir, tiny_data, tmp_path, **extra))


def test_kto_and_contrastive_need_a_harmful_set():
    with pytest.raises(TasftError, match="method kto needs a harmful data set"):
        load_train_config(None, ["method=kto", "harmful_data=null"])
    with pytest.raises(TasftError, match="contrastive data option needs a harmful data set"):
        load_train_config(None, ["contrastive.enabled=true", "harmful_data=null", "method=sft"])
