"""Generation throughput: tasft's greedy decoder against plain ``model.generate`` on the same prompts, same batches.

Both decode the same prompts of the ``full`` evaluation spec (an even share of each suite, sorted by length as
evaluation sorts them), batch by batch, alternating which goes first; the table gives new tokens per second of
each, their ratio, and how many rows came out token-identical. Writes ``bench_generate_<tag>.json`` and ``.md``.

    OMP_NUM_THREADS=2 python bench/bench_generate.py --prompts 128 --batch-size 64 --out docs/results/bench --tag cpu

``--batch-sweep 8,32,64`` also times tasft's decoder at each batch size on the shortest max(64, largest size) prompts
(64 new tokens) and checks that the outputs do not depend on the batch size (``bench_generate_batch_<tag>.json``);
``--profile-steps N`` writes torch.profiler's top operators of both decoders on the first batch; ``--matmul``
times one decode-step-shaped fp32 product (the machine's multiply rate: the floor of a compute-bound decode).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def _plain_generate(model, tokenizer, encoded: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    pad = tokenizer.pad_token_id
    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(encoded):
        ids[i, width - len(e):] = torch.tensor(e)
        mask[i, width - len(e):] = 1
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             temperature=None, top_p=None, top_k=None, pad_token_id=pad)
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    rows = []
    for row in out[:, width:].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), None)
        rows.append(row[: cut + 1] if cut is not None else row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    from tasft.config import DEFAULT_MODEL
    from tasft.evaluation.specs import get_spec
    from tasft.generation.decode import greedy_decode
    from tasft.generation.generate import _encode_prompts
    from tasft.models import load_model, load_tokenizer
    from tasft.suites import find_data_dir, load_suite, parse_suites

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--prompts", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--tag", default="cpu")
    p.add_argument("--profile-steps", type=int, default=0,
                   help="also write profile_generate_<tag>.txt: torch.profiler's top operators of both decoders on "
                   "the first batch for this many new tokens")
    p.add_argument("--batch-sweep", default="", help="comma-separated batch sizes to time tasft's decoder at")
    p.add_argument("--matmul", action="store_true",
                   help="also time one decode-step-shaped fp32 product (batch x hidden · hidden x intermediate): "
                   "the machine's matrix-multiply rate, the floor of a compute-bound decode")
    args = p.parse_args(argv)

    data = find_data_dir(args.data_dir)
    suites = parse_suites(get_spec("full").suites)
    per = max(1, args.prompts // len(suites))
    items = [it for s in suites for it in load_suite(s, data)[:per]][: args.prompts]
    tokenizer, model = load_tokenizer(args.model), load_model(args.model).eval()
    encoded = sorted(_encode_prompts(tokenizer, [it["prompt"] for it in items], 1024, None), key=len)
    batches = [encoded[i: i + args.batch_size] for i in range(0, len(encoded), args.batch_size)]
    greedy_decode(model, tokenizer, batches[0][:2], 2)  # warm-up
    seconds = {"generate": 0.0, "tasft": 0.0}
    tokens = {"generate": 0, "tasft": 0}
    identical = 0
    for b, batch in enumerate(batches):
        order = ["generate", "tasft"] if b % 2 == 0 else ["tasft", "generate"]
        got = {}
        for name in order:
            t = time.perf_counter()
            if name == "generate":
                got[name] = _plain_generate(model, tokenizer, batch, args.max_new_tokens)
            else:
                got[name] = greedy_decode(model, tokenizer, batch, args.max_new_tokens)
            seconds[name] += time.perf_counter() - t
            tokens[name] += sum(len(r) for r in got[name])
        identical += sum(x == y for x, y in zip(got["generate"], got["tasft"]))
    result = {
        "model": args.model, "prompts": len(encoded), "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads(), "seconds": seconds,
        "new_tokens": tokens, "tokens_per_second": {k: tokens[k] / seconds[k] for k in seconds},
        "speedup": (tokens["tasft"] / seconds["tasft"]) / (tokens["generate"] / seconds["generate"]),
        "token_identical_rows": identical,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.profile_steps:
        from torch.profiler import ProfilerActivity, profile

        parts = []
        for name, fn in (("model.generate", _plain_generate), ("tasft greedy_decode", greedy_decode)):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn(model, tokenizer, batches[0], args.profile_steps)
            parts.append(f"## {name}: {len(batches[0])} rows, {args.profile_steps} new tokens\n"
                         + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
        (out / f"profile_generate_{args.tag}.txt").write_text("\n\n".join(parts) + "\n")
    if args.matmul:
        cfg = model.config
        a = torch.randn(args.batch_size, cfg.hidden_size)
        b = torch.randn(cfg.hidden_size, cfg.intermediate_size)
        for _ in range(20):
            a @ b
        reps, t = 2000, time.perf_counter()
        for _ in range(reps):
            a @ b
        sec = time.perf_counter() - t
        result["matmul"] = {"shape": [args.batch_size, cfg.hidden_size, cfg.intermediate_size], "repeats": reps,
                            "gflops": 2 * args.batch_size * cfg.hidden_size * cfg.intermediate_size * reps / sec / 1e9,
                            "params": sum(p.numel() for p in model.parameters())}
    if args.batch_sweep:
        sizes = sorted(int(x) for x in args.batch_sweep.split(","))
        sweep_prompts = encoded[: max(64, sizes[-1])]  # the largest batch is one full batch
        runs = {}
        for size in sizes:
            t, rows = time.perf_counter(), []
            for i in range(0, len(sweep_prompts), size):
                rows += greedy_decode(model, tokenizer, sweep_prompts[i: i + size], 64)
            runs[size] = (time.perf_counter() - t, rows)
        largest = runs[sizes[-1]][1]
        sweep = {"prompts": len(sweep_prompts), "max_new_tokens": 64, "threads": torch.get_num_threads(),
                 "batches": [{"batch_size": size, "seconds": sec, "new_tokens": sum(len(r) for r in rows),
                              "tokens_per_second": sum(len(r) for r in rows) / sec,
                              "rows_identical_to_largest_batch": sum(a == b for a, b in zip(rows, largest))}
                             for size, (sec, rows) in runs.items()]}
        result["batch_sweep"] = sweep
        (out / f"bench_generate_batch_{args.tag}.json").write_text(json.dumps(sweep, indent=2) + "\n")
    (out / f"bench_generate_{args.tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    tps = result["tokens_per_second"]
    md = (f"# Generation: tasft greedy decoder vs `model.generate`\n\n`{args.model}`, {len(encoded)} prompts of the "
          f"full spec, batches of {args.batch_size}, {args.max_new_tokens} new tokens at most, "
          f"{result['threads']} threads.\n\n| decoder | seconds | new tokens | tokens/s |\n|---|---|---|---|\n"
          f"| model.generate | {seconds['generate']:.1f} | {tokens['generate']} | {tps['generate']:.1f} |\n"
          f"| tasft | {seconds['tasft']:.1f} | {tokens['tasft']} | {tps['tasft']:.1f} |\n\n"
          f"Speed-up {result['speedup']:.2f}×; token-identical rows {identical} of {len(encoded)}.\n")
    if "matmul" in result:
        m = result["matmul"]
        rows, hidden, inner = m["shape"]
        md += (f"\nOne decode-step-shaped fp32 product {rows}×{hidden} · {hidden}×{inner}: "
               f"{m['gflops']:.0f} GFLOPS (a generated token costs ≈ 2 × {m['params'] / 1e6:.0f} M FLOPs).\n")
    if "batch_sweep" in result:
        sw = result["batch_sweep"]
        md += (f"\ntasft's decoder by batch size ({sw['prompts']} prompts, {sw['max_new_tokens']} new tokens):\n\n"
               "| batch | seconds | tokens/s | rows identical to the largest batch's |\n|---|---|---|---|\n"
               + "".join(f"| {b['batch_size']} | {b['seconds']:.1f} | {b['tokens_per_second']:.1f} | "
                         f"{b['rows_identical_to_largest_batch']} of {sw['prompts']} |\n" for b in sw["batches"]))
    (out / f"bench_generate_{args.tag}.md").write_text(md)
    print(md)
    return result


if __name__ == "__main__":
    main()
