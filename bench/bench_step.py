"""Per-step time and peak memory of TA-SFT against the bare forward+backward, in one process.

    OMP_NUM_THREADS=2 python bench/bench_step.py --out docs/results/bench --tag cpu

Sections (all on the same random token batch and the same model):

1. **step** — forward+backward of: the bare NLL (model logits → cross-entropy, no trainer), the ``sft`` step
   (``MethodTrainer.compute_loss``, D_u and D_h rows in one batch: the same tokens as ta-sft), the ``ta-sft``
   steps for ``emd_lb``, ``emd`` (one-hot) and ``nlcl`` on the plain (full logits) and fused/chunked paths,
   ``emd_lb`` fused once more with gradients already present (what micro-steps 2, 3, ... of gradient
   accumulation do: autograd adds into ``.grad`` in place instead of taking the new tensor), and the
   soft-target EMD (exact transport on the top-k support, reference-model forward included).
2. **pair** — the ``sft`` and ``ta-sft emd_lb`` fused steps alone, alternated for ``--pair-rounds`` rounds: the
   headline ratio with nothing else in between.
3. **loss** — the loss alone from final hidden states (N × d) and the LM-head weight at the model's V: plain
   (h Wᵀ → function of :mod:`tasft.objectives.losses`) against fused (:mod:`tasft.objectives.fused`), time and memory.
4. **exact** — per-row time of the soft-target lower bound at full V against ``ot.emd2`` on subsets of the
   vocabulary (the full-V transport problem has a V×V cost matrix: 19 GB in fp64 at V = 49,152, so the
   measured subset times are a *lower* bound on the exact cost and the speed-up a conservative one).
5. **e2e** — ``MethodTrainer.train`` (data loading, collation, optimizer, logging to log.jsonl) on the same
   batch shape: tokens/s against a bare forward+backward run after every optimizer step (paired), and each
   step split into forward+backward, optimizer and the rest.
6. **profile** — torch.profiler top operators of the sft and ta-sft emd_lb (fused) steps.

Time: warm-up steps, then ``--steps`` rounds (each runs every variant once); a table's × column is the median
over rounds of the ratio within a round. Memory: on CUDA, ``max_memory_allocated`` above the memory at the
start of the step; on CPU, sampled RSS (how, and the allocator settings for timing: :mod:`bench_measure`).
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
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_measure, bench_report beside this file

from bench_measure import (  # noqa: E402
    TIMING_MMAP_THRESHOLD,
    measure,
    measure_rounds,
    paired_ratios,
    set_allocator,
    step_clock,
    sync,
)
from bench_report import render  # noqa: E402

from tasft import objectives  # noqa: E402
from tasft.data import Tokenized, collate  # noqa: E402
from tasft.objectives import fused as chunked_penalty  # noqa: E402
from tasft.objectives import losses  # noqa: E402


def _chunk(name: str):
    """The fused path's chunk function of measure ``name`` (the NLL, or a registered penalty)."""
    return chunked_penalty.nll_chunk if name == "nll" else objectives.PENALTIES[name].fused


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

    from tasft.methods.ta_sft import PenaltyTerm, TaSftSettings
    from tasft.training.trainer import JsonlLogCallback, MethodTrainer, collate_train

    dataset = train_args.pop("dataset", None)
    term = None
    if method == "ta-sft":  # TA-SFT's D_h term, as tasft.methods.ta_sft builds it (sft: none)
        settings = TaSftSettings(penalty=penalty, lambda_=1.0, target="soft" if ref_model is not None else "onehot",
                                 soft_top_k=soft_top_k)
        term = PenaltyTerm(settings, normalized, ref_model)
    args = TrainingArguments(
        output_dir=out, report_to=[], use_cpu=device.type == "cpu", per_device_train_batch_size=train_args.pop(
            "batch_size", 4), save_strategy="no", disable_tqdm=True, **train_args,
    )
    return MethodTrainer(
        model=model, args=args, train_dataset=dataset,
        data_collator=lambda b: collate_train(b, 0), callbacks=[JsonlLogCallback(Path(out) / "log.jsonl")],
        term=term, harmful=harmful, harmful_batch_size=len(harmful or [None]), pad_id=0, loss_chunk_size=chunk,
    )


