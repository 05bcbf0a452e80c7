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
