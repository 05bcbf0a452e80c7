"""The benchmark's markdown report and target verdicts, from the result dict that ``bench_step.py`` saves.

Ratios of steps are paired (:func:`bench_measure.paired_ratio`): the median over rounds of the ratio of two
steps timed in the same round.
"""

from __future__ import annotations

import statistics

from bench_measure import paired_ratio, paired_ratios

BARE = "bare forward+backward (NLL)"


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def _step_table(step: dict, digits: int) -> list[str]:
    bare = step["rows"][BARE]
    lines = ["| step | median s | × bare (paired) | peak MiB | × bare |", "|---|---:|---:|---:|---:|"]
    for name, row in step["rows"].items():
        lines.append(f"| {name} | {row['seconds']:.{digits}f} | {paired_ratio(row['times'], bare['times']):.2f} | "
                     f"{_mib(row['peak_bytes'])} | {row['peak_bytes'] / max(bare['peak_bytes'], 1):.2f} |")
    return lines


def e2e_rows(run: dict) -> dict[str, float]:
    """Medians over the timed optimizer steps: wall, forward+backward, optimizer, rest, paired × bare."""
    walls, fb, opt = run["wall_seconds"], run["forward_backward_seconds"], run["optimizer_seconds"]
    rest = [w - f - o for w, f, o in zip(walls, fb, opt, strict=False)]
    per_token = [run["tokens_per_step"] / w / (run["bare_tokens"] / b)
                 for w, b in zip(walls, run["bare_seconds"], strict=False)]
    return {"wall": statistics.median(walls), "forward_backward": statistics.median(fb),
            "optimizer": statistics.median(opt), "rest": statistics.median(rest),
            "tokens_per_second": run["tokens_per_step"] / statistics.median(walls),
            "x_bare": statistics.median(per_token)}


def render(result: dict) -> str:
    lines = [f"# TA-SFT step benchmark — {result['tag']}", "", f"- command: `{result['command']}`",
             f"- machine: {result['machine']}", f"- model: {result['model']} (V = {result['vocab']:,}, "
             f"d = {result['dim']}), fp32, device {result['device']}, torch {result['torch']}, "
             f"{result['threads']} threads", f"- measured: {result['date']}; {result['note']}", ""]
    step = result["step"]
    b, bh, seq, prompt = step["batch"]
    lines += [f"## Step (forward + backward): {b} D_u + {bh} D_h rows × {seq} tokens "
              f"(loss on the last {seq - prompt}), {step['tokens']:,} tokens, chunk {result['chunk']}", "",
              f"{len(step['rows'][BARE]['times'])} timed rounds (each round runs every variant once, in table "
              "order); × bare is the median over rounds of the ratio within the round.", "",
              *_step_table(step, 3)]
    if "pair" in result:
        low, mid, high = _quartiles(_pair_ratios(result))
        rounds = result["pair"]["rounds"]
        lines += ["", f"## The pair alone: sft (fused) and ta-sft emd_lb (fused) alternated, {rounds} rounds", "",
                  f"ta-sft emd_lb ÷ sft per round: median {mid:.3f}, interquartile range "
                  f"{low:.3f}–{high:.3f} (sft {result['pair']['rows']['sft (fused)']['seconds']:.3f} s, ta-sft "
                  f"{result['pair']['rows']['ta-sft emd_lb (fused)']['seconds']:.3f} s median)."]
    if "loss" not in result:
        return "\n".join(lines + ["", "(the run stopped here)", *_targets_md(result)]) + "\n"
    loss = result["loss"]
    ce = loss["rows"]["cross-entropy (plain)"]
    lines += ["", f"## Loss alone (from hidden states + LM head): {loss['tokens']:,} tokens, V = {loss['vocab']:,}, "
              f"chunk {loss['chunk']}", "", "| loss | median ms | × plain CE (paired) | peak MiB | × plain CE |",
              "|---|---:|---:|---:|---:|"]
    for name, row in loss["rows"].items():
        lines.append(f"| {name} | {row['seconds'] * 1e3:.1f} | {paired_ratio(row['times'], ce['times']):.2f} | "
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
    runs = result.get("e2e", {}).get("runs", {})
    warm = result.get("e2e", {}).get("warmup_steps", 1)
    lines += ["", "## End to end (`MethodTrainer.train`: ta-sft emd_lb fused, the Trainer's optimizer, logging to "
              "log.jsonl every step)", "",
              f"Per optimizer step (medians over the timed steps; the first {warm} "
              "warm up and are not counted): "
              "wall time from the end of the previous step; the trainer's forward+backward micro-steps; the "
              "optimizer; the rest (data loading, collation, clipping, scheduler, logging). After every step a "
              "bare forward+backward of the same tokens, on the same model, runs outside the timed interval: "
              "× bare is the median "
              "of (trainer tokens/s ÷ that bare step's tokens/s).", "",
              "| accumulation | tokens/s | × bare (paired) | step s | forward+backward s | optimizer s | rest s |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for accum, run in runs.items():
        r = e2e_rows(run)
        lines.append(f"| {accum} | {r['tokens_per_second']:,.0f} | {r['x_bare']:.2f} | {r['wall']:.3f} | "
                     f"{r['forward_backward']:.3f} | {r['optimizer']:.3f} | {r['rest']:.3f} |")
    if not runs:
        lines += ["", "(the end-to-end section did not run)"]
    lines += _targets_md(result)
    if result.get("gpu"):
        gpu = result["gpu"]
        lines += ["", "## GPU", "", f"{gpu['device_name']}, {gpu['step']['tokens']:,} tokens", "",
                  *_step_table(gpu["step"], 4)]
    return "\n".join(lines) + "\n"


def _targets_md(result: dict) -> list[str]:
    lines = ["", "## Targets", "", "| target | measured | verdict |", "|---|---:|---|"]
    for name, value, limit, better in targets(result):
        ok = value <= limit if better == "<=" else value >= limit
        lines.append(f"| {name} (target {better} {limit:g}) | {value:,.2f} | {'met' if ok else 'missed'} |")
    return lines


def _pair_ratios(result: dict) -> list[float]:
    rows = result["pair"]["rows"]
    return paired_ratios(rows["ta-sft emd_lb (fused)"]["times"], rows["sft (fused)"]["times"])


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, mid, high = statistics.quantiles(values, n=4)
    return low, mid, high


def targets(result: dict) -> list[tuple[str, float, float, str]]:
    rows = result["step"]["rows"]

    def ratio(a: str, b: str) -> float:
        return paired_ratio(rows[a]["times"], rows[b]["times"])

    fused = (("ta-sft emd_lb step ÷ sft step, fused losses (the pair alone)", statistics.median(_pair_ratios(result)))
             if "pair" in result else
             ("ta-sft emd_lb step ÷ sft step, fused losses", ratio("ta-sft emd_lb (fused)", "sft (fused)")))
    out = [
        (*fused, 1.05, "<="),
        ("ta-sft emd_lb step ÷ sft step, plain losses", ratio("ta-sft emd_lb (plain)", "sft (plain)"), 1.05, "<="),
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
    runs = result.get("e2e", {}).get("runs", {})
    return out + [(f"trainer tokens/s ÷ bare forward+backward tokens/s, accumulation {accum}",
                   e2e_rows(run)["x_bare"], 0.9, ">=") for accum, run in runs.items()]
