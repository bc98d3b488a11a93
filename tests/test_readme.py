"""The README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_examples_in_readme_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    assert (tmp_path / "runs" / "api-demo" / "why.png").is_file()


def _train_option_table() -> str:
    section = README.read_text(encoding="utf-8").split("### `python -m fusion.train`\n", 1)[1]
    return re.search(r"^\| option \|.*?\n(?!\|)", section, flags=re.S | re.M).group(0)


def test_the_train_option_table_is_the_parser_s():
    """The README's table of ``python -m fusion.train`` options is derived from the
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
            assert str(defaults[flag]) in shown, f"{flag}: the README says {shown!r}, the parser {defaults[flag]!r}"
    assert table == option_table(parser), "README.md's fusion.train table differs from the parser's; regenerate it"
