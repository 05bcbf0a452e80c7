"""The GPU check: sft against ta-sft training steps (fused and plain loss paths) in fp32 and bf16 autocast, on
randomly initialised models of the default model's config and of a ~1B config, through the real trainer.

    python bench/device_check.py --out "$OUT/device_check"            # on a CUDA machine (bench/device_check.sh)
    python bench/device_check.py --device cpu --configs tiny --steps 3 --out /tmp/dc   # a seconds-long smoke run

Per (config, precision, method) it runs ``--steps`` optimizer steps of :class:`tasft.TASFTTrainer` on the same
seeded random token batches (``--batch`` D_u rows and as many D_h rows of ``--seq`` tokens, a quarter of them
prompt; sft gets 2 × ``--batch`` D_u rows, the same tokens a step) and records each step's wall time (synchronised),
the logged losses and the peak accelerator memory (``max_memory_allocated`` over the run). The first ``--warmup``
steps are left out of the time. Writes ``device_check.json`` (every number) and ``device_check.md`` (a table: median
step time, its ratio to sft of the same config and precision, peak memory, the largest |bf16 − fp32| difference of
the logged loss and NLL).
Random weights: no checkpoint has to be carried to the machine; speed and memory depend on the shapes only.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_measure beside this file

from bench_measure import step_timer  # noqa: E402

CONFIGS = {  # LlamaConfig keywords
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True),
    "llama-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True),
    "tiny": dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, tie_word_embeddings=True),
}
METHODS = {  # name → (method, method_args, loss_chunk_size)
    "sft": ("sft", None, 256),
    "ta-sft emd fused": ("ta-sft", {"penalty": "emd", "lambda": 1.0}, 256),
    "ta-sft emd plain": ("ta-sft", {"penalty": "emd", "lambda": 1.0}, None),
    "ta-sft emd_lb fused": ("ta-sft", {"penalty": "emd_lb", "lambda": 1.0}, 256),
}


def _tokenizer():
    """A one-token word-level tokenizer: the trainer needs a pad id, the batches are token ids already."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0}, unk_token="<pad>")),
                                   pad_token="<pad>", eos_token="<pad>")


def _rows(n: int, seq: int, vocab: int, seed: int):
    from tasft.data import Tokenized

    rng = random.Random(seed)
    prompt = seq // 4
    return [Tokenized([rng.randrange(1, vocab) for _ in range(seq)], prompt, seq - prompt, 0, f"random:{seed}:{i}")
            for i in range(n)]


def run_one(config: str, precision: str, method: str, args, device: str) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from tasft import TASFTConfig, TASFTTrainer

    name, method_args, chunk = METHODS[method]
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs (a 1B model's CPU init would take most of a minute)
        model = LlamaForCausalLM(LlamaConfig(**CONFIGS[config], max_position_embeddings=max(args.seq, 128)))
    vocab = CONFIGS[config]["vocab_size"]
    rows = args.batch * (2 if name == "sft" else 1)  # every method sees the same tokens a step
    timer = step_timer(torch.device(device))
    if device == "cuda":
        gc.collect()  # the previous run's model and trainer, before the peak is reset
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        targs = TASFTConfig(output_dir=out, method=name, method_args=method_args, loss_chunk_size=chunk,
                            max_steps=args.steps, per_device_train_batch_size=rows,
                            harmful_batch_size=args.batch, learning_rate=1e-4, lr_scheduler_type="constant",
                            logging_steps=1, save_strategy="no", report_to="none", seed=0,
                            bf16=precision == "bf16", use_cpu=device == "cpu", disable_tqdm=True,
                            max_length=args.seq)
        trainer = TASFTTrainer(model, targs, train_dataset=_rows(rows * args.steps, args.seq, vocab, 1),
                               harmful_dataset=_rows(args.batch * 2, args.seq, vocab, 2),
                               processing_class=_tokenizer(), callbacks=[timer])
        trainer.train()
    logs, times = [r for r in trainer.state.log_history if "loss" in r], timer.times
    timed = times[args.warmup:] or times
    return {"config": config, "precision": precision, "method": method, "steps": len(times),
            "step_seconds": times, "median_step_seconds": statistics.median(timed),
            "tokens_per_second": 2 * args.batch * args.seq / statistics.median(timed),
            "loss": [r["loss"] for r in logs], "nll": [r.get("nll") for r in logs],
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}


def render(result: dict) -> str:
    rows = result["runs"]
    lines = [f"# Device check on {result['device_name']}", "",
             f"torch {result['torch']}; {result['args']['steps']} steps ({result['args']['warmup']} warm-up left out), "
             f"{result['args']['batch']} D_u + {result['args']['batch']} D_h rows of {result['args']['seq']} tokens; "
             "random weights. × sft: median step time over sft's, same config and precision. "
             "|bf16 − fp32|: the largest difference of the logged loss (and NLL) over the steps.", "",
             "| config | precision | method | median step s | × sft | tokens/s | peak GiB | |bf16 − fp32| loss / NLL |",
             "|---|---|---|---|---|---|---|---|"]
    by = {(r["config"], r["precision"], r["method"]): r for r in rows}
    for r in rows:
        sft = by.get((r["config"], r["precision"], "sft"))
        ratio = r["median_step_seconds"] / sft["median_step_seconds"] if sft else float("nan")
        drift = ""
        other = by.get((r["config"], "fp32", r["method"]))
        if r["precision"] == "bf16" and other:
            dl = max(abs(a - b) for a, b in zip(r["loss"], other["loss"]))
            dn = max((abs(a - b) for a, b in zip(r["nll"], other["nll"]) if a is not None and b is not None),
                     default=float("nan"))
            drift = f"{dl:.1e} / {dn:.1e}"
        peak = "" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.2f}"
        lines.append(f"| {r['config']} | {r['precision']} | {r['method']} | {r['median_step_seconds']:.4f} | "
                     f"{ratio:.2f} | {r['tokens_per_second']:.0f} | {peak} | {drift} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", nargs="+", default=["smollm2-135m", "llama-1b"], choices=list(CONFIGS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"device": args.device, "torch": torch.__version__, "platform": platform.platform(),
              "device_name": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
              "args": vars(args), "runs": []}
    for config in args.configs:
        for precision in args.precisions:
            for method in args.methods:
                started = time.perf_counter()
                try:
                    result["runs"].append(run_one(config, precision, method, args, args.device))
                except torch.cuda.OutOfMemoryError as err:  # a row that does not fit is a result too
                    result.setdefault("failed", []).append({"config": config, "precision": precision,
                                                            "method": method, "error": str(err).splitlines()[0]})
                print(f"{config} {precision} {method}: {time.perf_counter() - started:.1f} s", flush=True)
                (out / "device_check.json").write_text(json.dumps(result, indent=1))
    (out / "device_check.md").write_text(render(result))
    print((out / "device_check.md").read_text())


if __name__ == "__main__":
    main()
