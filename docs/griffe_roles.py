"""A griffe extension for the API reference: Sphinx roles in docstrings as inline code.

fusion's docstrings cite other code with Sphinx roles (``:func:`fusion.cli.option_table```,
``:meth:`~Config.validate```), which ``tests/test_docs.py`` checks resolve. mkdocstrings
does not read roles and would show the role's name beside the code; this shows the
target as inline code instead (its last part where the role says ``~``, its text where
it says ``text <target>``), without touching the source. mkdocs.yml loads it by path.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|exc|obj):`(?:([^`<]*?)\s*<[^`>]*>|(~?)([^`]*))`")


def _shown(match: re.Match) -> str:
    text, tilde, target = match.groups()
    if text:
        return f"`{text}`"
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def without_roles(docstring: str) -> str:
    """``docstring`` with every Sphinx role written as plain inline code."""
    return ROLE.sub(_shown, docstring)


class SphinxRolesAsCode(griffe.Extension):
    """Rewrites each object's docstring as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = without_roles(obj.docstring.value)
