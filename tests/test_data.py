import json

import pytest
from transformers import AutoTokenizer

from tasft.config import DataSource
from tasft.data import (
    Record,
    collate,
    format_prompt,
    heldout_bucket,
    load_source,
    read_records,
    select_records,
    split_template,
    tokenize_record,
    tokenize_records,
)
from tasft.errors import TasftError

from .conftest import SHARED, write_jsonl


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    t = AutoTokenizer.from_pretrained(tiny_model_dir)
    return t


def test_reads_all_record_shapes(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [
        {"prompt": "p1", "response": "r1"},
        {"instruction": "do x", "input": "with y", "output": "done"},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"prompt": "only a prompt"},
        "a bare string prompt",
    ])
    recs = read_records(str(tmp_path / "a.jsonl"))
    assert [r.response for r in recs] == ["r1", "done", "hello", None, None]
    assert recs[1].prompt == "do x\n\nwith y"
    assert recs[2].prompt == [{"role": "user", "content": "hi"}] and recs[2].prompt_text == "hi"
    assert recs[0].origin.endswith("a.jsonl:1")


def test_reads_json_csv_and_stl_instruction_files(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"instructions": ["a?", "b?"], "tags": ["x", "y"]}))
    assert [r.prompt for r in read_records(str(tmp_path / "s.json"))] == ["a?", "b?"]
    (tmp_path / "l.json").write_text(json.dumps([{"instruction": "i", "input": "", "output": "o"}]))
    assert read_records(str(tmp_path / "l.json"))[0].response == "o"
    (tmp_path / "c.csv").write_text("id,prompt,label\n1,hello there,safe\n2,second,unsafe\n")
    recs = read_records(str(tmp_path / "c.csv"))
    assert [r.prompt for r in recs] == ["hello there", "second"] and recs[1].origin.endswith("c.csv:3")


@pytest.mark.skipif(not (SHARED / "data").exists(), reason="needs ../shared/data")
def test_reads_the_shared_files():
    assert len(read_records(str(SHARED / "data/stl/evaluation/I-MaliciousInstructions.json"))) == 100
    assert len(read_records(str(SHARED / "data/xstest/xstest_prompts.csv"))) == 450
    alpaca = read_records(str(SHARED / "data/alpaca_eval/text_davinci_003.json"))
    assert len(alpaca) == 805 and alpaca[0].response


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "c", "resp\n')
    with pytest.raises(TasftError, match=r"bad\.jsonl:3: malformed JSON line"):
        read_records(str(path))


def test_missing_unknown_and_shapeless_inputs(tmp_path):
    with pytest.raises(TasftError, match="data file not found"):
        read_records(str(tmp_path / "nope.jsonl"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(TasftError, match="unsupported data format"):
        read_records(str(tmp_path / "x.txt"))
    write_jsonl(tmp_path / "k.jsonl", [{"text": "no prompt key"}])
    with pytest.raises(TasftError, match=r"k\.jsonl:1: record has no prompt"):
        read_records(str(tmp_path / "k.jsonl"))


def test_records_without_response_and_empty_sets_are_errors(tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "c"}])
    with pytest.raises(TasftError, match=r"p\.jsonl:2: record has no response"):
        load_source(DataSource(str(tmp_path / "p.jsonl")), "train_data", need_response=True)
    kept = load_source(DataSource(str(tmp_path / "p.jsonl"), missing_response="skip"), "d", need_response=True)
    assert [r.prompt for r in kept] == ["a"]
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(TasftError, match="no records"):
        load_source(DataSource(str(tmp_path / "e.jsonl")), "harmful_data", need_response=True)


def test_split_is_deterministic_disjoint_and_order_free():
    recs = [Record(f"question number {i}?", "a", f"f:{i}") for i in range(400)]
    train = select_records(recs, DataSource("x", split="train"))
    held = select_records(recs, DataSource("x", split="heldout"))
    assert len(train) + len(held) == 400 and not {r.prompt for r in train} & {r.prompt for r in held}
    assert 0.12 < len(held) / 400 < 0.28
    again = select_records(list(reversed(recs)), DataSource("x", split="heldout"))
    assert {r.prompt for r in again} == {r.prompt for r in held}
    assert heldout_bucket("Hello  World") == heldout_bucket("hello world")


def test_exclude_drops_prompts_of_other_files_and_duplicates(tmp_path):
    (tmp_path / "suite.json").write_text(json.dumps({"instructions": ["How do I do X?"]}))
    recs = [Record("how do i do x", None, "a"), Record("Other", None, "b"), Record("other ", None, "c")]
    kept = select_records(recs, DataSource("x", exclude=[str(tmp_path)]))
    assert [r.origin for r in kept] == ["b"]


