"""tasft's greedy decoder gives model.generate's tokens, row for row — with rows of different lengths, rows that
finish early and leave the batch, and a batch that finishes before max_new_tokens."""

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from tasft.generation.decode import greedy_decode
from tasft.models import load_model, load_tokenizer

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_generate.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_generate", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir))


def _prompts(tokenizer):
    texts = ["Hi", "What is the capital of France and why?", "Tell me a story about a dog that learns to fly.",
             "ok", "Explain rain.", "Name three colours, please, in order of preference."]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_greedy_decode_matches_generate(tiny):
    model, tokenizer = tiny
    encoded = _prompts(tokenizer)
    plain = _bench()._plain_generate(model, tokenizer, encoded, 12)
    assert greedy_decode(model, tokenizer, encoded, 12) == plain


def test_rows_that_finish_early_leave_the_batch_with_the_same_tokens(tiny, monkeypatch):
    model, tokenizer = tiny
    encoded = _prompts(tokenizer)
    free = _bench()._plain_generate(model, tokenizer, encoded, 16)
    # make the end-of-turn token one that several rows (not all) produce: those rows stop there
    counts = Counter(tok for row in free for tok in set(row))
    stop = max((tok for tok, n in counts.items() if n < len(free)), key=lambda tok: counts[tok])
    assert counts[stop] >= 2  # enough finished rows (>= COMPACT_SHARE of 6) to trigger compaction
    monkeypatch.setattr(model.generation_config, "eos_token_id", stop)
    plain = _bench()._plain_generate(model, tokenizer, encoded, 16)
    ours = greedy_decode(model, tokenizer, encoded, 16)
    assert ours == plain
    assert any(len(r) < 16 for r in ours) and all(r[-1] == stop for r in ours if len(r) < 16)
    from tasft.generation import decode

    selected, select = [], decode.PreallocatedLayer.batch_select_indices

    def counting(self, indices):
        selected.append(len(indices))
        select(self, indices)

    monkeypatch.setattr(decode.PreallocatedLayer, "batch_select_indices", counting)
    assert greedy_decode(model, tokenizer, encoded, 16) == plain
    assert selected and min(selected) < len(encoded)  # finished rows did leave the batch


def test_bench_generate_runs_and_reports_identity(tiny_model_dir, tmp_path):
    from .conftest import SHARED

    if not (SHARED / "data").exists():
        pytest.skip("needs ../shared/data")
    result = _bench().main(["--model", str(tiny_model_dir), "--prompts", "12", "--batch-size", "4",
                            "--max-new-tokens", "6", "--out", str(tmp_path), "--tag", "tiny", "--batch-sweep", "3,12",
                            "--matmul"])
    saved = json.loads((tmp_path / "bench_generate_tiny.json").read_text())
    assert saved["token_identical_rows"] == result["prompts"] == 12
    assert saved["new_tokens"]["tasft"] == saved["new_tokens"]["generate"] > 0
    assert saved["matmul"]["gflops"] > 0
    sweep = json.loads((tmp_path / "bench_generate_batch_tiny.json").read_text())
    assert [b["batch_size"] for b in sweep["batches"]] == [3, 12]
    assert all(b["rows_identical_to_largest_batch"] == 12 for b in sweep["batches"])


def test_workers_give_the_same_answers_as_one_process(tiny_model_dir, tmp_path):
    """Two forked 1-thread workers share the batches: the same texts, in the same order, as one process."""
    from tasft.generation.generate import GenerationSettings, generate_jsonl

    model, tokenizer = load_model(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir))
    items = [{"id": str(i), "prompt": f"Question number {i}: " + "why " * (i % 5)} for i in range(11)]
    outs = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}.jsonl"
        generate_jsonl(model, tokenizer, items, out, GenerationSettings(max_new_tokens=5, batch_size=2,
                                                                        workers=workers), progress=False)
        outs[workers] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in outs[2]] == [it["id"] for it in items]
    assert outs[2] == outs[1] == outs[3]


def test_a_failing_worker_is_one_error(tiny_model_dir, tmp_path, monkeypatch):
    from tasft.errors import TasftError
    from tasft.generation import generate
    from tasft.generation.generate import GenerationSettings, generate_jsonl

    model, tokenizer = load_model(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir))

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory in the worker")

    monkeypatch.setattr(generate, "generate_batch", broken)
    items = [{"id": str(i), "prompt": f"q {i}"} for i in range(4)]
    with pytest.raises(TasftError, match="a generation worker failed: RuntimeError: out of memory in the worker"):
        generate_jsonl(model, tokenizer, items, tmp_path / "x.jsonl",
                       GenerationSettings(max_new_tokens=3, batch_size=1, workers=2), progress=False)


