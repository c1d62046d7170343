"""Load test of a running nrt service: concurrent edit requests over loopback.

    python serve/load.py                                       # 200 edits, 16 at a time, first clip
    python serve/load.py --requests 50 --concurrency 4 --clip beep --steps 10 --token "$NRT_API_TOKEN"

Bounded in count and in time: at most --requests requests, none started after --duration
seconds, each given --timeout seconds. It talks to 127.0.0.1 (or localhost) only. Prints
throughput, latency percentiles of the edits that succeeded, errors and 503s (the service's
answer when its queues are full); exits 1 when any request failed otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_REQUESTS = 100_000


@dataclass
class Outcome:
    status: int | None  # None: no HTTP answer (timeout, connection refused or reset)
    seconds: float
    error: str | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="serve/load.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the service, on loopback")
    p.add_argument("--clip", default=None, help="clip id to edit (default: the first GET /v1/clips lists)")
    p.add_argument("--requests", type=int, default=200, help=f"edit requests in all (at most {MAX_REQUESTS})")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    p.add_argument("--duration", type=float, default=600.0, help="start no request after this many seconds")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds one request may take")
    p.add_argument("--steps", type=int, default=None, help="diffusion steps of each edit (default: the clip's best)")
    p.add_argument("--seed", type=int, default=None, help="one seed for every edit (default: request i uses seed i)")
    p.add_argument("--token", default=os.environ.get("NRT_API_TOKEN"), help="bearer token ($NRT_API_TOKEN)")
    return p


def check_args(args: argparse.Namespace) -> tuple[str, int]:
    parts = urlsplit(args.url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        raise ValueError(f"--url must be http:// on loopback ({', '.join(LOOPBACK)}), got {args.url!r}")
    if not 1 <= args.requests <= MAX_REQUESTS:
        raise ValueError(f"--requests must lie in 1-{MAX_REQUESTS}, got {args.requests}")
    if not 1 <= args.concurrency <= 1024:
        raise ValueError(f"--concurrency must lie in 1-1024, got {args.concurrency}")
    if not (args.duration > 0 and args.timeout > 0):
        raise ValueError("--duration and --timeout must be > 0")
    return parts.hostname, parts.port or 80


class Client:
    """One keep-alive connection per thread."""

    def __init__(self, host: str, port: int, timeout: float, token: str | None) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.local = threading.local()

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except Exception:
            conn.close()
            self.local.conn = None
            raise


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def run(args: argparse.Namespace) -> dict:
    host, port = check_args(args)
    client = Client(host, port, args.timeout, args.token)
    clip = args.clip
    if clip is None:
        status, body = client.request("GET", "/v1/clips")
        if status != 200:
            raise RuntimeError(f"GET /v1/clips answered {status}: {body[:200]!r}")
        clips = json.loads(body)["clips"]
        if not clips:
            raise RuntimeError("the registry holds no clip to edit")
        clip = clips[0]["clip_id"]
    path = f"/v1/clips/{quote(clip, safe='')}/edits"

    lock = threading.Lock()
    issued = 0
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    deadline = started + args.duration

    def worker() -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= args.requests or time.perf_counter() > deadline:
                    return
                index = issued
                issued += 1
            body = {"seed": args.seed if args.seed is not None else index}
            if args.steps is not None:
                body["steps"] = args.steps
            t0 = time.perf_counter()
            try:
                status, data = client.request("POST", path, body)
                error = None if status in (200, 503) else data[:200].decode(errors="replace")
                outcome = Outcome(status, time.perf_counter() - t0, error)
            except Exception as exc:
                outcome = Outcome(None, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
            with lock:
                outcomes.append(outcome)

    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for _ in range(args.concurrency):
            pool.submit(worker)
    elapsed = time.perf_counter() - started

    ok = [o.seconds for o in outcomes if o.status == 200]
    errors = [o for o in outcomes if o.status not in (200, 503)]
    return {
        "clip": clip,
        "requests": len(outcomes),
        "concurrency": args.concurrency,
        "seconds": elapsed,
        "ok": len(ok),
        "rejected_503": sum(o.status == 503 for o in outcomes),
        "errors": len(errors),
        "throughput": len(ok) / elapsed if elapsed > 0 else float("nan"),
        "p50": percentile(ok, 50),
        "p95": percentile(ok, 95),
        "max": max(ok, default=float("nan")),
        "first_errors": sorted({f"{o.status}: {o.error}" for o in errors})[:5],
    }


def report(result: dict) -> str:
    lines = [
        f"clip: {result['clip']}",
        f"requests: {result['requests']} at concurrency {result['concurrency']} in {result['seconds']:.1f} s",
        f"ok: {result['ok']}",
        f"503s: {result['rejected_503']}",
        f"errors: {result['errors']}",
        f"throughput: {result['throughput']:.2f} edits/s",
        f"latency p50: {result['p50']:.3f} s",
        f"latency p95: {result['p95']:.3f} s",
        f"latency max: {result['max']:.3f} s",
    ]
    lines += [f"  error {e}" for e in result["first_errors"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"serve/load.py: error: {exc}", file=sys.stderr)
        return 2
    print(report(result), flush=True)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
