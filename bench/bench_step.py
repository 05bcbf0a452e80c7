"""Per-step time and peak memory of TA-SFT against the bare forward+backward, in one process.

    OMP_NUM_THREADS=2 python bench/bench_step.py --out docs/results/bench --tag cpu

Sections (all on the same random token batch and the same model):

1. **step** — forward+backward of: the bare NLL (model logits → cross-entropy, no trainer), the ``sft`` step
   (``TasftTrainer.compute_loss``, D_u and D_h rows in one batch: the same tokens as ta-sft), the ``ta-sft``
   steps for ``emd_lb``, ``emd`` (one-hot) and ``nlcl`` on the plain (full logits) and fused/chunked paths,
   and the soft-target EMD (exact transport on the top-k support, reference-model forward included).
2. **loss** — the loss alone from final hidden states (N × d) and the LM-head weight at the model's V: plain
   (h Wᵀ → function of :mod:`tasft.losses`) against fused (:mod:`tasft.chunked_penalty`), time and memory.
3. **exact** — per-row time of the soft-target lower bound at full V against ``ot.emd2`` on subsets of the
   vocabulary (the full-V transport problem has a V×V cost matrix: 19 GB in fp64 at V = 49,152, so the
   measured subset times are a *lower* bound on the exact cost and the speed-up a conservative one).
4. **e2e** — ``TasftTrainer.train`` (data loading, collation, optimizer, logging to log.jsonl) on the same
   batch shape: tokens/s against the bare forward+backward, plus the optimizer step alone.
5. **profile** — torch.profiler top operators of the sft and ta-sft emd_lb (fused) steps.

Time: warm-up steps, then the median of ``--steps``. Memory: on CUDA, ``max_memory_allocated`` above the
memory at the start of the step; on CPU, the peak resident set size above its value at the start, sampled
every 0.5 ms by a thread, with glibc told to return every block ≥ 64 KiB to the system on free
(``MALLOC_MMAP_THRESHOLD_``; the script re-executes itself to set it) — an estimate, good for ratios.
Writes ``<out>/bench_<tag>.json`` (every number) and ``<out>/bench_<tag>.md`` (the tables).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

MMAP_ENV = "MALLOC_MMAP_THRESHOLD_"

if MMAP_ENV not in os.environ and __name__ == "__main__":
    os.environ[MMAP_ENV] = "65536"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import torch  # noqa: E402

from tasft import chunked_penalty, losses  # noqa: E402
from tasft.data import Tokenized, collate  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------------ measuring
def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class PeakMemory:
    """Peak bytes above the start of the block: CUDA allocator stats, or sampled RSS on CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.base = self.peak = _rss()
        self._stop = False

        def sample():
            while not self._stop:
                self.peak = max(self.peak, _rss())
                time.sleep(0.0005)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop = True
            self._thread.join()
            self.peak = max(self.peak, _rss())
        self.bytes = self.peak - self.base


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, device: torch.device, steps: int, warmup: int) -> dict:
    """Median seconds over ``steps`` calls after ``warmup``, and the peak memory of one more call."""
    return measure_rounds({"fn": fn}, device, steps, warmup)["fn"]


