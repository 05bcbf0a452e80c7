"""mkdocs hooks for the documentation site (mkdocs.yml):

- the CLI reference page (docs/cli.md) gets tasft's ``--help`` texts, generated from the argument parser at build
  time (:func:`tasft.cli_reference.reference_markdown`), so it cannot drift from the commands;
- a relative link from a page to a file of the repository outside ``docs/`` (a config, a source file, a benchmark)
  is published with the site under ``repo/`` and the link pointed there, so that it works on the built site as on
  the repository; a link to a repository file that does not exist, or to a folder, fails the build.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

PLACEHOLDER = "<!-- cli-reference -->"
LINK = re.compile(r"(\]\()([^)\s#]+)((?:#[^)\s]*)?\))")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def _repo(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def _outside(src_uri: str, link: str, config) -> str | None:
    """The repository path (POSIX, from the root) that a relative link on page ``src_uri`` names when it lies
    outside docs/; None for a link inside docs/, an absolute URL or a site-absolute path."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", link) or link.startswith("/"):
        return None
    docs = Path(config["docs_dir"]).resolve()
    target = (docs / posixpath.dirname(src_uri) / link).resolve()
    if target == docs or docs in target.parents:
        return None
    repo = _repo(config)
    if repo not in target.parents:
        raise PluginError(f"docs/{src_uri}: link {link} leaves the repository")
    return target.relative_to(repo).as_posix()


def _links(markdown: str):
    return LINK.finditer(FENCE.sub("", markdown))


def on_files(files, config):
    """Add every repository file outside docs/ that a page links to, as ``repo/<path>`` of the site."""
    repo, wanted = _repo(config), set()
    for page in files.documentation_pages():
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        for match in _links(text):
            target = _outside(page.src_uri, match.group(2), config)
            if target is None:
                continue
            if not (repo / target).is_file():
                kind = "a folder" if (repo / target).is_dir() else "missing"
                raise PluginError(f"docs/{page.src_uri}: link {match.group(2)} is {kind} (link an existing file)")
            wanted.add(target)
    for target in sorted(wanted):
        files.append(File.generated(config, f"repo/{target}", abs_src_path=str(repo / target)))
    return files


ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|exc):(?=<code>)")


def on_page_content(html: str, page, config, files):
    """Docstrings cross-reference in Sphinx's roles (``:func:`x```); the site shows the name as code."""
    return ROLE.sub("", html)


def on_page_markdown(markdown: str, page, config, files):
    if page.file.src_uri == "cli.md":
        from tasft.cli_reference import reference_markdown

        if PLACEHOLDER not in markdown:
            raise PluginError("docs/cli.md: the placeholder for the generated reference is missing")
        markdown = markdown.replace(PLACEHOLDER, reference_markdown())
    up = "../" * page.file.src_uri.count("/")

    def rewrite(match: re.Match) -> str:
        target = _outside(page.file.src_uri, match.group(2), config)
        return match.group(0) if target is None else f"{match.group(1)}{up}repo/{target}{match.group(3)}"

    return LINK.sub(rewrite, markdown)
