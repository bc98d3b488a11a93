"""Reading a request's multipart form into memory, within a size limit.

Uploaded films are patient data: the service never writes them to disk. Starlette's own
form parser spools every file over 1 MB to a temporary file, so this module parses the
multipart body itself with ``python-multipart`` (the parser Starlette uses) into
``bytes`` held in memory. The body's size is checked first against ``Content-Length``
(a request announcing too much is refused before a byte of it is read) and then while
it is read (a chunked request cannot slip past the announcement), so nothing over the
limit is read, let alone decoded. The whole body must also arrive within a deadline,
so a client that stalls (or sends a byte a second) holds its memory for no longer.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import anyio
from starlette.requests import ClientDisconnect, Request

logger = logging.getLogger(__name__)

# At most this many parts: the form has two fields, and a body of thousands of tiny
# parts would only cost the parser time.
MAX_PARTS = 16
# RFC 2046 section 5.1.1: 1 to 70 of these characters, the last not a space.
BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")


class RequestError(Exception):
    """A request the service refuses, answered with ``status`` and a JSON body
    ``{"detail": message, "field": field, "file": file}``.

    ``field`` names the form field at fault (``"image"``, ``"record"``) or, for a record
    value, the record's feature (``"spo2"``), so the page can show the message beside
    it; ``file`` is the uploaded file's name when one is at fault.
    """

    def __init__(self, status: int, message: str, *, field: str | None = None, file: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.file = file

    def body(self) -> dict:
        return {"detail": self.message, "field": self.field, "file": self.file}


class ClientGone(Exception):
    """The client closed its connection before its body arrived: there is no one to
    answer (logged once, at INFO, where it is raised)."""


@dataclass
class Part:
    """One form field: its bytes and, for a file, the name the client gave it."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit``
    bytes (from its ``Content-Length`` before reading, or while reading), and with 408
    when the whole of it has not arrived ``timeout`` seconds after the first read.

    What was read is dropped with the refusal. A client that disconnects meanwhile
    raises :class:`ClientGone`; that and the 408 are logged in one INFO line each (a
    slow or vanished client is not an error of the service).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, f"Content-Length {declared[:20]!r} is not a number") from None
        if size > limit:
            raise RequestError(413, _too_large(size, limit))
    chunks, received = [], 0
    client = _client(request)
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise RequestError(413, _too_large(received, limit, at_least=True))
                chunks.append(chunk)
    except TimeoutError:
        chunks.clear()
        logger.info("%s sent %d bytes of its body in %g s and no more; answered 408", client, received, timeout)
        raise RequestError(
            408,
            f"the request body did not arrive within {timeout:g} s ({received} bytes of "
            f"{declared or 'an unknown number'} came); this service's --body-timeout sets the deadline",
        ) from None
    except ClientDisconnect:
        chunks.clear()
        logger.info("%s disconnected while sending the body (%d bytes of %s came)", client, received, declared or "?")
        raise ClientGone from None
    return b"".join(chunks)


def _client(request: Request) -> str:
    address = request.client
    return f"client {address.host}:{address.port}" if address is not None else "a client"


def _boundary(value: bytes | None) -> bytes:
    """The form's boundary, refused with 400 unless RFC 2046 allows it (1 to 70
    letters, digits or ``'()+_,-./:=?`` and inner spaces): python-multipart itself
    refuses a boundary over 256 bytes from its constructor."""
    if not value:
        raise RequestError(
            400,
            "the Content-Type multipart/form-data has no boundary; give one such as "
            "'multipart/form-data; boundary=----fusion7f3a' (1 to 70 characters), as HTTP clients do",
        )
    text = value.decode("latin-1")
    if BOUNDARY.fullmatch(text) is None:
        shown = f"{text[:60]!r}{'...' if len(text) > 60 else ''}"
        raise RequestError(
            400,
            f"the multipart boundary {shown} ({len(text)} characters) is not one RFC 2046 allows: "
            "1 to 70 characters of letters, digits, ' ( ) + _ , - . / : = ? and spaces (not last)",
        )
    return value


def _too_large(size: int, limit: int, *, at_least: bool = False) -> str:
    amount = f"{'over ' if at_least else ''}{size / 2**20:.1f} MB"
    return (
        f"the request body is {amount}, over this service's limit of {limit / 2**20:.1f} MB "
        "(image and record together; the server's --max-upload-mb sets it)"
    )


def parse_form(body: bytes, content_type: str | None, *, fields: dict[str, str]) -> dict[str, Part]:
    """The fields of a ``multipart/form-data`` body, in memory.

    Parameters
    ----------
    body : bytes
    content_type : str or None
        The request's ``Content-Type`` header (it carries the boundary).
    fields : dict of str -> str
        The accepted field names and what each holds (named in errors).

    Returns
    -------
    dict of str -> Part
        Each given field once; a file field sent empty and without a name (what a
        browser sends for "no file chosen") is left out, as if not given.

    Raises
    ------
    RequestError
        415 for another content type; 400 for a boundary RFC 2046 does not allow (or
        none), a malformed body, an unknown field or a field given twice.
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

    accepted = ", ".join(f"{name!r} ({what})" for name, what in fields.items())
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        raise RequestError(
            415,
            f"send a multipart/form-data form (got {(content_type or 'no Content-Type')[:60]!r}) with the "
            f"optional fields {accepted}",
        )
    # Parameter names are case-insensitive (RFC 9110 section 5.6.6).
    boundary = _boundary(next((value for key, value in options.items() if key.lower() == b"boundary"), None))
    parts: list[Part] = []
    ended: list[bool] = []
    current: dict = {}
    header: list[bytes] = [b"", b""]

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise RequestError(400, f"the form has more than {MAX_PARTS} parts; it takes {accepted}")
        current.clear()
        current.update(headers={}, data=[])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        current["headers"][header[0].decode("latin-1").lower()] = header[1]
        header[0], header[1] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"].append(data[start:end])

    def on_part_end() -> None:
        _, disposition = parse_options_header(current["headers"].get("content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        ctype = current["headers"].get("content-type")
        parts.append(
            Part(
                name=name,
                data=b"".join(current["data"]),
                filename=filename.decode("utf-8", "replace") if filename is not None else None,
                content_type=ctype.decode("latin-1") if ctype is not None else None,
            )
        )

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_end": lambda: ended.append(True),
    }
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except RequestError:
        raise
    except Exception as err:  # python-multipart raises several kinds for malformed bodies
        raise RequestError(
            400,
            f"malformed multipart/form-data body ({type(err).__name__}: {str(err)[:60]}); a form is parts "
            "separated by the boundary its Content-Type names, each with a few short headers "
            "(Content-Disposition, Content-Type), ending with the closing boundary",
        ) from None
    if not ended:
        raise RequestError(400, "the multipart/form-data body ends before its closing boundary (a truncated upload?)")
    out: dict[str, Part] = {}
    for part in parts:
        if part.name not in fields:
            raise RequestError(400, f"unknown form field {part.name!r}; the form takes {accepted}", field=part.name)
        if part.name in out:
            raise RequestError(400, f"form field {part.name!r} is given twice; give it once", field=part.name)
        if part.filename == "" and not part.data:
            continue  # a file input left empty
        out[part.name] = part
    return out