def measure_rounds(fns: dict, device: torch.device, steps: int, warmup: int, single: tuple[str, ...] = ()) -> dict:
    """Like :func:`measure` for several functions, timed in rounds (each round calls every function once), so
    that a change in background load hits all of them alike; names in ``single`` are timed in the first
    round only (slow rows). Peak memory: one call each, after the timing."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():
        for _ in range(warmup if name not in single else 0):
            fn()
    for round_ in range(steps):
        for name, fn in fns.items():
            if name in single and round_ > 0:
                continue
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, fn in fns.items():
        with PeakMemory(device) as mem:
            fn()
        out[name] = {"seconds": statistics.median(times[name]), "times": times[name], "peak_bytes": mem.bytes}
    return out


# ------------------------------------------------------------------------------------------ the batch
def make_examples(n: int, length: int, prompt: int, vocab: int, gen: torch.Generator) -> list[Tokenized]:
    ids = torch.randint(0, vocab, (n, length), generator=gen).tolist()
    return [Tokenized(row, prompt, length - prompt, 0, f"bench:{i}") for i, row in enumerate(ids)]


def bench_batches(model, device: torch.device, args) -> tuple[list[Tokenized], list[Tokenized], dict, dict]:
    """The fixed (seed 0) random batches every section uses: D_u and D_h examples, the collated D_u batch on the
    device, and D_u + D_h collated as one batch (the SFT step on the same tokens)."""
    vocab = model.get_output_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    benign = make_examples(args.batch, args.seq, args.prompt, vocab, gen)
    harmful = make_examples(args.harmful_batch, args.seq, args.prompt, vocab, gen)

    def to_dev(batch: dict) -> dict:
        return {k: v.to(device) for k, v in batch.items()}

    return (benign, harmful, to_dev(collate(benign, 0, mask="response")),
            to_dev(collate(benign + harmful, 0, mask="response")))


def build_trainer(model, out: str, device: torch.device, method: str, penalty: str, harmful, chunk, normalized,
                  ref_model=None, soft_top_k: int = 64, **train_args):
    from transformers import TrainingArguments

    from tasft.pipeline import collate_train
    from tasft.trainer import JsonlLogCallback, TasftTrainer

    dataset = train_args.pop("dataset", None)
    args = TrainingArguments(
        output_dir=out, report_to=[], use_cpu=device.type == "cpu", per_device_train_batch_size=train_args.pop(
            "batch_size", 4), save_strategy="no", disable_tqdm=True, **train_args,
    )
    return TasftTrainer(
        model=model, args=args, train_dataset=dataset,
        data_collator=lambda b: collate_train(b, 0), callbacks=[JsonlLogCallback(Path(out) / "log.jsonl")],
        method=method, penalty=penalty, lam=1.0, harmful=harmful, harmful_batch_size=len(harmful or [None]),
        pad_id=0, normalized_embeddings=normalized, ref_model=ref_model, soft_top_k=soft_top_k,
        loss_chunk_size=chunk,
    )


def step_section(model, device, args, normalized, tmp) -> dict:
    benign, harmful, inputs_u, inputs_all = bench_batches(model, device, args)
    tokens = int(inputs_all["attention_mask"].sum())
    model.train()

    def bare():
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=inputs_all["input_ids"], attention_mask=inputs_all["attention_mask"]).logits
        lg, tg, mk = losses.shift_for_causal_lm(logits, inputs_all["input_ids"], inputs_all["loss_mask"])
        losses.nll_from_logits(lg, tg, mk).backward()

    def trainer_step(trainer, inputs):
        def run():
            model.zero_grad(set_to_none=True)
            trainer.compute_loss(model, inputs).backward()
        return run

    variants = {"bare forward+backward (NLL)": bare}
    for label, chunk in (("plain", None), ("fused", args.chunk)):
        sft = build_trainer(model, tmp, device, "sft", "emd", None, chunk, None)
        variants[f"sft ({label})"] = trainer_step(sft, inputs_all)
    for penalty in ("emd_lb", "emd", "nlcl"):
        for label, chunk in (("plain", None), ("fused", args.chunk)):
            tr = build_trainer(model, tmp, device, "ta-sft", penalty, harmful, chunk, normalized)
            variants[f"ta-sft {penalty} ({label})"] = trainer_step(tr, inputs_u)
    if not args.skip_soft:
        ref = copy.deepcopy(model).eval().requires_grad_(False)
        tr = build_trainer(model, tmp, device, "ta-sft", "emd", harmful, None, normalized, ref_model=ref,
                           soft_top_k=args.soft_top_k)
        variants[f"ta-sft emd soft target (exact, top-{args.soft_top_k} support)"] = trainer_step(tr, inputs_u)

    rows = measure_rounds(variants, device, args.steps, args.warmup,
                          single=tuple(n for n in variants if "soft target" in n))
    for name, row in rows.items():
        print(f"  {name}: {row['seconds']:.3f} s, {row['peak_bytes'] / 2**20:.0f} MiB", flush=True)
    model.zero_grad(set_to_none=True)
    return {"tokens": tokens, "rows": rows, "batch": [args.batch, args.harmful_batch, args.seq, args.prompt]}


def loss_section(model, device, args, normalized) -> dict:
    weight = model.get_output_embeddings().weight.detach().clone().requires_grad_()
    vocab, dim = weight.shape
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(args.loss_tokens, dim, generator=gen).to(device).requires_grad_()
    targets = torch.randint(0, vocab, (args.loss_tokens,), generator=gen).to(device)
    mask = torch.ones(1, args.loss_tokens, dtype=torch.bool, device=device)
    table = normalized.to(device)

    def plain(name):
        def run():
            hidden.grad = weight.grad = None
            logits = (hidden @ weight.T)[None]
            if name == "nll":
                value = losses.nll_from_logits(logits, targets[None], mask)
            else:
                value = losses.penalty_from_logits(name, logits, targets[None], mask, table)
            value.backward()
        return run

    def fused(name):
        def run():
            hidden.grad = weight.grad = None
            chunked_penalty.fused_linear_measure(name, hidden, weight, targets, table,
                                                 chunk_size=args.chunk).backward()
        return run

    fns = {}
    for name in ("nll", "emd_lb", "emd", "nlcl"):
        for label, make in (("plain", plain), ("fused", fused)):
            fns[f"{'cross-entropy' if name == 'nll' else name} ({label})"] = make(name)
    rows = measure_rounds(fns, device, args.steps, args.warmup)
    for key, row in rows.items():
        print(f"  {key}: {row['seconds'] * 1e3:.1f} ms, {row['peak_bytes'] / 2**20:.0f} MiB", flush=True)
    return {"tokens": args.loss_tokens, "vocab": vocab, "dim": dim, "chunk": args.chunk, "rows": rows}


def exact_section(model, args, normalized) -> dict:
    import ot

    vocab = normalized.shape[0]
    gen = torch.Generator().manual_seed(2)
    rows = args.exact_rows
    p = torch.randn(args.lb_rows, vocab, generator=gen).mul(3).softmax(-1)
    q = torch.randn(args.lb_rows, vocab, generator=gen).mul(3).softmax(-1)

    def lower_bound():
        losses.emd_lower_bound(p, q, normalized, constant="tight")

    lb = measure(lower_bound, torch.device("cpu"), args.steps, args.warmup)
    out = {"vocab": vocab, "rows": rows, "lb_rows": args.lb_rows,
           "lower_bound_seconds_per_row": lb["seconds"] / args.lb_rows, "subsets": {}}
    for k in args.exact_sizes:
        support = torch.randperm(vocab, generator=gen)[:k]
        sub = normalized[support].double()
        cost = losses.semantic_cost_matrix(sub).numpy()
        times = []
        for r in range(rows):
            a = p[r, support].double().numpy()
            b = q[r, support].double().numpy()
            a, b = a / a.sum(), b / b.sum()
            start = time.perf_counter()
            ot.emd2(a, b, cost, numItermax=10_000_000)
            times.append(time.perf_counter() - start)
        out["subsets"][k] = statistics.median(times)
        print(f"  ot.emd2 on {k} tokens: {out['subsets'][k]:.3f} s/row", flush=True)
    print(f"  lower bound at V={vocab}: {out['lower_bound_seconds_per_row'] * 1e3:.3f} ms/row", flush=True)
    return out


def _clock(device: torch.device):
    """A Trainer callback with step-end stamps and the optimizer step timed where it runs (between the Trainer's
    pre- and post-optimizer events, on the real gradients; timed afterwards it would find them cleared)."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self):
            self.stamps: list[float] = []
            self.optimizer_seconds: list[float] = []
            self.started = 0.0

        def on_pre_optimizer_step(self, *a, **k):
            _sync(device)
            self.started = time.perf_counter()

        def on_optimizer_step(self, *a, **k):
            _sync(device)
            self.optimizer_seconds.append(time.perf_counter() - self.started)

        def on_step_end(self, *a, **k):
            _sync(device)
            self.stamps.append(time.perf_counter())

    return Clock()


