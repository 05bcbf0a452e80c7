"""``tasft data fetch``: download the public data sets tasft evaluates with, from their official locations.

Every file is pinned: a URL at a fixed commit of its upstream repository and the SHA-256 of its bytes. A download
goes to ``<file>.part`` (resumed with an HTTP range request when a partial file is there), is checked against
the checksum and only then renamed into place; a file already present with the right checksum is left alone.
Licences: STL data CC BY-NC 4.0, XSTest CC BY 4.0, HH-RLHF MIT, AlpacaEval data CC BY-NC 4.0 — they are the
sources', not tasft's (the LICENSE files of XSTest and HH-RLHF are fetched with them).
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import TasftError
from .io_utils import sha256_file

_STL = "https://raw.githubusercontent.com/vinid/safety-tuned-llamas/36a4b8d5c2177ed165bf61f59b590161394f7f12/data"
_XSTEST = "https://raw.githubusercontent.com/paul-rottger/exaggerated-safety/d7bb5bd738c1fcbc36edd83d5e7d1b71a3e2d84d"
_HH = "https://raw.githubusercontent.com/anthropics/hh-rlhf/354e5c3cb8960630860dd5774a6ac2a58313bf4d"
_ALPACA = "https://raw.githubusercontent.com/tatsu-lab/alpaca_eval/cd543a149df89434d8a54582c0151c0b945c3d20/results"


@dataclass(frozen=True)
class RemoteFile:
    """``path`` in the data directory ← ``url``, whose bytes have SHA-256 ``sha256`` and length ``size``."""

    path: str
    url: str
    sha256: str
    size: int


def _xstest_labels(name: str, sha256: str, size: int) -> RemoteFile:
    url = f"{_XSTEST}/evaluation/automated_evaluation_labels/xstest_v2_completions_{name}_gpteval.csv"
    return RemoteFile(f"xstest/labeled_completions/{name}.csv", url, sha256, size)


MANIFEST: tuple[RemoteFile, ...] = (
    RemoteFile("stl/evaluation/I-MaliciousInstructions.json", f"{_STL}/evaluation/I-MaliciousInstructions.json",
               "7a2bc751d49983800848050282aa2a84b3faa7044c3178228c49dd68df7d679f", 7314),
    RemoteFile("stl/evaluation/I-CoNa.json", f"{_STL}/evaluation/I-CoNa.json",
               "e07d92e376198e60ac1004902dc3fec46513ac70b08d855b4101288b8270d62a", 15640),
    RemoteFile("stl/evaluation/I-Controversial.json", f"{_STL}/evaluation/I-Controversial.json",
               "0590fc6ee97a39c6a43adc21fe5a4ccbf546ea52e89a32757db6ea3d46ce65c4", 3208),
    RemoteFile("stl/evaluation/Q-Harm.json", f"{_STL}/evaluation/Q-Harm.json",
               "ecc1d19030d41ad550a1e69996dc424074e3e45fb2fa5e8e44b46f294aea295a", 6137),
    RemoteFile("stl/evaluation/I-PhysicalSafetyUnsafe.json", f"{_STL}/evaluation/I-PhysicalSafetyUnsafe.json",
               "16324a2f1ded933e8c7a9f6c7d3924130f76260d03f9df2205e0a25c02de8aae", 11782),
    RemoteFile("stl/evaluation/I-PhysicalSafetySafe.json", f"{_STL}/evaluation/I-PhysicalSafetySafe.json",
               "34c874532623e405fb574f0fa8d6b86cbecce0e3340f67b146a6a6bc2453bed6", 10501),
    RemoteFile("stl/evaluation/I-Alpaca.json", f"{_STL}/evaluation/I-Alpaca.json",
               "30db84ee303df15b653566437ccf1a2fc837caac99a570915d720f65f041fe6d", 3313),
    RemoteFile("stl/training/safety_only_data_Instructions.json", f"{_STL}/training/safety_only_data_Instructions.json",
               "7dde08acf87f10cf74fd1b76f56538eae8e413ae8e6b09e3f7bcd97769058dbe", 1238429),
    RemoteFile("xstest/xstest_prompts.csv", f"{_XSTEST}/xstest_prompts.csv",
               "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a", 38719),
    RemoteFile("xstest/LICENSE", f"{_XSTEST}/LICENSE",
               "9e5f1b3c610b9c2da5c313bf81d577a7d1acec686bdb0384edefa6df0f90cd94", 18656),
    _xstest_labels("gpt4", "ba3b1e79ace763998ecdb48bbec70e3a4d763d8402cbb740f58ed6d275fc324a", 266197),
    _xstest_labels("llama2new", "14cb194968a29e7c5d0c2e280657f2ff14ea52f173ca12bc786387abd5185a70", 524610),
    _xstest_labels("llama2orig", "a918c4d0c7355da5c80ce73dd7bc79b20422148b265851afe1e53c08e472ce48", 477824),
    _xstest_labels("mistralguard", "e3e0abcef20d95f3ea607e3db08104edb4e2593e38ce8fd517e69e06cc35260e", 310914),
    _xstest_labels("mistralinstruct", "68adba2f51206f6ef30d3f5d755ef5e3f550b738b6f269220fca4067eb513794", 379905),
    RemoteFile("hh-rlhf/harmless-base-test.jsonl.gz", f"{_HH}/harmless-base/test.jsonl.gz",
               "ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03", 742801),
    RemoteFile("hh-rlhf/LICENSE", f"{_HH}/LICENSE",
               "d4fb18db48757e273261a5597b8a09381de8073da060474ce33d0643e06c875e", 1066),
    RemoteFile("alpaca_eval/text_davinci_003.json", f"{_ALPACA}/text_davinci_003/model_outputs.json",
               "af0bc112f08c88bf589bbfe6fc1036806d0a0f6fec9c4d5a4db860f5afe73b4b", 474865),
    RemoteFile("alpaca_eval/gpt4.json", f"{_ALPACA}/gpt4/model_outputs.json",
               "9c5149c146fadc99285f23abbaec2a62ba94ffa35c1dddacb70686571d9d780e", 1329994),
    RemoteFile("alpaca_eval/gpt35_turbo_instruct.json", f"{_ALPACA}/gpt35_turbo_instruct/model_outputs.json",
               "bf79e46d036cd24d50dbeaf37a09a2529ff0aca9ac39938c7bdbc22fcce1f9f0", 1062162),
    RemoteFile("alpaca_eval/llama-2-7b-chat-hf.json", f"{_ALPACA}/llama-2-7b-chat-hf/model_outputs.json",
               "5a66ed18b1ecef7a6a728eb32665651853092cbf11d518538d80d86c2df1b5ae", 1429591),
)


def default_data_dir() -> Path:
    """Where ``tasft data fetch`` puts the data without ``--dest`` (and where evaluation looks for it last)."""
    from .models import cache_dir

    return cache_dir() / "data"


def _download(url: str, part: Path, timeout: float) -> bool:
    """Append ``url``'s bytes to ``part``, resuming after what it holds (a server that ignores the range restarts);
    True when the server's whole answer arrived (its Content-Length, when it sends one), False when it broke off."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "tasft-data-fetch",
                                                   **({"Range": f"bytes={have}-"} if have else {})})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        mode = "ab" if have and response.status == 206 else "wb"
        length = response.headers.get("Content-Length")
        got = 0
        with part.open(mode) as fh:
            while block := response.read(1 << 16):
                fh.write(block)
                got += len(block)
    return length is None or got == int(length)


