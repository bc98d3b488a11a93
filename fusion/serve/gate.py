"""What a request must pass before the routes see it: a trusted Host, and room.

- **Trusted hosts.** A page on another site can reach a service on this machine
  through DNS rebinding (its own name made to resolve to 127.0.0.1): the browser then
  sends that site's name as ``Host``. The service answers only the names it is given
  (:func:`trusted_hosts`): ``localhost``, ``127.0.0.1`` and ``::1`` always, plus the
  bound address and any others the operator names, with any port; ``"*"`` turns the
  check off. Other hosts get 400 naming the host.
- **Room.** At most ``max_concurrent`` requests that send a body (the form routes)
  are read or computed at once; one more gets 503 with ``Retry-After`` at once, before
  a byte of its body is read, so a crowd of uploads queues no memory.
- **An early answer closes the connection.** A request answered before its body was
  read (413, 503, 408, a refused host) gets ``Connection: close``, so the rest of
  its body is never read either.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable

from fastapi.responses import JSONResponse

from fusion.serve.limits import LOOPBACK_HOSTS

ANY_HOST = "*"
ALL_INTERFACES = ("0.0.0.0", "::", "")
# Methods that carry no form: they cost the service nothing to answer.
BODYLESS = frozenset({"GET", "HEAD", "OPTIONS"})
RETRY_AFTER_S = 1
_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*")


def trusted_hosts(hosts: Iterable[str] | None, *, field: str = "trusted_hosts") -> frozenset[str] | None:
    """The host names a service answers: the loopback names plus ``hosts``, lower
    case, IPv6 addresses without brackets; None when ``hosts`` holds ``"*"`` (any host).

    Raises
    ------
    TypeError
        ``hosts`` is a string (give a list) or holds something else than strings.
    ValueError
        A name that is not a host name or address, or that carries a port (any port
        is accepted) or a wildcard pattern; the message names ``field``.
    """
    if hosts is None:
        hosts = ()
    if isinstance(hosts, (str, bytes)):
        raise TypeError(f"{field} must be a list of host names; got {type(hosts).__name__}")
    names = set(LOOPBACK_HOSTS)
    for host in hosts:
        if not isinstance(host, str):
            raise TypeError(f"{field} must hold host names as strings; got {type(host).__name__}")
        if host == ANY_HOST:
            return None
        name = _normalise(host)
        if name is None:
            raise ValueError(
                f"{field} entry {host[:60]!r} is not a host name or IP address; give names such as "
                f"'xray.example.org', '10.0.0.7' or '::1', without a port (any port is accepted) or a scheme, "
                f"or '{ANY_HOST}' alone to answer any host"
            )
        names.add(name)
    return frozenset(names)


def bound_names(bind: str) -> list[str]:
    """The names a service bound to ``bind`` answers besides the loopback ones: the
    bound address, or this machine's host name for an all-interfaces bind."""
    candidates = [socket.gethostname()] if bind in ALL_INTERFACES else [bind]
    return [name for name in candidates if _normalise(name) is not None]


def _normalise(host: str) -> str | None:
    """``host`` as compared (lower case, no trailing dot, IPv6 unbracketed), or None."""
    text = host.strip().lower()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return str(ipaddress.IPv6Address(text))
        except ValueError:
            return None
    text = text.removesuffix(".")
    return text if _NAME.fullmatch(text) else None


def host_name(header: str) -> str | None:
    """The name in a ``Host`` header (``name``, ``name:port``, ``[v6]`` or
    ``[v6]:port``), normalised as :func:`trusted_hosts` does; None when malformed."""
    if header.startswith("["):
        name, bracket, port = header[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and port[1:].isdigit())):
            return None
        return _normalise(f"[{name}]")
    name, colon, port = header.partition(":")
    if colon and port and not port.isdigit():
        return None
    return _normalise(name) if name else None


class Gate:
    """ASGI layer that checks ``Host`` and keeps count of the requests with a body.

    ``service.in_flight`` is the count (the routes' shared state; read by tests and
    by nothing else).
    """

    def __init__(self, app, *, service, trusted: frozenset[str] | None, max_concurrent: int):
        self.app = app
        self.service = service
        self.trusted = trusted
        self.max_concurrent = max_concurrent

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length", b"0").strip()
        body_ended = b"transfer-encoding" not in headers and length in (b"", b"0")

        async def receive_watched():
            nonlocal body_ended
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_ended = True
            return message

        async def send_closing(message):
            # Answered before the body was read: the rest of it is not wanted.
            if message["type"] == "http.response.start" and not body_ended:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        refusal = self._refusal(headers.get(b"host"), scope["method"])
        if refusal is not None:
            await refusal(scope, receive_watched, send_closing)
            return
        counted = scope["method"] not in BODYLESS
        self.service.in_flight += counted
        try:
            await self.app(scope, receive_watched, send_closing)
        finally:
            self.service.in_flight -= counted

    def _refusal(self, host: bytes | None, method: str) -> JSONResponse | None:
        if self.trusted is not None:
            text = host.decode("latin-1") if host is not None else None
            if text is None or host_name(text) not in self.trusted:
                return _error(400, self._untrusted(text))
        if method not in BODYLESS and self.service.in_flight >= self.max_concurrent:
            n = self.service.in_flight
            return _error(
                503,
                f"the service is busy: {n} request{'s' if n != 1 else ''} being read or computed, its limit "
                f"(--max-concurrent); retry in {RETRY_AFTER_S} s",
                headers={"retry-after": str(RETRY_AFTER_S)},
            )
        return None

    def _untrusted(self, host: str | None) -> str:
        names = ", ".join(sorted(self.trusted))
        if host is None:
            return f"the request has no Host header; this service answers only requests for {names}"
        name = host_name(host)
        hint = f" --trusted-hosts {name}" if name is not None else " --trusted-hosts NAME"
        return (
            f"Host {host[:60]!r} is not a name this service answers ({names}); a page elsewhere may be "
            f"reaching it through DNS rebinding. If it is this service's own name, start it with{hint}"
        )


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message, "field": None, "file": None}, status_code=status, headers=headers)
