"""How the benchmark measures: step time (rounds, medians, paired ratios), peak memory, the allocator, and a
Trainer callback that splits an optimizer step into forward+backward, optimizer and the rest.

Timing runs with glibc's mmap threshold fixed at 32 MiB (the top of its dynamic range, where a training loop
settles after its first steps: buffers below it are reused from the heap, larger ones are fresh mappings
whose pages fault in on first touch). Peak memory on CPU is the resident set size above its value at the start
of the call, sampled every 0.5 ms by a thread, with the threshold lowered to 64 KiB for that call only, so
freed tensors go back to the system and the RSS follows the live tensors: an estimate, good for ratios.
"""

from __future__ import annotations

import ctypes
import os
import statistics
import sys
import threading
import time

import torch
from tqdm.auto import tqdm

PAGE = os.sysconf("SC_PAGE_SIZE")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
TIMING_MMAP_THRESHOLD = 32 * 2**20
MEMORY_MMAP_THRESHOLD = 64 * 2**10


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: allocator settings are left alone
        return None


LIBC = _libc()


def set_allocator(mmap_threshold: int) -> None:
    """glibc: allocations ≥ ``mmap_threshold`` get their own mapping (returned to the system on free); the heap
    is trimmed above 2× the threshold."""
    if LIBC is not None:
        LIBC.malloc_trim(0)
        LIBC.mallopt(M_MMAP_THRESHOLD, mmap_threshold)
        LIBC.mallopt(M_TRIM_THRESHOLD, 2 * mmap_threshold)


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


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
        set_allocator(MEMORY_MMAP_THRESHOLD)
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
            set_allocator(TIMING_MMAP_THRESHOLD)
        self.bytes = self.peak - self.base


def paired_ratios(times: list[float], reference: list[float]) -> list[float]:
    """times[r] / reference[r] for every round r."""
    return [a / b for a, b in zip(times, reference, strict=False)]


def paired_ratio(times: list[float], reference: list[float]) -> float:
    """Median over rounds r of times[r] / reference[r]: both were timed in the same round, so a change of
    background load between rounds cancels out (the ratio of two medians does not pair them)."""
    return statistics.median(paired_ratios(times, reference))


def measure(fn, device: torch.device, steps: int, warmup: int) -> dict:
    """Median seconds over ``steps`` calls after ``warmup``, and the peak memory of one more call."""
    return measure_rounds({"fn": fn}, device, steps, warmup)["fn"]


def measure_rounds(fns: dict, device: torch.device, steps: int, warmup: int, single: tuple[str, ...] = ()) -> dict:
    """Like :func:`measure` for several functions, timed in rounds (each round calls every function once, in
    order), so that a change in background load hits all of them alike; names in ``single`` are timed in the
    first round only (slow rows). Peak memory: one call each, after the timing."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for name, fn in fns.items():
        for _ in range(warmup if name not in single else 0):
            fn()
    for round_ in tqdm(range(steps), desc="timed rounds", leave=False, file=sys.stderr, disable=steps < 2):
        for name, fn in fns.items():
            if name in single and round_ > 0:
                continue
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, fn in fns.items():
        with PeakMemory(device) as mem:
            fn()
        out[name] = {"seconds": statistics.median(times[name]), "times": times[name], "peak_bytes": mem.bytes}
    return out


def step_timer(device: torch.device):
    """A Trainer callback that records each optimizer step's wall time (synchronised on CUDA) in ``.times``."""
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self._t0 = 0.0

        def on_step_begin(self, *_, **__):
            sync(device)
            self._t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            sync(device)
            self.times.append(time.perf_counter() - self._t0)

    return Timer()


def step_clock(device: torch.device, bare=None):
    """A Trainer callback that times each optimizer step where it runs: the forward+backward micro-steps (via
    :meth:`Clock.wrap`), the optimizer (between the pre- and post-optimizer events, on the real gradients) and
    the wall time from the end of the previous step (data loading, collation, logging, clipping, scheduler
    included). If ``bare`` is given, it runs once after every step, outside the timed intervals: a paired
    reference measured under the same load as the step before it."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.resumes: list[float] = []
            self.optimizer_seconds: list[float] = []
            self.forward_backward: list[float] = []
            self.bare_seconds: list[float] = []
            self._fb = 0.0
            self._started = 0.0

        def wrap(self, trainer) -> None:
            inner = trainer.training_step

            def timed(*args, **kwargs):
                sync(device)
                start = time.perf_counter()
                loss = inner(*args, **kwargs)
                sync(device)
                self._fb += time.perf_counter() - start
                return loss

            trainer.training_step = timed

        def on_pre_optimizer_step(self, *a, **k):
            sync(device)
            self._started = time.perf_counter()

        def on_optimizer_step(self, *a, **k):
            sync(device)
            self.optimizer_seconds.append(time.perf_counter() - self._started)

        def on_step_end(self, *a, **k):
            sync(device)
            self.ends.append(time.perf_counter())
            self.forward_backward.append(self._fb)
            self._fb = 0.0
            if bare is not None:
                start = time.perf_counter()
                bare()
                sync(device)
                self.bare_seconds.append(time.perf_counter() - start)
            self.resumes.append(time.perf_counter())

        def walls(self) -> list[float]:
            """Wall seconds of steps 2, 3, ... (step 1 has no previous end; it also warms up)."""
            return [end - resume for resume, end in zip(self.resumes, self.ends[1:], strict=False)]

    return Clock()