ACCUMULATING = "adding to existing gradients:"


def bare_step(model, inputs: dict, clear_after: bool = False):
    """The reference: HF logits → cross-entropy on the loss-masked tokens, forward+backward, no trainer."""

    def run():
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        lg, tg, mk = losses.shift_for_causal_lm(logits, inputs["input_ids"], inputs["loss_mask"])
        losses.nll_from_logits(lg, tg, mk).backward()
        if clear_after:
            model.zero_grad(set_to_none=True)

    return run


def trainer_step(model, trainer, inputs: dict, accumulate: bool = False):
    """``MethodTrainer.compute_loss`` + backward on ``inputs``, from no gradients (or adding to the ones there)."""

    def run():
        if not accumulate:  # else the previous call's gradients stay: autograd adds to them in place
            model.zero_grad(set_to_none=True)
        trainer.compute_loss(model, inputs).backward()

    return run


def pair_section(model, device, args, normalized, tmp) -> dict:
    """The headline ratio on its own: ``sft`` (fused) and ``ta-sft emd_lb`` (fused) alternated for
    ``--pair-rounds`` rounds with nothing in between (in the step section other variants run between the two
    and leave the allocator and caches in other states)."""
    benign, harmful, inputs_u, inputs_all = bench_batches(model, device, args)
    model.train()
    sft = build_trainer(model, tmp, device, "sft", "emd", None, args.chunk, None)
    ta = build_trainer(model, tmp, device, "ta-sft", "emd_lb", harmful, args.chunk, normalized)
    fns = {"sft (fused)": trainer_step(model, sft, inputs_all),
           "ta-sft emd_lb (fused)": trainer_step(model, ta, inputs_u)}
    rows = measure_rounds(fns, device, args.pair_rounds, args.warmup)
    model.zero_grad(set_to_none=True)
    ratios = paired_ratios(rows["ta-sft emd_lb (fused)"]["times"], rows["sft (fused)"]["times"])
    print(f"  ta-sft emd_lb ÷ sft (fused), {args.pair_rounds} rounds: {statistics.median(ratios):.3f}", flush=True)
    return {"rounds": args.pair_rounds, "rows": rows}


