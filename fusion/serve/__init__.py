"""The model behind an HTTP endpoint, and a page for people: ``python -m fusion.serve``.

An optional part of fusion (``pip install "fusion[serve]"``: FastAPI, uvicorn,
python-multipart); ``import fusion`` never imports it. :func:`create_app` (in
:mod:`fusion.serve.app`) builds the application for one model folder.

Example
-------
>>> from fusion.serve import create_app  # doctest: +SKIP
>>> app = create_app("runs/demo")  # doctest: +SKIP
"""

from __future__ import annotations


def create_app(*args, **kwargs):
    """See :func:`fusion.serve.app.create_app` (imported here when first called, so
    that ``python -m fusion.serve --help`` and a missing extra are answered fast)."""
    from fusion.serve.app import create_app as build

    return build(*args, **kwargs)


__all__ = ["create_app"]
