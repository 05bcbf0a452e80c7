"""bf16 autocast against fp32, and activation checkpointing's memory, on the default model, CPU — side by side.

    OMP_NUM_THREADS=2 python bench/bench_precision.py --out docs/results/bench --tag cpu

Variants (ta-sft ``emd`` λ = 1 on the fused path, the default training step): ``fp32``; ``bf16`` (``precision:
bf16``: the Trainer's bf16 autocast over fp32 weights); ``fp32 + checkpointing`` (``training_args:
{activation_checkpointing: true}``). Each variant runs in a fresh process (so its peak RSS, ``ru_maxrss``, is its own):
``--steps`` optimizer steps of :class:`tasft.TASFTTrainer` on the packaged benign pairs (D_u) and ``--harmful``
(D_h), seeded alike; rounds alternate the variants (``--rounds``), and each ratio is the median over rounds of the
ratio within a round. Per variant: median step time (the first ``--warmup`` steps left out), peak RSS, the logged
losses. Writes ``bench_precision_<tag>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"fp32": {"use_cpu": True}, "bf16": {"bf16": True, "use_cpu": True},
            "fp32 + checkpointing": {"activation_checkpointing": True, "use_cpu": True}}  # all on the CPU


def one(variant: str, args) -> dict:
    """One variant in this process: its step times, losses and peak RSS."""
    import torch
    from datasets import load_dataset

    from tasft import TASFTConfig, TASFTTrainer
    from tasft.models import load_model, load_tokenizer

    model, tok = load_model(args.model), load_tokenizer(args.model)
    root = Path(__file__).resolve().parents[1]
    benign = load_dataset("json", data_files=str(root / "src/tasft/demo_data/benign.jsonl"), split="train")
    harmful = load_dataset("json", data_files=args.harmful, split="train")
    harmful = harmful.select(range(min(16, len(harmful))))
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_measure beside this file
    from bench_measure import step_timer

    timer = step_timer(torch.device("cpu"))
    with tempfile.TemporaryDirectory() as out:
        targs = TASFTConfig(output_dir=out, method="ta-sft", method_args={"penalty": "emd", "lambda": 1.0},
                            max_steps=args.steps, per_device_train_batch_size=args.batch,
                            harmful_batch_size=args.batch, learning_rate=2e-5, lr_scheduler_type="constant",
                            logging_steps=1, save_strategy="no", report_to="none", seed=0, disable_tqdm=True,
                            max_length=args.max_length, **VARIANTS[variant])
        trainer = TASFTTrainer(model, targs, train_dataset=benign, harmful_dataset=harmful, processing_class=tok,
                               callbacks=[timer])
        trainer.train()
    logs = [r for r in trainer.state.log_history if "loss" in r]
    return {"variant": variant, "step_seconds": timer.times, "loss": [r["loss"] for r in logs],
            "nll": [r["nll"] for r in logs], "penalty": [r["penalty_emd"] for r in logs],
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def render(result: dict) -> str:
    a = result["args"]
    lines = [f"# bf16 autocast and activation checkpointing, `{a['model']}` on CPU", "",
             f"{result['platform']}; torch {result['torch']}; {a['rounds']} rounds × {a['steps']} steps "
             f"({a['warmup']} warm-up left out), {a['batch']} D_u + {a['batch']} D_h rows, max_length "
             f"{a['max_length']}; ta-sft emd λ = 1, fused path. × fp32: median over rounds of the within-round "
             "ratio. |Δ loss|: the largest difference from fp32's logged loss over the steps (same data, same seed).",
             "", "| variant | median step s | × fp32 time | peak RSS GiB | × fp32 RSS | max |Δ loss| | max |Δ NLL| |",
             "|---|---|---|---|---|---|---|"]
    for v, s in result["summary"].items():
        lines.append(f"| {v} | {s['median_step_seconds']:.2f} | {s['time_ratio']:.3f} | {s['peak_rss_gib']:.2f} | "
                     f"{s['rss_ratio']:.3f} | {s['max_abs_loss_diff']:.2e} | {s['max_abs_nll_diff']:.2e} |")
    if result.get("note"):
        lines += ["", result["note"]]
    return "\n".join(lines) + "\n"


def summarise(runs: list[list[dict]], warmup: int) -> dict:
    def med(r):
        return statistics.median(r["step_seconds"][warmup:] or r["step_seconds"])

    out = {}
    for i, variant in enumerate(VARIANTS):
        mine = [rnd[i] for rnd in runs]
        base = [rnd[0] for rnd in runs]
        out[variant] = {
            "median_step_seconds": statistics.median(med(r) for r in mine),
            "time_ratio": statistics.median(med(r) / med(b) for r, b in zip(mine, base)),
            "peak_rss_gib": statistics.median(r["peak_rss_gib"] for r in mine),
            "rss_ratio": statistics.median(r["peak_rss_gib"] / b["peak_rss_gib"] for r, b in zip(mine, base)),
            "max_abs_loss_diff": max(abs(x - y) for r, b in zip(mine, base) for x, y in zip(r["loss"], b["loss"])),
            "max_abs_nll_diff": max(abs(x - y) for r, b in zip(mine, base) for x, y in zip(r["nll"], b["nll"])),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--harmful", default="runs/experiments/harmful_pool.jsonl", help="a D_h file (16 rows used)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--note", default="")
    parser.add_argument("--out", default="docs/results/bench")
    parser.add_argument("--tag", default="cpu")
    parser.add_argument("--one", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(one(args.one, args)))
        return
    runs = []
    passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                   if k in ("model", "harmful", "steps", "warmup", "batch", "max_length")]
    for r in range(args.rounds):
        rnd = []
        for variant in VARIANTS:
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--one", variant, *passthrough], capture_output=True,
                                  text=True, check=False)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"bench_precision: variant {variant} failed: {proc.stderr.strip().splitlines()[-1:]}")
            rnd.append(json.loads(line[len("RESULT "):]))
            print(f"round {r + 1} {variant}: {time.perf_counter() - started:.0f} s", flush=True)
        runs.append(rnd)
    result = {"args": vars(args), "platform": platform.platform(), "torch": torch.__version__, "note": args.note,
              "runs": runs, "summary": summarise(runs, args.warmup)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_precision_{args.tag}.json").write_text(json.dumps(result, indent=1))
    (out / f"bench_precision_{args.tag}.md").write_text(render(result))
    print(render(result))


if __name__ == "__main__":
    main()
