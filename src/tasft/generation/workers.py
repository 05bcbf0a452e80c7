"""Generation shared by several CPU processes: the same batches, the same tokens, more of the machine used.

On a few CPU cores one process with one intra-op thread per core scales poorly on decode-sized matrix products
(64 × 576 · 576 × 1536 for the default model): measured on 2 cores, one 1-thread process beside another job
generates the full spec's answers in 716 s, one 2-thread process alone in 618 s — two 1-thread processes do ~1.7×
the work of one 2-thread process. ``GenerationSettings.workers = W`` forks W processes (Linux), each with one torch
thread; the workers take the batches (the same length-sorted batches, the same seeds, as one process would make)
from one queue as each becomes free — so one slow batch does not leave the other workers idle — and the parent
writes the results as they arrive. Greedy outputs are therefore identical to ``workers: 1``
(``tests/test_decode.py``). The forked workers share the parent's model weights (copy-on-write: inference does not
write them), so memory grows by little more than each worker's activations and KV cache.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
import sys
import traceback
from collections.abc import Iterator

import torch

from ..errors import TasftError

POLL_S = 5.0  # seconds between checks that the workers are alive


def _worker(generate_batch, model, tokenizer, encoded, settings, batches, seeds, tasks, queue, rank) -> None:
    torch.set_num_threads(1)
    try:
        while (k := tasks.get()) is not None:
            idx = batches[k]
            queue.put(("ok", rank, (idx, generate_batch(model, tokenizer, [encoded[i] for i in idx], settings,
                                                        seeds[k]))))
        queue.put(("done", rank, None))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it as one line
        queue.put(("error", rank, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"))


def available() -> bool:
    """Forked workers are used on Linux only (fork elsewhere is unsafe or missing)."""
    return sys.platform.startswith("linux")


def generate_parallel(generate_batch, model, tokenizer, encoded: list[list[int]], settings, batches: list[list[int]],
                      seeds: list[int], workers: int) -> Iterator[list[tuple[int, str]]]:
    """Yield each batch's (index, text) pairs as the workers finish them (in no fixed order); ``generate_batch``
    is :func:`tasft.generation.generate.generate_batch` (passed in: this module does not import its caller)."""
    ctx = mp.get_context("fork")
    queue, tasks = ctx.Queue(), ctx.Queue()
    for k in range(len(batches)):
        tasks.put(k)
    for _ in range(workers):
        tasks.put(None)  # one stop sign per worker, after every batch
    procs = [ctx.Process(target=_worker, args=(generate_batch, model, tokenizer, encoded, settings, batches, seeds,
                                                tasks, queue, k), daemon=True) for k in range(workers)]
    for p in procs:
        p.start()
    done: set[int] = set()
    try:
        while len(done) < len(procs):
            try:
                kind, rank, payload = queue.get(timeout=POLL_S)
            except queue_module.Empty:  # nothing new: is every unfinished worker still alive?
                dead = [k for k, p in enumerate(procs) if k not in done and not p.is_alive()]
                if dead:
                    raise TasftError(f"a generation worker died (exit code {procs[dead[0]].exitcode}; out of "
                                     "memory? try fewer --workers or a smaller --batch-size)") from None
                continue
            if kind == "done":
                done.add(rank)
            elif kind == "error":
                raise TasftError("a generation worker failed: " + payload.splitlines()[0])
            else:
                idx, texts = payload
                yield list(zip(idx, texts))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(timeout=5)
