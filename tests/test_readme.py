"""The README's and the documentation pages' examples run as written, and the table of
``fusion train``'s options on the command-line page is the parser's.

Every ```` ```python ```` block of ``README.md`` and ``docs/*.md`` runs, each page in a
fresh folder, its blocks in order in one namespace. Two conventions keep this cheap and
explicit: a block preceded by the line ``<!-- no-run -->`` is not run (none is, at
present), and a block written identically on an earlier page (the README's example is
the Python API page's) runs only there. Blocks that train keep their models tiny.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
CLI_PAGE = ROOT / "docs" / "cli.md"
NO_RUN = "<!-- no-run -->"


def python_blocks(page: Path) -> list[str]:
    """The page's Python blocks, in order, without those marked not to run."""
    text = "\n" + page.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"```python\n(.*?)^```", text, flags=re.S | re.M):
        line_before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if line_before.strip() != NO_RUN:
            blocks.append(match.group(1))
    return blocks


def test_the_readme_and_the_python_api_page_have_examples():
    assert python_blocks(README), "the README has no Python example"
    assert python_blocks(ROOT / "docs" / "python-api.md")


def _own_blocks(page: Path) -> list[str]:
    """The page's blocks that no earlier page (README first) holds word for word."""
    earlier = {block for p in PAGES[: PAGES.index(page)] for block in python_blocks(p)}
    return [b for b in python_blocks(page) if b not in earlier]


WITH_EXAMPLES = [p for p in PAGES if _own_blocks(p)]


@pytest.mark.parametrize("page", WITH_EXAMPLES, ids=[p.relative_to(ROOT).as_posix() for p in WITH_EXAMPLES])
def test_python_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "docs"}
    for block in _own_blocks(page):
        exec(compile(block, str(page), "exec"), namespace)
    if page == README:
        assert (tmp_path / "runs" / "api-demo" / "why.png").is_file()


def _train_option_table() -> str:
    section = CLI_PAGE.read_text(encoding="utf-8").split("## `fusion train`\n", 1)[1]
    return re.search(r"^\| option \|.*?\n(?!\|)", section, flags=re.S | re.M).group(0)


def test_the_train_option_table_is_the_parser_s():
    """The command-line page's table of ``fusion train`` options is derived from the
    parser (itself derived from the settings' declarations): every flag with its
    default and help, no row for a flag the parser lacks. After changing a setting,
    regenerate it with ``python -c "from fusion.cli import option_table; from
    fusion.train import build_parser; print(option_table(build_parser()))"``."""
    from fusion.cli import command_flags, option_table
    from fusion.train import build_parser

    parser = build_parser()
    table = _train_option_table()
    rows = re.findall(r"^\| `(?:-\w, )?(--[\w-]+)([^`]*)` \| ([^|]*) \|", table, flags=re.M)
    # a switch with a negative form is one row: `--flip-rotate, --no-flip-rotate`
    named = [f for flag, rest, _ in rows for f in (flag, *re.findall(r", (--[\w-]+)", rest))]
    assert named == [f for f in command_flags(parser) if f.startswith("--") and f != "--help"]
    rows = [(flag, shown) for flag, _, shown in rows]
    # a counter's default (-v: 0) is no setting's
    counted = {o for a in parser._actions if type(a).__name__ == "_CountAction" for o in a.option_strings}
    defaults = {o: a.default for a in parser._actions for o in a.option_strings}
    for flag, shown in rows:
        if (
            flag not in counted
            and isinstance(defaults[flag], (int, float, str))
            and not isinstance(defaults[flag], bool)
        ):
            assert str(defaults[flag]) in shown, f"{flag}: docs/cli.md says {shown!r}, the parser {defaults[flag]!r}"
    assert table == option_table(parser), "docs/cli.md's fusion train table differs from the parser's; regenerate it"
