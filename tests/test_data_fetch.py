"""``tasft data fetch`` against a local HTTP server on 127.0.0.1 that serves the shared data (the same bytes as the
pinned upstream files): every file arrives with its pinned checksum, a partial download resumes with a range
request, a file already present is not fetched again, and a corrupted one is refused without being kept."""

from __future__ import annotations

import hashlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasft import data_fetch
from tasft.cli import main
from tasft.suites import find_data_dir

from .conftest import SHARED

DATA = SHARED / "data"
pytestmark = pytest.mark.skipif(not (DATA / "stl").is_dir(), reason="needs ../shared/data")


class RangeHandler(SimpleHTTPRequestHandler):
    """A static file server that honours ``Range: bytes=N-`` (206) and records every request."""

    log: list[tuple[str, str | None]] = []
    cut_once: set[str] = set()  # paths whose next answer breaks off half-way (the header promises all of it)

    def do_GET(self):  # noqa: N802 - http.server's naming
        RangeHandler.log.append((self.path, self.headers.get("Range")))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        if start >= len(data) and start:
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if self.path in RangeHandler.cut_once:
            RangeHandler.cut_once.discard(self.path)
            self.wfile.write(data[start:start + (len(data) - start) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data[start:])

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def mirror(tmp_path):
    """(base URL, served folder): a copy of the shared data on a local server."""
    served = tmp_path / "served"
    for item in data_fetch.MANIFEST:
        (served / item.path).parent.mkdir(parents=True, exist_ok=True)
        (served / item.path).write_bytes((DATA / item.path).read_bytes())
    RangeHandler.log = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()


def test_the_manifest_pins_the_shared_files():
    """The pinned checksums are those of the shared data, which equals upstream at the pinned commits (git blob ids
    compared when the manifest was written); every upstream URL names a commit, not a branch."""
    for item in data_fetch.MANIFEST:
        assert hashlib.sha256((DATA / item.path).read_bytes()).hexdigest() == item.sha256, item.path
        assert (DATA / item.path).stat().st_size == item.size
        assert item.url.startswith("https://raw.githubusercontent.com/") and "/main/" not in item.url


def test_fetch_writes_every_file_and_then_finds_it(mirror, tmp_path, capsys, monkeypatch):
    base, _ = mirror
    dest = tmp_path / "data"
    assert main(["data", "fetch", "--dest", str(dest), "--base-url", base]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(data_fetch.MANIFEST) + 1 and all("fetched" in line for line in lines[:-1])
    for item in data_fetch.MANIFEST:
        assert (dest / item.path).read_bytes() == (DATA / item.path).read_bytes()
    assert not list(dest.rglob("*.part"))
    monkeypatch.setenv("TASFT_DATA", str(dest))
    assert find_data_dir() == dest

    RangeHandler.log = []
    assert main(["data", "fetch", "--dest", str(dest), "--base-url", base]) == 0  # all present: no request
    assert RangeHandler.log == [] and all("present" in line for line in capsys.readouterr().out.splitlines()[:-1])


def test_a_partial_download_resumes_with_a_range_request(mirror, tmp_path):
    base, _ = mirror
    item = next(i for i in data_fetch.MANIFEST if i.path.endswith("safety_only_data_Instructions.json"))
    dest = tmp_path / "data"
    part = dest / (item.path + ".part")
    part.parent.mkdir(parents=True)
    whole = (DATA / item.path).read_bytes()
    part.write_bytes(whole[:1000])
    assert data_fetch.fetch_file(item, dest, f"{base}/{item.path}") == "fetched"
    assert RangeHandler.log == [(f"/{item.path}", "bytes=1000-")]
    assert (dest / item.path).read_bytes() == whole and not part.exists()


def test_a_corrupted_file_is_refused_and_not_kept(mirror, tmp_path, capsys):
    base, served = mirror
    item = data_fetch.MANIFEST[0]
    (served / item.path).write_bytes(b"tampered")
    dest = tmp_path / "data"
    assert main(["data", "fetch", "--dest", str(dest), "--base-url", base]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"tasft: error: {item.path}: checksum mismatch")
    assert not (dest / item.path).exists() and not (dest / (item.path + ".part")).exists()


def test_an_unreachable_server_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data_fetch.time, "sleep", lambda s: None)
    assert main(["data", "fetch", "--dest", str(tmp_path / "d"), "--base-url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "download failed after 3 attempts" in err[0] and "re-run to resume" in err[0]


def test_a_broken_off_download_resumes_on_the_next_attempt(mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(data_fetch.time, "sleep", lambda s: None)
    base, _ = mirror
    item = next(i for i in data_fetch.MANIFEST if i.path.endswith("gpt4.json"))
    RangeHandler.cut_once = {f"/{item.path}"}
    assert data_fetch.fetch_file(item, tmp_path, f"{base}/{item.path}") == "fetched"
    (first, _), (second, resumed) = RangeHandler.log
    assert first == second == f"/{item.path}" and resumed == f"bytes={item.size // 2}-"
    assert (tmp_path / item.path).read_bytes() == (DATA / item.path).read_bytes()


def test_a_different_file_at_dest_is_kept_unless_asked(mirror, tmp_path, capsys):
    base, _ = mirror
    item = data_fetch.MANIFEST[0]
    mine = tmp_path / "data" / item.path
    mine.parent.mkdir(parents=True)
    mine.write_text("my own edited copy\n")
    assert main(["data", "fetch", "--dest", str(tmp_path / "data"), "--base-url", base]) == 2
    assert "exists with other content than the pinned file" in capsys.readouterr().err
    assert mine.read_text() == "my own edited copy\n"
    assert main(["data", "fetch", "--dest", str(tmp_path / "data"), "--base-url", base, "--overwrite"]) == 0
    assert mine.read_bytes() == (DATA / item.path).read_bytes()
