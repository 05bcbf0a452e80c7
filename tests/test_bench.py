"""The benchmark script runs end to end on the tiny model and reports what it measured (not a timing test)."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_step.py"


def test_bench_runs_on_the_tiny_model_and_times_the_real_optimizer_step(tiny_model_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("bench_step", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--model", str(tiny_model_dir), "--out", str(tmp_path), "--tag", "tiny", "--seq", "32",
                "--prompt", "8", "--steps", "1", "--pair-rounds", "3", "--warmup", "0", "--loss-tokens", "64",
                "--exact-sizes", "16",
                "--exact-rows", "1", "--lb-rows", "4", "--soft-top-k", "8", "--e2e-steps", "2", "--e2e-accum", "1"])
    result = json.loads((tmp_path / "bench_tiny.json").read_text())
    (run,) = result["e2e"]["runs"].values()
    # timed while the gradients exist: an AdamW step over every parameter takes measurable time
    assert run["optimizer"] == "AdamW" and run["optimizer_steps_timed"] == run["steps"] == 4
    assert min(run["optimizer_seconds"]) > 0
    # 2 warm-up steps, then 2 timed, each paired with a bare step run after it; the parts fit in the wall time
    timed = run["wall_seconds"], run["forward_backward_seconds"], run["optimizer_seconds"], run["bare_seconds"]
    assert [len(x) for x in timed] == [2, 2, 2, 2]
    assert all(w > f + o for w, f, o in zip(*timed[:3]))
    assert run["tokens_per_step"] == run["bare_tokens"] > 0
    assert result["exact"]["lower_bound_seconds_per_row"] > 0
    assert [len(row["times"]) for row in result["pair"]["rows"].values()] == [3, 3]
    report = (tmp_path / "bench_tiny.md").read_text()
    assert "bare forward+backward (NLL)" in report and "End to end" in report and "The pair alone" in report


def test_device_check_runs_on_cpu_and_compares_bf16_with_fp32(tmp_path):
    """bench/device_check.py (the GPU check) on the tiny config, CPU: every method and precision trains its steps
    through TASFTTrainer, and the table gives ratios to sft and the bf16 − fp32 loss difference."""
    spec = importlib.util.spec_from_file_location("device_check", BENCH.parent / "device_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    check.main(["--device", "cpu", "--configs", "tiny", "--steps", "3", "--warmup", "1", "--batch", "2", "--seq", "16",
                "--out", str(tmp_path)])
    result = json.loads((tmp_path / "device_check.json").read_text())
    assert len(result["runs"]) == 2 * len(check.METHODS) and "failed" not in result
    for run in result["runs"]:
        assert run["steps"] == 3 and len(run["loss"]) == 3 and run["median_step_seconds"] > 0
    by = {(r["precision"], r["method"]): r for r in result["runs"]}
    bf16, fp32 = by["bf16", "ta-sft emd fused"]["loss"], by["fp32", "ta-sft emd fused"]["loss"]
    drift = max(abs(a - b) for a, b in zip(bf16, fp32))
    assert 0 < drift < 0.05  # autocast changes the numbers, a little
    table = (tmp_path / "device_check.md").read_text()
    assert table.count("| tiny |") == 8 and "| tiny | fp32 | sft |" in table


def test_precision_bench_runs_each_variant_in_its_own_process(tiny_model_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("bench_precision", BENCH.parent / "bench_precision.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    harmful = tmp_path / "harmful.jsonl"
    harmful.write_text("".join(json.dumps({"prompt": f"Q{i}?", "response": f"Do bad thing {i}."}) + "\n"
                               for i in range(4)))
    bench.main(["--model", str(tiny_model_dir), "--harmful", str(harmful), "--steps", "2", "--warmup", "0",
                "--rounds", "1", "--batch", "2", "--max-length", "512", "--out", str(tmp_path), "--tag", "tiny"])
    result = json.loads((tmp_path / "bench_precision_tiny.json").read_text())
    assert set(result["summary"]) == set(bench.VARIANTS) and result["summary"]["fp32"]["time_ratio"] == 1.0
    (rnd,) = result["runs"]
    assert [len(r["loss"]) for r in rnd] == [2, 2, 2] and all(r["peak_rss_gib"] > 0 for r in rnd)
    # checkpointing recomputes the same numbers; bf16 autocast moves them a little
    assert result["summary"]["fp32 + checkpointing"]["max_abs_loss_diff"] < 1e-4
    assert 0 < result["summary"]["bf16"]["max_abs_loss_diff"] < 0.1
