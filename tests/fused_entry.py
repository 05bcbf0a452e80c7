"""``python -m tasft`` with the trainer's fused loss path forced on (chunk size from ``TASFT_TEST_CHUNK``): lets
the multi-process test run the chunked losses under DDP whatever the pipeline passes to the trainer."""

import os
import sys

import tasft.training.trainer as trainer_module
from tasft.cli import main

_init = trainer_module.MethodTrainer.__init__


def _init_fused(self, *args, **kwargs):
    kwargs["loss_chunk_size"] = int(os.environ["TASFT_TEST_CHUNK"])
    _init(self, *args, **kwargs)


trainer_module.MethodTrainer.__init__ = _init_fused
sys.exit(main())
