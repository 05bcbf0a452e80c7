"""Peak RSS in metrics: the high-water mark sees an allocation, and a reset forgets one that was freed."""

from __future__ import annotations

import sys

import pytest
import torch

from tasft import memory

GIB = 2**30


def test_the_peak_sees_an_allocation_and_the_reset_forgets_it():
    memory.reset_peak_rss()
    before = memory.peak_rss_bytes()
    block = torch.ones(256 * 2**20 // 4)  # 256 MiB, touched
    grown = memory.peak_rss_bytes()
    assert grown - before >= 200 * 2**20
    del block
    if not sys.platform.startswith("linux") or not memory.reset_peak_rss():
        pytest.skip("the kernel does not reset the high-water mark here")
    assert memory.peak_rss_bytes() < grown - 150 * 2**20
    fields = memory.peak_rss_fields()
    assert fields["peak_rss_scope"] == "run" and 0 < fields["peak_rss_gib"] < grown / GIB