def test_a_worker_that_dies_is_one_error(tiny_model_dir, tmp_path, monkeypatch):
    import os

    from tasft.errors import TasftError
    from tasft.generation import generate, workers
    from tasft.generation.generate import GenerationSettings, generate_jsonl

    model, tokenizer = load_model(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir))
    monkeypatch.setattr(generate, "generate_batch", lambda *a, **k: os._exit(9))  # as the OOM killer would
    monkeypatch.setattr(workers, "POLL_S", 0.2)
    items = [{"id": str(i), "prompt": f"q {i}"} for i in range(4)]
    with pytest.raises(TasftError, match="a generation worker died \\(exit code 9"):
        generate_jsonl(model, tokenizer, items, tmp_path / "x.jsonl",
                       GenerationSettings(max_new_tokens=3, batch_size=1, workers=2), progress=False)


def test_answers_of_other_weights_are_never_resumed(tiny, tiny_model_dir, tmp_path):
    """A file of answers resumes only under the same model fingerprint (a run retrained in the same directory has
    another one), seed and decoding; otherwise one error and the file as it was."""
    import os
    import shutil

    from tasft.errors import TasftError
    from tasft.generation.generate import GenerationSettings, generate_jsonl
    from tasft.models import model_fingerprint

    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    first = model_fingerprint(str(copy))
    assert first is not None and model_fingerprint(str(copy)) == first
    weights = next(copy.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # rewritten later
    assert model_fingerprint(str(copy)) != first
    assert model_fingerprint("smollm2-135m-instruct") is None and model_fingerprint(str(tmp_path / "none")) is None

    model, tokenizer = tiny
    items = [{"id": str(i), "prompt": f"q {i}"} for i in range(3)]
    out, settings = tmp_path / "answers.jsonl", GenerationSettings(max_new_tokens=3, batch_size=2)
    generate_jsonl(model, tokenizer, items[:2], out, settings, extra={"model": "m", "model_fingerprint": first},
                   progress=False)
    before = out.read_bytes()
    for extra in ({"model": "m", "model_fingerprint": "another"}, {"model": "m2"}):
        with pytest.raises(TasftError, match="answers in it were generated with model"):
            generate_jsonl(model, tokenizer, items, out, settings, extra=extra, progress=False)
    assert out.read_bytes() == before
    generate_jsonl(model, tokenizer, items, out, settings, extra={"model": "m", "model_fingerprint": first},
                   progress=False)  # the same model resumes: one more answer
    assert len(out.read_text().splitlines()) == 3


def test_one_pass_over_several_files_writes_each_file_as_alone(tiny_model_dir, tmp_path):
    """generate_files pools the prompts of several outputs into shared batches: each file gets exactly the answers,
    in its own order, that generating it alone gives — also when one file was half done (resumed) and ids repeat
    across files."""
    from tasft.generation.generate import GenerationSettings, generate_files, generate_jsonl

    model, tokenizer = load_model(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir))
    first = [{"id": str(i), "prompt": f"Question number {i}: " + "why " * (i % 4)} for i in range(7)]
    second = [{"id": str(i), "prompt": f"Tell me {i} things about " + "bees " * (i % 3)} for i in range(5)]
    settings = GenerationSettings(max_new_tokens=5, batch_size=3)
    alone = {}
    for name, items in (("a", first), ("b", second)):
        generate_jsonl(model, tokenizer, items, tmp_path / f"alone_{name}.jsonl", settings, progress=False)
        alone[name] = (tmp_path / f"alone_{name}.jsonl").read_text()
    half = tmp_path / "pooled_a.jsonl.partial"  # the first file was interrupted after three answers
    half.write_text("".join(alone["a"].splitlines(keepends=True)[:3]))
    for workers in (1, 2):
        for name in ("a", "b"):
            (tmp_path / f"pooled_{name}.jsonl").unlink(missing_ok=True)
        if workers == 2:
            half.write_text("".join(alone["a"].splitlines(keepends=True)[:3]))
        outs = generate_files(model, tokenizer, [(first, tmp_path / "pooled_a.jsonl"),
                                                 (second, tmp_path / "pooled_b.jsonl")],
                              GenerationSettings(max_new_tokens=5, batch_size=3, workers=workers), progress=False)
        assert [p.read_text() for p in outs] == [alone["a"], alone["b"]]
        assert not half.exists()
