"""Peak RSS in metrics: the high-water mark sees fresh resident pages, and a reset forgets ones since released."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import pytest

from tasft import memory

MIB = 2**20


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_peak_sees_fresh_pages_and_the_reset_forgets_them():
    if not memory.reset_peak_rss():
        pytest.skip("the kernel does not let this process reset its high-water mark")
    start = _rss()
    assert memory.peak_rss_bytes() - start < 64 * MIB  # the mark restarts at the resident set
    block = mmap.mmap(-1, 256 * MIB)  # fresh anonymous pages (no allocator cache can serve them), every one touched
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    grown = memory.peak_rss_bytes()
    assert grown - start >= 200 * MIB
    block.close()
    assert memory.reset_peak_rss()
    assert memory.peak_rss_bytes() < grown - 150 * MIB
    fields = memory.peak_rss_fields()
    assert fields["peak_rss_scope"] == "run" and 0 < fields["peak_rss_gib"] < grown / 2**30
