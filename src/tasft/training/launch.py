"""Multi-process launch on machines without a GPU (``tasft train`` runs this first, from the console script and
from ``python -m tasft`` alike).

``accelerate launch --cpu --num_processes N`` starts N processes only through MPI (``--mpirun_hostfile``);
without it accelerate's simple launcher starts one process, and a run asked for N processes would silently
train with 1/N of the global batch. And under ``torchrun`` / ``accelerate launch --multi_gpu`` on a machine
without CUDA, ``TrainingArguments`` does not set up the gloo process group unless told the run is on CPU.
:func:`prepare` fixes both before anything imports the Trainer:

* ``accelerate launch --cpu --num_processes N`` (N > 1, no MPI): re-executes ``python -m tasft <args>`` under
  ``torch.distributed.run --standalone --nproc_per_node N`` (the same launcher accelerate uses for GPUs), so
  the run gets N gloo DDP processes;
* a distributed launch (``WORLD_SIZE`` > 1) without CUDA: ``train`` sets ``ACCELERATE_USE_CPU=true``
  (:func:`tasft.training.pipeline.train`), and the main process alone prepares the output directory
  (:func:`tasft.outputs.on_main_process_first`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_TRUE = ("1", "true", "yes")


def _flag(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def requested_cpu_processes(parent_argv: list[str], env: dict[str, str]) -> int:
    """N when this process is the single one that ``accelerate launch --cpu --num_processes N`` started
    without MPI (N > 1); else 1."""
    if env.get("ACCELERATE_USE_CPU", "").lower() not in _TRUE:
        return 1
    if any(k in env for k in ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")):
        return 1
    if "launch" not in parent_argv or not any("accelerate" in Path(a).name for a in parent_argv[:3]):
        return 1
    if _flag(parent_argv, "--mpirun_hostfile", "--mpirun-hostfile"):
        return 1
    value = _flag(parent_argv, "--num_processes", "--num-processes")
    try:
        return max(1, int(value)) if value is not None else 1
    except ValueError:
        return 1


def _parent_argv() -> list[str]:
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def prepare(argv: list[str] | None = None) -> None:
    """Re-launch as N CPU processes when ``accelerate launch --cpu --num_processes N`` started just one (see the
    module docstring); otherwise nothing. ``tasft train`` calls it first, from either entry point."""
    argv = sys.argv[1:] if argv is None else argv
    n = requested_cpu_processes(_parent_argv(), dict(os.environ))
    if n > 1:
        print(f"tasft: accelerate --cpu without MPI starts one process; re-launching as {n} gloo DDP processes "
              "(torch.distributed.run)", file=sys.stderr)
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                  f"--nproc_per_node={n}", "-m", "tasft", *argv])