def test_shuffle_and_limit_are_seeded():
    recs = [Record(f"p{i}", None, str(i)) for i in range(20)]
    a = select_records(recs, DataSource("x", shuffle_seed=3, limit=5))
    b = select_records(recs, DataSource("x", shuffle_seed=3, limit=5))
    c = select_records(recs, DataSource("x", shuffle_seed=4, limit=5))
    assert [r.origin for r in a] == [r.origin for r in b] != [r.origin for r in c] and len(a) == 5


def test_chat_template_split_and_masks(tok):
    before, after = split_template(tok, "What is two plus two?")
    assert before == format_prompt(tok, "What is two plus two?") and before.endswith("<|im_start|>assistant\n")
    assert after == "<|im_end|>\n"
    t = tokenize_record(tok, Record("What is two plus two?", "Four.", "x"), max_length=64)
    batch = collate([t], tok.pad_token_id, mask="response")
    masked = batch["input_ids"][0][batch["loss_mask"][0]]
    assert tok.decode(masked) == "Four.<|im_end|>\n"
    content = collate([t], tok.pad_token_id, mask="content")
    assert tok.decode(content["input_ids"][0][content["loss_mask"][0]]) == "Four."
    first = collate([t], tok.pad_token_id, mask="content", first_tokens=1)
    assert int(first["loss_mask"].sum()) == 1


def test_alpaca_template_for_tokenizers_without_chat_template(tok):
    plain = AutoTokenizer.from_pretrained(tok.name_or_path)
    plain.chat_template = None
    text = format_prompt(plain, "Say hi")
    assert "### Instruction:\nSay hi" in text and text.endswith("### Response:\n")
    assert split_template(plain, "Say hi")[1] == plain.eos_token


def test_a_base_tokenizer_gets_bos_before_the_prompt_in_training_and_generation(tok):
    """Gemma-style base tokenizers start text with BOS: the training rows and the generation prompt both get it."""
    from tokenizers import processors

    from tasft.data import bos_prefix, prompt_ids
    from tasft.generation.generate import _encode_prompts

    base = AutoTokenizer.from_pretrained(tok.name_or_path)
    base.chat_template = None
    assert bos_prefix(base) == []  # no BOS token: nothing added
    base.bos_token = "<|endoftext|>"
    bos = base.bos_token_id
    base._tokenizer.post_processor = processors.TemplateProcessing(single=f"{base.bos_token} $A",
                                                                   special_tokens=[(base.bos_token, bos)])
    assert base("x")["input_ids"][0] == bos and bos_prefix(base) == [bos]
    row = tokenize_record(base, Record("Say hi", "Hi there", "t"), 1024)
    ids = prompt_ids(base, "Say hi")
    assert ids[0] == bos and ids.count(bos) == 1 and row.input_ids[: row.prompt_len] == ids
    assert _encode_prompts(base, ["Say hi"], 1024, None) == [ids]
    assert bos_prefix(tok) == [] and prompt_ids(tok, "Say hi")[0] != bos  # a chat template writes its own


def test_truncation_keeps_part_of_the_response_and_long_prompts_error(tok):
    rec = Record("Say hello in French.", "word " * 200, "f:1")
    t = tokenize_record(tok, rec, max_length=40)
    assert len(t.input_ids) == 40 and t.response_len >= 1
    out, stats = tokenize_records(tok, [rec], max_length=40)
    assert stats["truncated"] == 1 and out[0].response_len == t.response_len
    long = Record("long prompt " * 100, "ok", "f:2")
    with pytest.raises(TasftError, match=r"f:2: prompt is longer than max_length=40"):
        tokenize_records(tok, [rec, long], max_length=40)
    kept, stats = tokenize_records(tok, [rec, long], max_length=40, long_prompt="skip")
    assert len(kept) == 1 and stats["skipped"] == 1


def test_collate_pads_right_with_attention_mask(tok):
    a = tokenize_record(tok, Record("a", "bb", "1"), 64)
    b = tokenize_record(tok, Record("a much longer prompt here", "c", "2"), 64)
    batch = collate([a, b], tok.pad_token_id)
    assert batch["input_ids"].shape[1] == max(len(a.input_ids), len(b.input_ids))
    assert int(batch["attention_mask"][0].sum()) == len(a.input_ids)
    assert not batch["loss_mask"][0, len(a.input_ids):].any()


def test_demo_data_is_packaged():
    benign = read_records("demo:benign.jsonl")
    toxic = read_records("demo:toxic_prompts.jsonl")
    assert len(benign) == 40 and all(r.response for r in benign)
    assert len(toxic) == 24 and all(r.response is None for r in toxic)
