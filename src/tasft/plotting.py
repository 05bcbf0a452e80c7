"""The one way tasft writes a matplotlib figure: headless backend, a compact PNG to a temp name renamed into place."""

from __future__ import annotations

import io
from pathlib import Path

from .io_utils import write_bytes_atomic


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def compact_png(png: bytes) -> bytes:
    """``png`` re-encoded with a 256-colour palette (median cut) and zlib's best effort: a line or scatter plot has
    few colours, so it looks the same at about a third of the bytes (matplotlib writes 32-bit RGBA). Deterministic:
    the same image gives the same bytes."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        palette = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    palette.save(out, "PNG", optimize=True)
    return out.getvalue()


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as ``path`` (a compact PNG, :func:`compact_png`) via a temp file and a rename, then close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    pyplot().close(fig)
    return write_bytes_atomic(path, compact_png(buffer.getvalue()))
