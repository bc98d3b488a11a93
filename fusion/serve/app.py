"""The HTTP service: one model, loaded once, answering over FastAPI.

:func:`create_app` builds the application for one model folder (verified against its
manifest, as :meth:`FusionClassifier.load` always does); nothing lives at module level,
so a process (or a test) can hold several. Routes:

- ``GET /``: the page (``static/index.html``: plain HTML and JavaScript, no build step);
- ``GET /health``: model name, classes, modalities, backend, fusion version;
- ``GET /schema``: the record's fields (type, the input widget, unit, range,
  categories, as each feature's kind describes it) and the image limits, from the
  model's own schema, for the page's form or any client;
- ``POST /predict``: a multipart form with an optional file ``image`` and an optional
  field ``record`` (a JSON object as text) -> label, probabilities, modalities used;
- ``POST /explain``: the same plus modality shares, the top record drivers and the
  film with its heatmap (a PNG as a ``data:`` URL).

Bad input never reaches a 500: the library's ``ValueError`` message is answered as it
is, with status 422 and the field (or record feature) and file the error carries; a body over
the size limit gets 413 before it is read, one that has not arrived by its deadline
408, a form of another type 415, a malformed one 400; a Host this service does not
answer 400, and a request over the concurrency limit 503 with ``Retry-After`` (see
:mod:`fusion.serve.gate`). A client that leaves mid-upload is one INFO line in the
log, not an error. Anything unexpected is logged with its trace and answered with a
500 whose body holds only an id to find it in the log: no path, no trace.

Uploads are held in memory only (see :mod:`fusion.serve.forms`) and dropped with the
request; nothing is stored.

Worker model: one process holds the model; the event loop reads requests and the
model runs in a bounded pool of threads (``inference_threads``, default one per core),
one torch thread each. A single film's forward pass is a few milliseconds of small
operations, which intra-op threads only slow down; torch and Pillow release the GIL
while they compute, so threads serve concurrent requests on all cores with one copy of
the model, where worker processes would each load their own.
"""

from __future__ import annotations

import base64
import logging
import math
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from fusion.classifier import FusionClassifier
from fusion.data.cache import available_cores
from fusion.data.images import FORMATS_TEXT, MAX_PIXELS, MIN_SIDE
from fusion.errors import ImageError, InputError
from fusion.explain import DEFAULT_STEPS
from fusion.schema import MAX_RECORD_BYTES, RecordTooLarge, parse_record_json
from fusion.serve.forms import ClientGone, RequestError, parse_form, read_body
from fusion.serve.gate import Gate
from fusion.serve.gate import trusted_hosts as trusted_hosts_set
from fusion.serve.heatmap import heatmap_png
from fusion.serve.limits import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_BODY,
    MAX_BODY_LIMIT,
    MAX_CONCURRENT,
    MIN_CONCURRENT,
    check_count,
    check_seconds,
)
from fusion.version import __version__

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
TOP_DRIVERS = 8
FORM_FIELDS = {
    "image": f"an X-ray file: {FORMATS_TEXT}",
    "record": 'a JSON object keyed by feature name, e.g. {"age": 61}',
}
IMAGE_FORMATS = f"{FORMATS_TEXT}; 8 or 16 bit; gray, RGB or RGBA"
# The page and its script come only from this service and hold no third-party code;
# the heatmap arrives as a data: URL and the chosen film is previewed from a blob: URL.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
]