def fetch_file(item: RemoteFile, dest: Path, url: str, attempts: int = 3, timeout: float = 60.0,
               overwrite: bool = False) -> str:
    """Make ``dest / item.path`` hold the pinned bytes; returns what was done (``present`` / ``fetched``).
    A file already there with other bytes is replaced only with ``overwrite``."""
    target = dest / item.path
    if target.is_file():
        if target.stat().st_size == item.size and sha256_file(target) == item.sha256:
            return "present"
        if not overwrite:
            raise TasftError(f"{target} exists with other content than the pinned file (use --overwrite to replace "
                             "it, or another --dest)")
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    problem = "no attempt made"
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            time.sleep(min(2 ** attempt, 10))
        if part.exists() and part.stat().st_size > item.size:
            part.unlink()  # longer than the file: start over
        complete = True
        try:
            if not part.exists() or part.stat().st_size < item.size:
                complete = _download(url, part, timeout)
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
            if exc.code == 416:  # the server has no bytes past what the partial file holds: start over
                part.unlink(missing_ok=True)
                continue
            if exc.code < 500:
                raise TasftError(f"{item.path}: download failed ({url}: {problem})") from None
            continue
        except (urllib.error.URLError, OSError) as exc:
            problem = str(getattr(exc, "reason", None) or exc)
            continue
        size = part.stat().st_size
        if size < item.size and not complete:  # the connection broke off: the next attempt resumes from here
            problem = f"stopped after {size} of {item.size} bytes"
            continue
        got = sha256_file(part)
        if got != item.sha256:
            part.unlink()
            raise TasftError(f"{item.path}: checksum mismatch (got sha256 {got[:12]}…, pinned {item.sha256[:12]}…); "
                             "the partial download was removed")
        os.replace(part, target)
        return "fetched"
    raise TasftError(f"{item.path}: download failed after {attempts} attempts ({url}: {problem}); re-run to resume")


def fetch_all(dest: str | Path | None = None, base_url: str | None = None, overwrite: bool = False,
              report: Callable[[str], None] = print) -> Path:
    """Fetch every file of :data:`MANIFEST` into ``dest`` (default :func:`default_data_dir`), one line each.
    ``base_url``: a mirror laid out like the data directory (``{base_url}/{path}``) instead of the sources."""
    dest = Path(dest).expanduser() if dest else default_data_dir()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TasftError(f"--dest {dest}: cannot write there ({exc.strerror})") from None
    for item in MANIFEST:
        url = f"{base_url.rstrip('/')}/{item.path}" if base_url else item.url
        state = fetch_file(item, dest, url, overwrite=overwrite)
        report(f"{state:>8}  {item.path}  ({item.size / 1e6:.2f} MB, sha256 ok)")
    return dest
