"""Serve a trained model over HTTP: ``python -m fusion.serve --model RUN_DIR``.

Examples
--------
python -m fusion.serve --model runs/demo
python -m fusion.serve --model runs/demo --host 127.0.0.1 --port 8000 --threads 2 --max-upload-mb 64

The service binds to 127.0.0.1 unless told otherwise; it has no authentication of its
own, so anything beyond this machine should reach it through a reverse proxy that
terminates TLS and authenticates (see the README's "Serving" section).
"""

from __future__ import annotations

import argparse
import logging
import sys

from fusion.cli import fail

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m fusion.serve",
        description="Serve a trained model over HTTP: a JSON API (/predict, /explain, /schema, /health) and a page.",
    )
    p.add_argument("--model", required=True, help="run folder written by fusion.train")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--threads", type=int, default=None, help="requests computed at once (default: one per usable core)")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=64.0,
        help="largest request body in MB, image and record together (default 64); larger ones get 413 unread",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        return fail(ValueError(f"--port must be between 0 and 65535; got {args.port}"))
    if args.threads is not None and args.threads < 1:
        return fail(ValueError(f"--threads must be at least 1; got {args.threads}"))
    if not args.max_upload_mb > 0:
        return fail(ValueError(f"--max-upload-mb must be positive; got {args.max_upload_mb}"))
    try:
        import uvicorn

        from fusion.serve.app import create_app
    except ImportError as err:
        return fail(ImportError(f"the service needs the serve extra ({err}): pip install 'fusion[serve]'"))
    import torch

    from fusion.allocator import tune_allocator

    # One torch thread per request: a film's forward pass is too small to split, and
    # the service runs requests side by side instead (see fusion.serve.app).
    torch.set_num_threads(1)
    tune_allocator()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(args.model, max_body_bytes=int(args.max_upload_mb * 2**20), inference_threads=args.threads)
    except (ValueError, FileNotFoundError) as err:
        return fail(err)
    if args.host not in LOOPBACK:
        logging.getLogger("fusion.serve").warning(
            "listening on %s, beyond this machine: the service has no authentication of its own; "
            "put it behind a reverse proxy that terminates TLS and authenticates users",
            args.host,
        )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        server_header=False,
        # Behind a reverse proxy on this machine, client addresses come from its
        # X-Forwarded-For; other hosts' headers are not trusted.
        forwarded_allow_ips="127.0.0.1",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