class _Guard:
    """Outermost ASGI layer: adds the security headers to every response and turns
    any exception that escaped the routes into a 500 that names no path and shows no
    trace (the trace goes to the log, under the id the client is given). A client gone
    mid-upload (:class:`ClientGone`, logged where noticed) gets nothing."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except ClientGone:
            return  # logged where it was noticed; there is no one to answer
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            logger.exception("unexpected error %s on %s %s", error_id, scope.get("method"), scope.get("path"))
            if started:
                raise
            response = JSONResponse(
                {"detail": f"internal error (id {error_id}); the service's log has the details", "field": None},
                status_code=500,
            )
            await response(scope, receive, send_with_headers)


def _finite(value: Any) -> Any:
    """JSON has no NaN: a missing record value is ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _Service:
    """What the routes share: the model, its limits and the pool its work runs in."""

    def __init__(self, clf: FusionClassifier, name: str, *, limits: dict, threads: int, explain_steps: int):
        self.clf = clf
        self.name = name
        self.limits = limits
        self.max_body = limits["max_body_bytes"]
        self.threads = threads
        self.explain_steps = explain_steps
        # Requests with a body being read or computed now (kept by fusion.serve.gate).
        self.in_flight = 0
        self.schema = clf.schema_ if "tabular" in clf.modalities_ else None
        self._features = {f.name for f in self.schema.features} if self.schema is not None else set()
        self._limiter = None

    # -------------------------------------------------------------- metadata
    def health(self) -> dict:
        return {
            "status": "ok",
            "model": self.name,
            "classes": list(self.clf.classes_),
            "modalities": list(self.clf.modalities_),
            "backend": self.clf.backend_.name,
            "image_size": self.clf.image_size_,
            "image_channels": self.clf.image_channels_,
            "version": __version__,
        }

    def describe_schema(self) -> dict:
        features = [f.form_field() for f in self.schema.features] if self.schema is not None else []
        return {
            "name": self.schema.name if self.schema is not None else None,
            "description": self.schema.description if self.schema is not None else "",
            "classes": list(self.clf.classes_),
            "modalities": list(self.clf.modalities_),
            "features": features,
            "image": {
                "used": "image" in self.clf.modalities_,
                "formats": IMAGE_FORMATS,
                "max_bytes": self.max_body,
                "max_pixels": MAX_PIXELS,
                "min_side": MIN_SIDE,
                "model_size": self.clf.image_size_,
                "channels": self.clf.image_channels_,
            },
            "limits": {**self.limits, "max_record_bytes": MAX_RECORD_BYTES},
        }

    # ----------------------------------------------------------------- input
    async def inputs(self, request: Request) -> tuple[dict | None, bytes | None, str | None]:
        """The record (a dict, or None) and the image (bytes, or None) of a request,
        with the image's file name; nothing decoded yet."""
        body = await read_body(request, self.max_body, self.limits["body_timeout_s"])
        form = parse_form(body, request.headers.get("content-type"), fields=FORM_FIELDS)
        record = None
        if "record" in form:
            record = self._record(form["record"].data)
        image = form.get("image")
        if image is not None and image.filename is None:
            raise RequestError(422, "image must be sent as a file (a form file field), not as text", field="image")
        return record, (image.data if image is not None else None), (image.filename if image is not None else None)

    def _record(self, data: bytes) -> dict | None:
        """The record field, parsed as ``fusion.predict --record`` parses it (size, depth
        and repeated keys checked by the one parser of records given as text)."""
        try:
            return parse_record_json(data)
        except RecordTooLarge as err:
            raise RequestError(413, str(err), field="record") from None
        except ValueError as err:
            raise RequestError(422, str(err), field="record") from None

    def _refuse(self, err: ValueError, record: dict | None, filename: str | None) -> RequestError:
        """The library's ``ValueError`` as a 422 naming what it is about, as the error
        says (:mod:`fusion.errors`): the image (with the uploaded file's name), a record
        feature, the record as a whole, or nothing given."""
        message = str(err)
        if isinstance(err, ImageError):
            return RequestError(422, message, field="image", file=filename)
        field = err.field if isinstance(err, InputError) else None
        if record is not None and self.schema is not None and (field in self._features or field == "record"):
            return RequestError(422, message, field=field)
        return RequestError(422, message, field=None)

    # ------------------------------------------------------------------ work
    async def run(self, fn, *args):
        """``fn(*args)`` in the bounded inference pool (made on first use, inside the
        event loop, which anyio's limiter needs)."""
        import anyio

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def predict(self, record: dict | None, image: bytes | None, filename: str | None) -> dict:
        try:
            prediction = self.clf.predict(record, image)
        except ValueError as err:
            raise self._refuse(err, record, filename) from None
        return prediction.to_dict()

    def explain(self, record: dict | None, image: bytes | None, filename: str | None) -> dict:
        out = self.predict(record, image, filename)
        try:
            explanation = self.clf.explain(record, image, n_steps=self.explain_steps)
        except ValueError as err:
            raise self._refuse(err, record, filename) from None
        units = explanation.units or {}
        values = explanation.record or {}
        drivers = [
            {"feature": name, "effect": effect, "value": _finite(values.get(name)), "unit": units.get(name)}
            for name, effect in explanation.top_features(TOP_DRIVERS)
        ]
        heatmap = None
        if explanation.image is not None:
            png = heatmap_png(explanation.image, explanation.image_attribution)
            heatmap = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        out.update(
            target=explanation.target,
            probability=explanation.probability,
            modality_share=explanation.modality_share,
            drivers=drivers,
            heatmap=heatmap,
            method=explanation.method,
        )
        return out


