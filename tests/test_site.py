"""The documentation holds together: every relative link of ``README.md`` and
``docs/*.md`` leads to a file that exists (and to a heading that exists, for an anchor
into a page), and ``mkdocs build --strict`` passes (skipped, saying why, where the
``docs`` extra is not installed).

The link check needs nothing but the files, so it runs everywhere; the build also
catches what only MkDocs knows (a page missing from ``nav``, an API reference to a name
that moved).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(page: Path) -> str:
    """The page without its code blocks and inline code, where brackets are not links."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """A heading's anchor as MkDocs' ``toc`` extension makes it."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)  # inline code is shown as its text
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", page.read_text(encoding="utf-8")), re.M)}


def _relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(page)) if not re.match(r"[a-z][a-z+.-]*:", t)]


def test_the_pages_link_to_each_other():
    assert any(t.startswith("docs/") for t in _relative_links(ROOT / "README.md"))


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_leads_somewhere(page):
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif page.parent == DOCS and DOCS not in file.parents:
            broken.append(f"{target}: outside docs/, so not on the site")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: {file.name} has no heading #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_page_is_in_the_site_s_navigation():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert [p.name for p in DOCS.glob("*.md") if f": {p.name}" not in nav] == []


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")),
    reason="the docs extra (mkdocs, mkdocs-material, mkdocstrings[python]) is not installed: pip install -e '.[docs]'",
)
def test_the_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "index.html").is_file()


def test_sphinx_roles_become_inline_code_in_the_api_reference():
    pytest.importorskip("griffe", reason="the docs extra (mkdocstrings[python], which brings griffe) is not installed")
    spec = importlib.util.spec_from_file_location("griffe_roles", DOCS / "griffe_roles.py")
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    text = "see :func:`fusion.cli.option_table`, :meth:`~Config.validate` and :class:`the model <fusion.X>`"
    assert roles.without_roles(text) == "see `fusion.cli.option_table`, `validate` and `the model`"