def e2e_section(model, device, args, normalized, bare_seconds: float, tokens: int, tmp) -> dict:
    """``TasftTrainer.train`` for each gradient-accumulation value: median optimizer-step time, tokens/s."""
    benign, harmful, _, _ = bench_batches(model, device, args)
    out = {"bare_tokens_per_second": tokens / bare_seconds, "runs": {}}
    for accum in args.e2e_accum:
        steps = 1 + args.e2e_steps
        clock = _clock(device)
        trained = copy.deepcopy(model)
        trainer = build_trainer(trained, tmp, device, "ta-sft", "emd_lb", harmful, args.chunk, normalized,
                                batch_size=args.batch, max_steps=steps, logging_steps=1, learning_rate=1e-6,
                                gradient_accumulation_steps=accum, dataset=benign * steps * accum)
        trainer.add_callback(clock)
        trainer.train()
        stamps, optimizer_seconds = clock.stamps, clock.optimizer_seconds
        per_step = statistics.median(b - a for a, b in zip(stamps, stamps[1:]))
        step_tokens = trainer.tokens_processed / steps
        optimizer = trainer.optimizer
        opt_time = statistics.median(optimizer_seconds[1:] or optimizer_seconds)  # the first step warms up
        out["runs"][accum] = {
            "optimizer": type(getattr(optimizer, "optimizer", optimizer)).__name__,
            "step_seconds": per_step, "tokens_per_step": step_tokens, "tokens_per_second": step_tokens / per_step,
            "optimizer_step_seconds": opt_time, "optimizer_steps_timed": len(optimizer_seconds), "steps": steps,
        }
        print(f"  accumulation {accum}: {step_tokens / per_step:.0f} tokens/s, optimizer {opt_time:.3f} s",
              flush=True)
        del trained, trainer
    return out


