"""Serve a trained model over HTTP: ``python -m fusion.serve --model RUN_DIR``.

Examples
--------
python -m fusion.serve --model runs/demo
python -m fusion.serve --model runs/demo --host 127.0.0.1 --port 8000 --threads 2 --max-upload-mb 64
python -m fusion.serve --model runs/demo --host 0.0.0.0 --trusted-hosts fusion.example.org --body-timeout 120

The service binds to 127.0.0.1 unless told otherwise; it has no authentication of its
own, so anything beyond this machine should reach it through a reverse proxy that
terminates TLS and authenticates (see docs/serving.md).
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys

from fusion.cli import fail, positive_int, whole_number
from fusion.schema import DECIMAL
from fusion.serve.limits import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_BODY,
    LOOPBACK_HOSTS,
    MAX_BODY_LIMIT,
    MAX_CONCURRENT,
    MAX_TIMEOUT,
    MIN_CONCURRENT,
)

MB = 2**20
MAX_MB = MAX_BODY_LIMIT / MB
MIN_MB = "0.000001"  # the smallest round number of MB that is at least 1 byte


def main(argv: list[str] | None = None, *, prog: str = "python -m fusion.serve") -> int:
    args = _parser(prog).parse_args(argv)
    try:
        import uvicorn

        from fusion.serve.app import create_app
        from fusion.serve.server import server_config
    except ImportError as err:
        return fail(ImportError(f"the service needs the serve extra ({err}): pip install 'fusion[serve]'"))
    try:
        limits = _limits(args)
    except ValueError as err:
        return fail(err)
    import torch

    from fusion.allocator import tune_allocator

    # One torch thread per request: a film's forward pass is too small to split, and
    # the service runs requests side by side instead (see fusion.serve.app).
    torch.set_num_threads(1)
    tune_allocator()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    header_timeout = limits.pop("header_timeout")
    try:
        app = create_app(args.model, inference_threads=args.threads, **limits)
    except (ValueError, FileNotFoundError) as err:
        return fail(err)
    _announce(args.host, limits["trusted_hosts"])
    config = server_config(app, host=args.host, port=args.port, header_timeout=header_timeout, log_level=args.log_level)
    uvicorn.Server(config).run()
    return 0


def _parser(prog: str = "python -m fusion.serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve a trained model over HTTP: a JSON API (/predict, /explain, /schema, /health) and a page.",
    )
    p.add_argument("--model", required=True, help="run folder written by fusion.train")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=whole_number, default=8000, help="port, 0 to 65535 (default 8000; 0: any free port)")
    p.add_argument(
        "--threads", type=positive_int, default=None, help="requests computed at once (default: one per usable core)"
    )
    p.add_argument(
        "--max-upload-mb",
        default=f"{DEFAULT_MAX_BODY / MB:g}",
        help=f"largest request body in MB, image and record together, from {MIN_MB} (1 byte) to {MAX_MB:g} "
        f"(default {DEFAULT_MAX_BODY / MB:g}); larger ones get 413 unread",
    )
    p.add_argument(
        "--body-timeout",
        default=f"{DEFAULT_BODY_TIMEOUT:g}",
        help=f"seconds a request body may take to arrive whole, up to {MAX_TIMEOUT:g} (default "
        f"{DEFAULT_BODY_TIMEOUT:g}: 64 MB at about 2 MB/s); a slower one gets 408 and what came is dropped",
    )
    p.add_argument(
        "--header-timeout",
        default=f"{DEFAULT_HEADER_TIMEOUT:g}",
        help=f"seconds a request's line and headers may take, up to {MAX_TIMEOUT:g} (default "
        f"{DEFAULT_HEADER_TIMEOUT:g}); a slower one gets 408 and its connection is closed",
    )
    p.add_argument(
        "--max-concurrent",
        default=None,
        help=f"uploads (/predict, /explain) read or computed at once, 1 to {MAX_CONCURRENT} (default: twice "
        f"--threads, at least {MIN_CONCURRENT}); one more gets 503 with Retry-After before its body is read",
    )
    p.add_argument(
        "--trusted-hosts",
        action="append",
        default=[],
        metavar="NAMES",
        help="comma-separated host names or addresses the service answers besides localhost, 127.0.0.1, ::1 and "
        "--host (any port); a request naming another Host gets 400 (a web page reaching the service through "
        "DNS rebinding would). '*' answers any Host: the check is off",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def _limits(args) -> dict:
    """create_app's limits (and the server's header deadline) from the flags, each
    refused with its flag and its accepted range named."""
    from fusion.serve.gate import bound_names, trusted_hosts

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535; got {args.port}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1; got {args.threads}")
    mb = _number(args.max_upload_mb)
    if not (mb * MB >= 1 and mb <= MAX_MB):  # also refuses NaN
        raise ValueError(
            f"--max-upload-mb must be a number of MB from {MIN_MB} (1 byte) to {MAX_MB:g}; "
            f"got {args.max_upload_mb[:60]!r}"
        )
    extra = [name.strip() for value in args.trusted_hosts for name in value.split(",") if name.strip()]
    trusted_hosts(extra, field="--trusted-hosts")  # refused here, naming the flag
    return {
        "max_body_bytes": int(mb * MB),
        "body_timeout": _seconds("--body-timeout", args.body_timeout),
        "header_timeout": _seconds("--header-timeout", args.header_timeout),
        "max_concurrent": _count("--max-concurrent", args.max_concurrent),
        "trusted_hosts": ["*"] if "*" in extra else [*bound_names(args.host), *extra],
    }


def _number(text: str) -> float:
    """An ASCII decimal (not float()'s "1_0", "infinity" or other scripts' digits), or NaN."""
    return float(text) if DECIMAL.fullmatch(text.strip()) else math.nan


def _seconds(flag: str, text: str) -> float:
    value = _number(text)
    if not 0 < value <= MAX_TIMEOUT:  # also refuses NaN
        raise ValueError(f"{flag} must be a number of seconds in (0, {MAX_TIMEOUT:g}]; got {text[:60]!r}")
    return value


def _count(flag: str, text: str | None) -> int | None:
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{1,9}", text.strip()) or not 1 <= int(text) <= MAX_CONCURRENT:
        raise ValueError(f"{flag} must be a whole number from 1 to {MAX_CONCURRENT}; got {text[:60]!r}")
    return int(text)


def _announce(host: str, trusted: list[str]) -> None:
    log = logging.getLogger("fusion.serve")
    if host not in LOOPBACK_HOSTS:
        log.warning(
            "listening on %s, beyond this machine: the service has no authentication of its own; "
            "put it behind a reverse proxy that terminates TLS and authenticates users",
            host,
        )
    if trusted == ["*"]:
        log.warning(
            "--trusted-hosts '*': any Host is answered, so a web page opened where the service can be reached "
            "may reach it through DNS rebinding"
        )
    else:
        names = ", ".join(dict.fromkeys([*LOOPBACK_HOSTS, *trusted]))
        log.info("answering requests for %s (any port); others get 400 (--trusted-hosts adds names)", names)


if __name__ == "__main__":
    sys.exit(main())
