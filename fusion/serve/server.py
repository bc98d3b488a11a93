"""The uvicorn server ``python -m fusion.serve`` runs, with the deadlines uvicorn lacks.

uvicorn times out an idle keep-alive connection (``timeout_keep_alive``) but not one
that is still sending its request line and headers: a client that sends half a header
and waits, or one byte a second, holds its connection for ever (and the app never
sees it, so no ASGI layer can help). :class:`HeaderDeadline`, uvicorn's h11 protocol
with one timer more, closes such a connection ``header_timeout`` seconds after it
opened or after the first byte of its next request, answering 408 when part of a
request had come; dripping bytes do not push the deadline back. (Header memory is
bounded by h11 already: 16 KB.) The body's deadline is the app's
(:func:`fusion.serve.app.create_app`'s ``body_timeout``).

uvicorn's own ``limit_concurrency`` counts open connections, idle ones included, and
answers 503 without ``Retry-After``: it is set high, as a backstop on file
descriptors, and the app's ``max_concurrent`` is the limit clients normally meet.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from fusion.serve.limits import DEFAULT_HEADER_TIMEOUT, check_seconds

logger = logging.getLogger(__name__)

KEEP_ALIVE_S = 5
# Open connections (idle ones included) before uvicorn answers 503 itself: above the
# app's own limit (at most MAX_CONCURRENT requests with a body), below a usual 1,024
# file descriptors.
MAX_CONNECTIONS = 1000
_TIMEOUT_BODY = b"the request line and headers did not arrive in time\n"
_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, with a deadline on each request's line and headers."""

    def __init__(self, *args, header_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial = False  # part of a request's head has come

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._partial = True
            self._arm()  # waiting for the rest of a request's head
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._partial = False

    def _expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._partial:
            client = f"client {self.client[0]}:{self.client[1]}" if self.client else "a client"
            logger.info("%s sent no complete request head in %g s; answered 408", client, self.header_timeout)
            self.transport.write(_TIMEOUT)
        self.transport.close()


def server_config(
    app,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    log_level: str | None = "info",
    **options,
) -> uvicorn.Config:
    """The uvicorn configuration of ``python -m fusion.serve`` for ``app``.

    Parameters
    ----------
    app : ASGI application
        From :func:`fusion.serve.app.create_app`.
    host, port : str, int
        Where to listen.
    header_timeout : float
        Seconds a request's line and headers may take, in (0, 3600]; default 10.
    log_level : str or None
        uvicorn's log level.
    **options
        More :class:`uvicorn.Config` options (a test passes ``log_config=None``).

    Raises
    ------
    ValueError, TypeError
        ``header_timeout`` out of range or not a number.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=functools.partial(HeaderDeadline, header_timeout=check_seconds("header_timeout", header_timeout)),
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=MAX_CONNECTIONS,
        log_level=log_level,
        server_header=False,
        # Behind a reverse proxy on this machine, client addresses come from its
        # X-Forwarded-For; other hosts' headers are not trusted.
        forwarded_allow_ips="127.0.0.1",
        **options,
    )