def profile_section(model, device, args, normalized, out: Path, tag: str, tmp) -> dict:
    from torch.profiler import ProfilerActivity, profile

    benign, harmful, inputs_u, inputs_all = bench_batches(model, device, args)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    files = {}
    cases = {
        "sft_fused": (build_trainer(model, tmp, device, "sft", "emd", None, args.chunk, None), inputs_all),
        "ta-sft_emd_lb_fused": (build_trainer(model, tmp, device, "ta-sft", "emd_lb", harmful, args.chunk,
                                              normalized), inputs_u),
    }
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for name, (trainer, inputs) in cases.items():
        model.zero_grad(set_to_none=True)
        trainer.compute_loss(model, inputs).backward()  # warm-up
        model.zero_grad(set_to_none=True)
        with profile(activities=activities) as prof:
            trainer.compute_loss(model, inputs).backward()
            _sync(device)
        table = prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=60)
        path = out / f"profile_{tag}_{name}.txt"
        path.write_text(table + "\n", encoding="utf-8")
        files[name] = str(path)
    model.zero_grad(set_to_none=True)
    return files


# ------------------------------------------------------------------------------------------ reporting
def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def render(result: dict) -> str:
    lines = [f"# TA-SFT step benchmark — {result['tag']}", "", f"- command: `{result['command']}`",
             f"- machine: {result['machine']}", f"- model: {result['model']} (V = {result['vocab']:,}, "
             f"d = {result['dim']}), fp32, device {result['device']}, torch {result['torch']}, "
             f"{result['threads']} threads", f"- measured: {result['date']}; {result['note']}", ""]
    step = result["step"]
    b, bh, seq, prompt = step["batch"]
    bare = step["rows"]["bare forward+backward (NLL)"]
    lines += [f"## Step (forward + backward): {b} D_u + {bh} D_h rows × {seq} tokens "
              f"(loss on the last {seq - prompt}), {step['tokens']:,} tokens, chunk {result['chunk']}", "",
              "| step | median s | × bare | peak MiB | × bare |", "|---|---:|---:|---:|---:|"]
    for name, row in step["rows"].items():
        lines.append(f"| {name} | {row['seconds']:.3f} | {row['seconds'] / bare['seconds']:.2f} | "
                     f"{_mib(row['peak_bytes'])} | {row['peak_bytes'] / max(bare['peak_bytes'], 1):.2f} |")
    if "loss" not in result:
        return "\n".join(lines + ["", "(the run stopped here)", *_targets_md(result)]) + "\n"
    loss = result["loss"]
    ce = loss["rows"]["cross-entropy (plain)"]
    lines += ["", f"## Loss alone (from hidden states + LM head): {loss['tokens']:,} tokens, V = {loss['vocab']:,}, "
              f"chunk {loss['chunk']}", "", "| loss | median ms | × plain CE | peak MiB | × plain CE |",
              "|---|---:|---:|---:|---:|"]
    for name, row in loss["rows"].items():
        lines.append(f"| {name} | {row['seconds'] * 1e3:.1f} | {row['seconds'] / ce['seconds']:.2f} | "
                     f"{_mib(row['peak_bytes'])} | {row['peak_bytes'] / max(ce['peak_bytes'], 1):.2f} |")
    if "exact" not in result:
        return "\n".join(lines + ["", "(the run stopped here)", *_targets_md(result)]) + "\n"
    ex = result["exact"]
    lb = ex["lower_bound_seconds_per_row"]
    lines += ["", f"## Soft-target lower bound at V = {ex['vocab']:,} against exact EMD (`ot.emd2`) on subsets",
              "", f"Lower bound c·‖m_P − m_Q‖² (soft P and Q) at full V: {lb * 1e3:.3f} ms per row (median over "
              f"batches of {ex['lb_rows']} rows); exact EMD: median of {ex['rows']} rows per support size.", "",
              "| exact EMD support | s per row | × lower bound at full V |", "|---:|---:|---:|"]
    for k, sec in ex["subsets"].items():
        lines.append(f"| {int(k):,} | {sec:.3f} | {sec / lb:,.0f} |")
    e2e = result.get("e2e", {"bare_tokens_per_second": 0.0, "runs": {}})
    fused = step["rows"]["ta-sft emd_lb (fused)"]["seconds"]
    lines += ["", "## End to end (`TasftTrainer.train`: ta-sft emd_lb fused, the Trainer's optimizer, logging to "
              "log.jsonl every step)", "",
              f"Bare forward+backward: {e2e['bare_tokens_per_second']:,.0f} tokens/s. Per optimizer step: the "
              "trainer's wall time; the optimizer alone; the rest = wall − optimizer − accumulation × the "
              "ta-sft emd_lb (fused) forward+backward measured above (data loading, collation, logging, "
              "clipping, scheduler).", "",
              "| accumulation | tokens/s | × bare | step s | optimizer s | rest s |", "|---:|---:|---:|---:|---:|---:|"]
    for accum, run in e2e["runs"].items():
        rest = run["step_seconds"] - run["optimizer_step_seconds"] - int(accum) * fused
        lines.append(f"| {accum} | {run['tokens_per_second']:,.0f} | "
                     f"{run['tokens_per_second'] / e2e['bare_tokens_per_second']:.2f} | {run['step_seconds']:.3f} | "
                     f"{run['optimizer_step_seconds']:.3f} | {rest:.3f} |")
    if not e2e["runs"]:
        lines += ["", "(the end-to-end section did not run)"]
    lines += _targets_md(result)
    if result.get("gpu"):
        lines += ["", "## GPU", "", render_gpu(result["gpu"])]
    return "\n".join(lines) + "\n"


