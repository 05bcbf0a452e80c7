"""Multi-process training: 2 DDP processes (gloo, CPU) follow the same loss curve as 1 process with the same
global batch, and the ``accelerate launch --cpu --num_processes N`` command really starts N processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasft.training.launch import requested_cpu_processes

from .conftest import tiny_overrides

ACCEL = ["python", "/x/bin/accelerate", "launch"]
CPU_ENV = {"ACCELERATE_USE_CPU": "True"}


@pytest.mark.parametrize(
    "parent,env,want",
    [
        ([*ACCEL, "--cpu", "--num_processes", "2", "-m", "tasft", "train"], CPU_ENV, 2),
        ([*ACCEL, "--cpu", "--num_processes=3", "-m", "tasft"], CPU_ENV, 3),
        ([*ACCEL, "--cpu", "-m", "tasft"], CPU_ENV, 1),  # no count: accelerate's default, one process
        ([*ACCEL, "--cpu", "--num_processes", "2", "-m", "tasft"], {**CPU_ENV, "WORLD_SIZE": "2"}, 1),  # launched
        ([*ACCEL, "--cpu", "--num_processes", "2", "--mpirun_hostfile", "h", "-m", "tasft"], CPU_ENV, 1),  # MPI
        ([*ACCEL, "--num_processes", "2", "-m", "tasft"], {}, 1),  # not a --cpu launch
        (["bash", "run.sh", "--num_processes", "2"], CPU_ENV, 1),  # parent is not accelerate
    ],
)
def test_cpu_launch_detection(parent, env, want):
    assert requested_cpu_processes(parent, env) == want


def _run(cmd: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TASFT_TEST_CHUNK": "3"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _curve(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate CLI not installed")
@pytest.mark.parametrize("path", ["plain", "fused"])
def test_two_processes_follow_the_one_process_loss_curve(tiny_model_dir, tiny_data, tmp_path, path):
    """Same global batch (4 D_u + 4 D_h per step): 1 process × 4 against 2 processes × 2. Each global batch holds
    the same examples, so the curves differ only in how the per-process token means are averaged (DDP averages
    two means of 2 examples, one process takes the mean over 4): |Δloss| ≤ TOL. A wrong split (each process
    reading every example, or both the same D_h rows) changes the batches and moves the curve by more than
    that — 1 process with batch 2 differs by ~0.04 at the first step on this data."""
    tol = 0.015
    root = Path(__file__).resolve().parents[1]
    entry = ["-m", "tasft"] if path == "plain" else [str(root / "tests" / "fused_entry.py")]
    common = {"max_steps": 4, "ta_sft.penalty": "emd_lb", "measure": "false", "save_steps": 100}
    one, two, half = tmp_path / "one", tmp_path / "two", tmp_path / "half"
    sets = lambda out, b: [a for s in tiny_overrides(  # noqa: E731
        tiny_model_dir, tiny_data, out, batch_size=b, harmful_batch_size=b, **common) for a in ("--set", s)]
    _run([sys.executable, *entry, "train", *sets(one, 4)], root)
    _run([sys.executable, *entry, "train", *sets(half, 2)], root)
    launcher = ["accelerate", "launch", "--cpu", "--num_processes", "2"]
    if path == "fused":  # a script, not a module: the --cpu re-launch re-runs `-m tasft`, so launch DDP directly
        launcher = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2"]
    _run([*launcher, *entry, "train", *sets(two, 2)], root)

    a, b, c = _curve(one), _curve(two), _curve(half)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [0.5, 1.0, 1.5, 2.0]  # 8 D_u rows, 4 per step
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) <= tol, (x, y)
    assert max(abs(x["loss"] - z["loss"]) for x, z in zip(a, c)) > tol  # the tolerance can tell batches apart
    metrics_one = json.loads((one / "metrics.json").read_text())
    metrics_two = json.loads((two / "metrics.json").read_text())
    # rank 0 counts its own tokens: about half of the single process's (D_u and D_h both split)
    assert 0.3 < metrics_two["train_tokens"] / metrics_one["train_tokens"] < 0.7


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("accelerate") is None or shutil.which("tasft") is None,
                    reason="accelerate CLI or tasft console script not installed")
@pytest.mark.parametrize("entry", ["module", "console script"])
def test_both_entry_points_start_two_processes_under_accelerate_cpu(tiny_model_dir, tiny_data, tmp_path, entry):
    """``accelerate launch --cpu --num_processes 2`` with ``-m tasft`` or with the ``tasft`` console script: both
    re-launch as 2 gloo processes, so each step sees 2 × batch_size D_u rows (epoch 0.5 after step 1 of 8 rows
    with batch 2; one process would log 0.25)."""
    out = tmp_path / "run"
    sets = [a for s in tiny_overrides(tiny_model_dir, tiny_data, out, batch_size=2, harmful_batch_size=2,
                                      max_steps=2, save_steps=100, measure="false") for a in ("--set", s)]
    program = ["-m", "tasft"] if entry == "module" else [shutil.which("tasft")]
    cmd = ["accelerate", "launch", "--cpu", "--num_processes", "2", *program, "train", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "re-launching as 2 gloo DDP processes" in proc.stderr
    first = _curve(out)[0]
    assert first["step"] == 1 and first["epoch"] == pytest.approx(0.5)


class FakeState:
    """accelerate's PartialState as seen by one rank: main_process_first runs the body, counting barriers."""

    def __init__(self, main: bool):
        self.is_main_process, self.barriers = main, 0

    def main_process_first(self):
        import contextlib

        @contextlib.contextmanager
        def first():
            yield
            self.barriers += 1

        return first()


@pytest.mark.parametrize("main", [True, False])
def test_only_the_main_process_prepares_the_output_dir(tmp_path, monkeypatch, main):
    import tasft.training.run_dir as pipeline
    from tasft import outputs

    calls, state = [], FakeState(main)
    monkeypatch.setattr(pipeline, "_prepare_output_dir", lambda path, *a, **k: calls.append(path) or "lock")
    monkeypatch.setattr(outputs, "_distributed_state", lambda: state)
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "run"
    assert pipeline.prepare_output_dir(out, False, False) == ("lock" if main else None)
    assert calls == ([out] if main else []) and state.barriers == 1


def test_single_process_runs_prepare_directly(tmp_path, monkeypatch):
    import tasft.training.run_dir as pipeline
    from tasft import outputs

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(outputs, "_distributed_state", lambda: pytest.fail("no process group for one process"))
    lock = pipeline.prepare_output_dir(tmp_path / "run", False, False)
    assert lock is not None and (tmp_path / "run" / ".tasft-output").is_file()
    assert outputs.in_use(tmp_path / "run")  # held: any other open of the marker sees the lock
    lock.release()
    assert not outputs.in_use(tmp_path / "run")
