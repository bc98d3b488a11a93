"""Load test of the HTTP service: many /predict requests from concurrent clients.

Starts ``python -m fusion.serve`` for a model on a free port of 127.0.0.1 (the only
address it ever sends to), then sends ``--requests`` well-formed requests (a real PNG
film of ``--film-size`` px and its clinical record, as multipart forms) from
``--clients`` concurrent clients with httpx, with ``--malformed`` bad requests mixed in
(truncated film, out-of-range value, unknown field, non-JSON record, no input at all,
body over the size limit). Bounded in count and in time (``--max-seconds``: no new
request after it), it stops the server itself and reports:

- latency p50 / p95 / p99 of the well-formed requests and requests per second (all
  requests, over the wall time of the run);
- errors: well-formed requests that did not get 200, bad ones that did not get their
  4xx (each kind has its expected status);
- the server's resident memory (RSS) after the first 100 requests and at the end: a
  leak would make it grow with the number of requests.

Exit status 0 when there is no error and RSS grew by at most 10 %.

    python experiments/load_test.py --model RUN_DIR [--requests 1000] [--clients 8] [--malformed 100] [--out FILE.json]

Uses only the public interface: the command line and HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from fusion import synthetic

WARMUP = 100  # RSS is first read after this many requests: the model and caches are warm by then
MAX_UPLOAD_MB = 4.0  # the server's limit in this test; the oversized request is just above it


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_requests(n_good: int, n_bad: int, films: int, film_size: int, seed: int) -> list[dict]:
    """The requests in the order they are sent: well-formed ones with bad ones spread
    among them. Each is ``{"kind", "expect", "files"}``."""
    table, images = synthetic.make_cohort(films, seed=seed, image_size=film_size)
    records = [
        {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
        for row in table[list(synthetic.FEATURES)].to_dict("records")
    ]
    pngs = [_png(img) for img in images]
    good = [
        {
            "kind": "good",
            "expect": 200,
            "files": {
                "image": (f"film{i % films}.png", pngs[i % films], "image/png"),
                "record": (None, json.dumps(records[i % films])),
            },
        }
        for i in range(n_good)
    ]
    oversized = os.urandom(int(MAX_UPLOAD_MB * 2**20) + 4096)
    bad_kinds = [
        ("truncated film", 422, {"image": ("cut.png", pngs[0][: len(pngs[0]) // 3], "image/png")}),
        ("out of range", 422, {"record": (None, json.dumps({**records[0], "spo2": 140}))}),
        ("unknown field", 422, {"record": (None, json.dumps({"height": 180}))}),
        ("not JSON", 422, {"record": (None, "{age: 61")}),
        ("no input", 422, {"record": (None, "{}")}),
        ("over the size limit", 413, {"image": ("big.png", oversized, "image/png")}),
    ]
    bad = [
        {"kind": kind, "expect": status, "files": files}
        for kind, status, files in (bad_kinds[i % len(bad_kinds)] for i in range(n_bad))
    ]
    rng = random.Random(seed)
    # The first WARMUP requests are well-formed (the RSS baseline is read after them);
    # the bad ones are spread at random through the rest.
    head, tail = good[:WARMUP], good[WARMUP:] + bad
    rng.shuffle(tail)
    return head + tail


async def _run(url: str, requests: list[dict], clients: int, deadline: float, on_warm) -> list[dict]:
    results: list[dict] = []
    queue: asyncio.Queue = asyncio.Queue()
    for i, request in enumerate(requests):
        queue.put_nowait((i, request))
    done = 0
    warm_read = False

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal done, warm_read
        while time.monotonic() < deadline:
            try:
                i, request = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            start = time.perf_counter()
            try:
                response = await http.post(f"{url}/predict", files=request["files"])
                status, body = response.status_code, response.json()
            except (httpx.HTTPError, ValueError) as err:
                status, body = None, {"error": f"{type(err).__name__}: {err}"}
            elapsed = time.perf_counter() - start
            ok = status == request["expect"]
            if ok and status == 200:
                ok = abs(sum(body["probabilities"].values()) - 1) < 1e-6 and body["label"] in body["probabilities"]
            results.append({"i": i, "kind": request["kind"], "status": status, "ok": ok, "s": elapsed, "body": body})
            done += 1
            if done >= WARMUP and not warm_read:
                warm_read = True
                on_warm()

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return results


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="run folder written by fusion.train")
    p.add_argument("--requests", type=int, default=1000, help="well-formed /predict requests (default 1000)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--malformed", type=int, default=100, help="bad requests mixed in (default 100)")
    p.add_argument("--film-size", type=int, default=1024, help="side of the PNG films in px (default 1024)")
    p.add_argument("--films", type=int, default=16, help="distinct films (and records) sent in turn (default 16)")
    p.add_argument("--threads", type=int, default=None, help="the server's --threads (default: its own)")
    p.add_argument("--max-seconds", type=float, default=600.0, help="no new request after this (default 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args(argv)
    if args.requests < WARMUP:
        p.error(f"--requests must be at least {WARMUP} (RSS is first read after {WARMUP} requests)")

    requests = make_requests(args.requests, args.malformed, args.films, args.film_size, args.seed)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "fusion.serve", "--model", args.model, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning", "--max-upload-mb", str(MAX_UPLOAD_MB)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    # Every client's request admitted: the test measures latency, not the 503s of a full service.
    command += ["--max-concurrent", str(max(8, args.clients))]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = time.monotonic()
        while True:
            if server.poll() is not None:
                print(server.stdout.read(), file=sys.stderr)
                raise SystemExit(f"the server exited with status {server.returncode}")
            try:
                health = httpx.get(f"{url}/health", timeout=2.0).json()
                break
            except httpx.HTTPError:
                if time.monotonic() - started > 120:
                    raise SystemExit("the server did not answer /health within 120 s") from None
                time.sleep(0.2)
        startup_s = time.monotonic() - started
        rss = {}
        server_cpu, client_cpu = _cpu_s(server.pid), time.process_time()
        begin = time.perf_counter()
        results = asyncio.run(
            _run(
                url,
                requests,
                args.clients,
                time.monotonic() + args.max_seconds,
                lambda: rss.setdefault("warm", _rss_mb(server.pid)),
            )
        )
        wall = time.perf_counter() - begin
        server_cpu, client_cpu = _cpu_s(server.pid) - server_cpu, time.process_time() - client_cpu
        rss["end"] = _rss_mb(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()

    good = [r for r in results if r["kind"] == "good"]
    bad = [r for r in results if r["kind"] != "good"]
    latency = [r["s"] * 1000 for r in good]
    by_kind: dict[str, dict] = {}
    for r in bad:
        entry = by_kind.setdefault(r["kind"], {"n": 0, "as_expected": 0, "statuses": {}})
        entry["n"] += 1
        entry["as_expected"] += int(r["ok"])
        entry["statuses"][str(r["status"])] = entry["statuses"].get(str(r["status"]), 0) + 1
    errors = [r for r in results if not r["ok"]]
    growth = rss["end"] / rss["warm"] - 1 if "warm" in rss else float("nan")
    report = {
        "model": health,
        "requests_sent": len(results),
        "requests_planned": len(requests),
        "good": len(good),
        "malformed": len(bad),
        "clients": args.clients,
        "film_px": args.film_size,
        "film_png_kb_mean": round(
            float(np.mean([len(r["files"]["image"][1]) for r in requests if r["kind"] == "good"])) / 1024, 1
        ),
        "server_threads": args.threads or "default (one per core)",
        "errors": len(errors),
        "error_examples": [{k: r[k] for k in ("kind", "status", "body")} for r in errors[:5]],
        "malformed_by_kind": by_kind,
        "latency_ms": {
            "p50": round(_percentile(latency, 50), 1),
            "p95": round(_percentile(latency, 95), 1),
            "p99": round(_percentile(latency, 99), 1),
            "max": round(max(latency), 1) if latency else None,
        },
        "requests_per_s": round(len(results) / wall, 1),
        "wall_s": round(wall, 1),
        "server_startup_s": round(startup_s, 1),
        # Where the CPU went: the server's work per request, and the clients' (encoding
        # the forms, reading the answers), which share the machine with it here.
        "server_cpu_ms_per_request": round(1000 * server_cpu / max(1, len(results)), 2),
        "client_cpu_ms_per_request": round(1000 * client_cpu / max(1, len(results)), 2),
        "rss_mb": {"after_100": round(rss.get("warm", float("nan")), 1), "end": round(rss["end"], 1)},
        "rss_growth": round(growth, 4),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
    }
    print(json.dumps({k: v for k, v in report.items() if k != "error_examples" or v}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    complete = len(results) == len(requests)
    if not complete:
        print(f"stopped by --max-seconds after {len(results)} of {len(requests)} requests", file=sys.stderr)
    return 0 if complete and not errors and growth <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