def _targets_md(result: dict) -> list[str]:
    lines = ["", "## Targets", "", "| target | measured | verdict |", "|---|---:|---|"]
    for name, value, limit, better in targets(result):
        ok = value <= limit if better == "<=" else value >= limit
        lines.append(f"| {name} (target {better} {limit:g}) | {value:,.2f} | {'met' if ok else 'missed'} |")
    return lines


def targets(result: dict) -> list[tuple[str, float, float, str]]:
    rows = result["step"]["rows"]
    sec = lambda name: rows[name]["seconds"]  # noqa: E731
    out = [
        ("ta-sft emd_lb step ÷ sft step, fused losses", sec("ta-sft emd_lb (fused)") / sec("sft (fused)"), 1.05, "<="),
        ("ta-sft emd_lb step ÷ sft step, plain losses", sec("ta-sft emd_lb (plain)") / sec("sft (plain)"), 1.05, "<="),
    ]
    if "loss" in result:
        loss = result["loss"]["rows"]
        ce = max(loss["cross-entropy (plain)"]["peak_bytes"], 1)
        out += [(f"fused {n} peak memory ÷ plain cross-entropy's", loss[f"{n} (fused)"]["peak_bytes"] / ce, 1.0, "<=")
                for n in ("emd_lb", "emd", "nlcl")]
    if "exact" in result:
        ex = result["exact"]
        biggest = max(ex["subsets"], key=int)
        out.append((f"exact EMD on {int(biggest):,} tokens ÷ lower bound at V = {ex['vocab']:,} (per row; exact at "
                    "full V costs more)", ex["subsets"][biggest] / ex["lower_bound_seconds_per_row"], 100.0, ">="))
    e2e = result.get("e2e", {"runs": {}})
    return out + [
        (f"trainer tokens/s ÷ bare forward+backward tokens/s, accumulation {accum}",
         run["tokens_per_second"] / e2e["bare_tokens_per_second"], 0.9, ">=")
        for accum, run in e2e["runs"].items()
    ]


