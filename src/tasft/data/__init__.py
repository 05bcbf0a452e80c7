"""Data, in the order it flows: :mod:`~tasft.data.records` reads and selects records (prompt, optional response,
origin), :mod:`~tasft.data.batches` renders them with the model's template, tokenises and collates them.

The public names of both are re-exported here, so ``from tasft.data import Record, collate`` keeps working.
"""

from .batches import (
    ALPACA_HEADER,
    Tokenized,
    bos_prefix,
    chat_messages,
    collate,
    format_prompt,
    position_weights,
    prompt_ids,
    split_template,
    tokenize_record,
    tokenize_records,
)
from .records import (
    VERDICTS,
    Prompt,
    Record,
    heldout_bucket,
    load_source,
    parse_record,
    prompt_id,
    prompt_key,
    read_records,
    read_verdicts,
    resolve_path,
    select_records,
)

__all__ = [
    "ALPACA_HEADER", "bos_prefix", "chat_messages", "collate", "format_prompt", "heldout_bucket", "load_source",
    "parse_record", "position_weights", "Prompt", "prompt_id", "prompt_ids", "prompt_key", "read_records",
    "read_verdicts", "Record", "resolve_path", "select_records", "split_template", "tokenize_record",
    "tokenize_records", "Tokenized", "VERDICTS",
]