def step_section(model, device, args, normalized, tmp) -> dict:
    benign, harmful, inputs_u, inputs_all = bench_batches(model, device, args)
    tokens = int(inputs_all["attention_mask"].sum())
    model.train()

    variants = {"bare forward+backward (NLL)": bare_step(model, inputs_all)}
    for label, chunk in (("plain", None), ("fused", args.chunk)):
        sft = build_trainer(model, tmp, device, "sft", "emd", None, chunk, None)
        variants[f"sft ({label})"] = trainer_step(model, sft, inputs_all)
    for penalty in ("emd_lb", "emd", "nlcl"):
        for label, chunk in (("plain", None), ("fused", args.chunk)):
            tr = build_trainer(model, tmp, device, "ta-sft", penalty, harmful, chunk, normalized)
            variants[f"ta-sft {penalty} ({label})"] = trainer_step(model, tr, inputs_u)
            if penalty == "emd_lb" and label == "fused":  # micro-steps 2.. of gradient accumulation
                variants[f"{ACCUMULATING} ta-sft emd_lb (fused)"] = trainer_step(model, tr, inputs_u, accumulate=True)
    if not args.skip_soft:
        ref = copy.deepcopy(model).eval().requires_grad_(False)
        tr = build_trainer(model, tmp, device, "ta-sft", "emd", harmful, None, normalized, ref_model=ref,
                           soft_top_k=args.soft_top_k)
        variants[f"ta-sft emd soft target (exact, top-{args.soft_top_k} support)"] = trainer_step(model, tr, inputs_u)

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
                value = objectives.penalty_from_logits(name, logits, targets[None], mask, table)
            value.backward()
        return run

    def fused(name):
        def run():
            hidden.grad = weight.grad = None
            chunked_penalty.fused_linear_measure(_chunk(name), hidden, weight, targets, table,
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


#: optimizer steps of each end-to-end run that warm up (allocator, caches) before the timed ones
E2E_WARMUP = 2


def e2e_section(model, device, args, normalized, tmp) -> dict:
    """``MethodTrainer.train`` for each gradient-accumulation value, timed per optimizer step by
    :func:`bench_measure.step_clock`, with a bare forward+backward of the same tokens on the same model after
    every step (a copy of the model runs slower than the original for a while after it is made: the
    reference must share the trained copy's memory, not the original's)."""
    benign, harmful, _, inputs_all = bench_batches(model, device, args)
    out = {"runs": {}, "warmup_steps": E2E_WARMUP}
    for accum in args.e2e_accum:
        steps = E2E_WARMUP + args.e2e_steps
        trained = copy.deepcopy(model)
        # on the model being trained (same weights in memory), leaving no gradient behind for its next step
        clock = step_clock(device, bare_step(trained, inputs_all, clear_after=True))
        trainer = build_trainer(trained, tmp, device, "ta-sft", "emd_lb", harmful, args.chunk, normalized,
                                batch_size=args.batch, max_steps=steps, logging_steps=1, learning_rate=1e-6,
                                gradient_accumulation_steps=accum, dataset=benign * steps * accum)
        trainer.add_callback(clock)
        clock.wrap(trainer)
        trainer.train()
        optimizer = trainer.optimizer
        run = {
            "optimizer": type(getattr(optimizer, "optimizer", optimizer)).__name__, "steps": steps,
            "tokens_per_step": trainer.tokens_processed / steps,
            "bare_tokens": int(inputs_all["attention_mask"].sum()),
            # the first E2E_WARMUP steps warm up (step 1 also has no previous end) and are not counted
            "wall_seconds": clock.walls()[E2E_WARMUP - 1:],
            "forward_backward_seconds": clock.forward_backward[E2E_WARMUP:],
            "optimizer_seconds": clock.optimizer_seconds[E2E_WARMUP:], "bare_seconds": clock.bare_seconds[E2E_WARMUP:],
            "optimizer_steps_timed": len(clock.optimizer_seconds),
        }
        out["runs"][accum] = run
        print(f"  accumulation {accum}: {run['tokens_per_step'] / statistics.median(run['wall_seconds']):.0f} "
              f"tokens/s, optimizer {statistics.median(run['optimizer_seconds']):.3f} s", flush=True)
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
            sync(device)
        table = prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=60)
        path = out / f"profile_{tag}_{name}.txt"
        path.write_text(table + "\n", encoding="utf-8")
        files[name] = str(path)
    model.zero_grad(set_to_none=True)
    return files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=4, help="D_u rows")
    parser.add_argument("--harmful-batch", type=int, default=4, help="D_h rows")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens per row (no loss on them)")
    parser.add_argument("--chunk", type=int, default=chunked_penalty.DEFAULT_CHUNK_SIZE)
    parser.add_argument("--steps", type=int, default=7, help="timed rounds (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--pair-rounds", type=int, default=25, help="rounds of the sft / ta-sft emd_lb pair")
    parser.add_argument("--loss-tokens", type=int, default=1024)
    parser.add_argument("--exact-sizes", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--exact-rows", type=int, default=3)
    parser.add_argument("--lb-rows", type=int, default=64)
    parser.add_argument("--soft-top-k", type=int, default=64)
    parser.add_argument("--skip-soft", action="store_true")
    parser.add_argument("--e2e-steps", type=int, default=5,
                        help="timed optimizer steps (after E2E_WARMUP warm-up steps)")
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
    set_allocator(TIMING_MMAP_THRESHOLD)
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
        print("pair section", flush=True)
        result["pair"] = pair_section(model, cpu, args, normalized, tmp)
        save()
        print("loss section", flush=True)
        result["loss"] = loss_section(model, cpu, args, normalized)
        save()
        print("exact section", flush=True)
        result["exact"] = exact_section(model, args, normalized)
        save()
        print("end-to-end section", flush=True)
        result["e2e"] = e2e_section(model, cpu, args, normalized, tmp)
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