def render_gpu(gpu: dict) -> str:
    bare = gpu["step"]["rows"]["bare forward+backward (NLL)"]
    lines = [f"{gpu['device_name']}, {gpu['step']['tokens']:,} tokens", "",
             "| step | median s | × bare | peak MiB | × bare |", "|---|---:|---:|---:|---:|"]
    for name, row in gpu["step"]["rows"].items():
        lines.append(f"| {name} | {row['seconds']:.4f} | {row['seconds'] / bare['seconds']:.2f} | "
                     f"{_mib(row['peak_bytes'])} | {row['peak_bytes'] / max(bare['peak_bytes'], 1):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=4, help="D_u rows")
    parser.add_argument("--harmful-batch", type=int, default=4, help="D_h rows")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens per row (no loss on them)")
    parser.add_argument("--chunk", type=int, default=chunked_penalty.DEFAULT_CHUNK_SIZE)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--loss-tokens", type=int, default=1024)
    parser.add_argument("--exact-sizes", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--exact-rows", type=int, default=3)
    parser.add_argument("--lb-rows", type=int, default=64)
    parser.add_argument("--soft-top-k", type=int, default=64)
    parser.add_argument("--skip-soft", action="store_true")
    parser.add_argument("--e2e-steps", type=int, default=3, help="timed optimizer steps (after one warm-up step)")
    parser.add_argument("--e2e-accum", type=int, nargs="+", default=[1, 4], help="gradient accumulation values")
    parser.add_argument("--gpu-batch", type=int, default=16, help="rows of D_u and of D_h in the GPU section")
    parser.add_argument("--gpu-seq", type=int, default=512)
    parser.add_argument("--note", default="", help="free text for the report (e.g. contention)")
    parser.add_argument("--out", default="docs/results/bench")
    parser.add_argument("--tag", default="cpu")
    parser.add_argument("--render", metavar="JSON", help="only re-render the markdown of a saved result")
    args = parser.parse_args(argv)
    if args.render:
        path = Path(args.render)
        path.with_suffix(".md").write_text(render(json.loads(path.read_text())), encoding="utf-8")
        return

    from tasft.models import load_model, token_embeddings

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = load_model(args.model, "float32")
    for p in model.parameters():
        p.requires_grad_(True)
    normalized = losses.normalize_embeddings(token_embeddings(model, "input"))
    cpu = torch.device("cpu")
    result = {
        "tag": args.tag, "command": " ".join(["python", *sys.argv]), "model": args.model,
        "vocab": normalized.shape[0], "dim": normalized.shape[1], "device": "cpu", "chunk": args.chunk,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, {platform.platform()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "note": args.note or "no other load noted",
        "args": vars(args),
    }
    raw = out / f"bench_{args.tag}.json"

    def save() -> None:  # after every section, so a failure late in the run keeps what was measured
        raw.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory() as tmp:
        print("step section", flush=True)
        result["step"] = step_section(model, cpu, args, normalized, tmp)
        save()
        print("loss section", flush=True)
        result["loss"] = loss_section(model, cpu, args, normalized)
        save()
        print("exact section", flush=True)
        result["exact"] = exact_section(model, args, normalized)
        save()
        print("end-to-end section", flush=True)
        bare = result["step"]["rows"]["bare forward+backward (NLL)"]["seconds"]
        result["e2e"] = e2e_section(model, cpu, args, normalized, bare, result["step"]["tokens"], tmp)
        save()
        print("profile section", flush=True)
        result["profiles"] = profile_section(model, cpu, args, normalized, out, args.tag, tmp)
        save()
        if torch.cuda.is_available():
            print("gpu section", flush=True)
            gpu = torch.device("cuda")
            model = model.to(gpu)
            gpu_args = copy.copy(args)
            gpu_args.batch = gpu_args.harmful_batch = args.gpu_batch
            gpu_args.seq, gpu_args.steps, gpu_args.warmup = args.gpu_seq, max(args.steps, 10), max(args.warmup, 3)
            gpu_args.skip_soft = True
            result["gpu"] = {"device_name": torch.cuda.get_device_name(),
                             "step": step_section(model, gpu, gpu_args, normalized.to(gpu), tmp)}
    save()
    text = render(result)
    (out / f"bench_{args.tag}.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
