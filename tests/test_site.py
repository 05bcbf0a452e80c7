"""The documentation site builds in strict mode (a broken link or reference fails it), and every page it has — and a
`tasft report` page with its samples page — renders in a real browser (headless Chromium): its content is there,
its images load and its links resolve, anchors included.

Needs the ``docs`` extra and Chromium with its driver (``apt-get install chromium chromium-driver``); without them
the tests skip, unless ``TASFT_REQUIRE_SITE=1`` (as ``.ci/run`` sets it), where a missing tool fails them.
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIRE = os.environ.get("TASFT_REQUIRE_SITE") == "1"


def _need(ok: object, why: str) -> None:
    if not ok:
        if REQUIRE:
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    _need(importlib.util.find_spec("mkdocs") and importlib.util.find_spec("mkdocstrings"),
          "the docs extra is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(out)], capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def browser():
    _need(importlib.util.find_spec("selenium"), "selenium is not installed (pip install -e '.[docs]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    _need(chromium and driver, "Chromium and its driver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    chrome.set_page_load_timeout(60)
    yield chrome
    chrome.quit()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _serve(root: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class _Ids(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        self.ids |= {value for name, value in attrs if name in ("id", "name") and value}


def _ids(url: str, cache: dict[str, set[str] | None]) -> set[str] | None:
    """The element ids of the page at ``url`` (None when it does not load)."""
    if url not in cache:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = response.read()
                kind = response.headers.get_content_type()
        except OSError:
            cache[url] = None
            return None
        parser = _Ids()
        if kind == "text/html":
            parser.feed(body.decode("utf-8", "replace"))
        cache[url] = parser.ids
    return cache[url]


def _check_pages(chrome, base: str, pages: list[str]) -> list[str]:
    """Open each page; the problems found: no content, an image that did not load, a link or anchor that does not
    resolve on the same site."""
    problems, cache = [], {}
    for page in pages:
        url = urllib.parse.urljoin(base, page)
        chrome.get(url)
        text = chrome.execute_script("return (document.querySelector('article') || document.body).innerText")
        if not chrome.title or len(text.strip()) < 20:
            problems.append(f"{page}: no content")
        images = chrome.execute_script(
            "return [...document.images].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
        problems += [f"{page}: image {src[:80]} did not load" for src, ok in images if not ok]
        for href in chrome.execute_script("return [...document.querySelectorAll('a[href]')].map(a => a.href)"):
            if not href.startswith(base):
                continue  # another site: not ours to check offline
            target, _, anchor = href.partition("#")
            ids = _ids(target, cache)
            if ids is None:
                problems.append(f"{page}: link {href[len(base):]} does not resolve")
            elif anchor and urllib.parse.unquote(anchor) not in ids:
                problems.append(f"{page}: link {href[len(base):]}: no such anchor")
    return problems


def test_every_page_of_the_site_renders_with_its_images_and_links(site, browser):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html") if p.name != "404.html")
    assert {"index.html", "getting-started/index.html", "cli/index.html", "api/index.html",
            "RESULTS/index.html"} <= set(pages)
    server, base = _serve(site)
    try:
        assert _check_pages(browser, base, pages) == []
    finally:
        server.shutdown()


def test_the_cli_reference_is_generated_from_the_parser(site):
    """Every command's --help text is on the CLI page, as the parser writes it now (options and help included)."""
    import html

    from tasft.cli import build_parser
    from tasft.cli_reference import _subcommands

    page = html.unescape((site / "cli" / "index.html").read_text(encoding="utf-8"))
    commands = _subcommands(build_parser())
    assert len(commands) >= 11
    for name, sub in commands.items():
        assert f"usage: tasft {name}" in page, name
        for action in sub._actions:
            assert all(flag in page for flag in action.option_strings), (name, action.option_strings)


def test_a_report_page_and_its_samples_page_render(tmp_path, tiny_model_dir, monkeypatch, browser):
    from tasft.cli import main

    from .test_uncertainty import _evaluation

    _evaluation(tmp_path, tiny_model_dir, monkeypatch, "a", "bad")
    _evaluation(tmp_path, tiny_model_dir, monkeypatch, "b", "good")
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "rep"),
                 "--reference", str(tmp_path / "a"), "--samples", "3"]) == 0
    server, base = _serve(tmp_path / "rep")
    try:
        assert _check_pages(browser, base, ["report.html", "samples.html"]) == []
        browser.get(base + "report.html")
        assert browser.execute_script("return document.images.length") >= 1
    finally:
        server.shutdown()


def test_the_page_check_finds_a_broken_image_link_and_anchor(tmp_path, browser):
    """The checker itself fails where it should: a missing image, a link to no page, an anchor on no element."""
    (tmp_path / "ok.html").write_text("<html><head><title>ok</title></head><body><article><p id='here'>"
                                      "Enough text for a page to count as content.</p></article></body></html>")
    (tmp_path / "bad.html").write_text(
        "<html><head><title>bad</title></head><body><article><p>Enough text for a page to count as content.</p>"
        "<img src='missing.png'><a href='nowhere.html'>x</a><a href='ok.html#there'>y</a>"
        "<a href='ok.html#here'>z</a></article></body></html>")
    server, base = _serve(tmp_path)
    try:
        assert _check_pages(browser, base, ["bad.html"]) == [
            "bad.html: image missing.png did not load", "bad.html: link nowhere.html does not resolve",
            "bad.html: link ok.html#there: no such anchor"]
    finally:
        server.shutdown()