def create_app(
    model_dir: str | Path,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    inference_threads: int | None = None,
    explain_steps: int = DEFAULT_STEPS,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    max_concurrent: int | None = None,
    trusted_hosts: list[str] | None = None,
) -> FastAPI:
    """The service for the model in ``model_dir``, loaded once, here.

    Parameters
    ----------
    model_dir : str or Path
        A run folder written by ``fusion.train`` (verified against its manifest).
    max_body_bytes : int
        Largest request body accepted (image and record together), 1 byte to 1 GB;
        larger ones get 413 before they are read. Default 64 MB.
    inference_threads : int, optional
        Requests computed at once; default one per core this process may use.
    explain_steps : int
        Integrated Gradients steps of ``/explain``.
    body_timeout : float
        Seconds a request body may take to arrive whole, in (0, 3600]; a slower one
        gets 408 and what was read is dropped. Default 30.
    max_concurrent : int, optional
        Requests with a body (``/predict``, ``/explain``) read or computed at once;
        one more gets 503 with ``Retry-After`` before its body is read; 1 to 500.
        Default twice the inference threads, at least 8.
    trusted_hosts : list of str, optional
        Host names or addresses this service answers besides ``localhost``,
        ``127.0.0.1`` and ``::1`` (any port); ``["*"]`` answers any ``Host``. A request
        for another host gets 400 (a page elsewhere reaching a local service through
        DNS rebinding sends its own name).

    Returns
    -------
    fastapi.FastAPI

    Raises
    ------
    FileNotFoundError, ValueError
        As :meth:`FusionClassifier.load`; a limit out of its range; a trusted host
        that is not a host name.
    TypeError
        A limit of the wrong type; ``trusted_hosts`` given as one string.
    """
    threads = inference_threads if inference_threads is not None else available_cores()
    check_count("inference_threads", threads)
    limits = {
        "max_body_bytes": check_count("max_body_bytes", max_body_bytes, high=MAX_BODY_LIMIT),
        "body_timeout_s": check_seconds("body_timeout", body_timeout),
        "max_concurrent": check_count(
            "max_concurrent",
            max_concurrent if max_concurrent is not None else min(MAX_CONCURRENT, max(MIN_CONCURRENT, 2 * threads)),
            high=MAX_CONCURRENT,
        ),
    }
    trusted = trusted_hosts_set(trusted_hosts)
    folder = Path(model_dir)
    clf = FusionClassifier.load(folder)
    service = _Service(clf, folder.resolve().name, limits=limits, threads=threads, explain_steps=explain_steps)
    # No /docs or /redoc: their pages load scripts from a CDN, and nothing here
    # downloads; the OpenAPI description stays at /openapi.json.
    app = FastAPI(title="fusion", version=__version__, docs_url=None, redoc_url=None)
    app.state.service = service

    @app.exception_handler(RequestError)
    async def _refused(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    async def health() -> dict:
        """Model name, classes, modalities, backend and fusion version."""
        return service.health()

    @app.get("/schema")
    async def schema() -> dict:
        """The record's fields (type, unit, range, categories) and the image limits."""
        return service.describe_schema()

    @app.post("/predict", openapi_extra=_form_spec())
    async def predict(request: Request) -> JSONResponse:
        """Label, probabilities and the modalities used, for one patient."""
        record, image, filename = await service.inputs(request)
        return JSONResponse(await service.run(service.predict, record, image, filename))

    @app.post("/explain", openapi_extra=_form_spec())
    async def explain(request: Request) -> JSONResponse:
        """The prediction, each modality's share, the top record drivers and the
        film with its heatmap (a PNG ``data:`` URL)."""
        record, image, filename = await service.inputs(request)
        return JSONResponse(await service.run(service.explain, record, image, filename))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(Gate, service=service, trusted=trusted, max_concurrent=limits["max_concurrent"])
    app.add_middleware(_Guard)  # added last: the outermost layer, around the gate's answers too
    return app


def _form_spec() -> dict:
    """The form in the OpenAPI description (the route reads it itself, in memory)."""
    return {
        "requestBody": {
            "required": False,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "image": {"type": "string", "format": "binary", "description": FORM_FIELDS["image"]},
                            "record": {"type": "string", "description": FORM_FIELDS["record"]},
                        },
                    }
                }
            },
        }
    }
