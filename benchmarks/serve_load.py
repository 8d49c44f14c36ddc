"""Load on a real `mlflow models serve` of HemaBench's image pyfunc: N concurrent clients for a fixed time.

Each client is a thread with its own keep-alive session posting one-image base64 PNG requests (a few fixed
images, every request form) back to back; every answer must be a 200 with one prediction. Reported: requests,
errors, latency p50/p99/max, throughput, and the resident memory (RSS) of the server's whole process group
(the mlflow CLI and its uvicorn worker) after a warm-up and at the end. Without --model-uri it serves an
untrained tiny CNN (32 px, 3 classes) from a temporary sqlite store.

    .venv/bin/python benchmarks/serve_load.py [--clients 8] [--seconds 120]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.serve_fuzz import b64, envelope, image_file, tiny_server  # noqa: E402


def group_rss_mb(port: int) -> float:
    """Resident memory of the process group serving `port` (the `mlflow models serve -p PORT` process leads it)."""
    leader = None
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in argv and str(port).encode() in argv:
                leader = int(proc.name)
    if leader is None:
        raise RuntimeError(f"no `mlflow models serve` process for port {port}")
    pgid, total_kb = os.getpgid(leader), 0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.getpgid(int(proc.name)) != pgid:
                    continue
                status = (proc / "status").read_text()
            except OSError:
                continue
            total_kb += int(next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), 0))
    return total_kb / 1024


def bodies(seed: int = 0, count: int = 12) -> list[bytes]:
    """Valid one-image requests: random PNG/JPEG/BMP/TIFF images of random sizes, in random request forms."""
    import json

    rng = np.random.default_rng(seed)
    return [json.dumps(envelope(rng, [b64(image_file(rng))])).encode() for _ in range(count)]


def load(url: str, clients: int, seconds: float) -> dict[str, object]:
    """`clients` threads posting for `seconds`; latencies of every answer, and every non-200 or wrong answer."""
    payloads, stop = bodies(), time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []

    def client(index: int) -> None:
        with requests.Session() as session:
            i = index
            while time.monotonic() < stop:
                body = payloads[i % len(payloads)]
                started = time.perf_counter()
                try:
                    response = session.post(f"{url}/invocations", data=body, timeout=60,
                                            headers={"Content-Type": "application/json"})
                    ok = response.status_code == 200 and len(response.json()["predictions"]) == 1
                    if not ok:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                except (requests.RequestException, ValueError, KeyError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                latencies[index].append(time.perf_counter() - started)
                i += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    all_ms = np.concatenate([np.asarray(each) for each in latencies]) * 1000
    return {"requests": len(all_ms), "errors": errors, "seconds": elapsed, "p50": float(np.percentile(all_ms, 50)),
            "p99": float(np.percentile(all_ms, 99)), "max": float(all_ms.max()), "rps": len(all_ms) / elapsed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--warmup", type=float, default=10, help="seconds of the same load before measuring RSS")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp, tiny_server(Path(tmp)) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = group_rss_mb(port)
        load(url, args.clients, args.warmup)
        before = group_rss_mb(port)
        result = load(url, args.clients, args.seconds)
        after = group_rss_mb(port)
    errors = result["errors"]
    from bench import machine
    print(f"{datetime.date.today()}, {machine.describe()}; 1-min load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after (shared machines read high)")
    print(f"command: python benchmarks/serve_load.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"{args.clients} clients x {result['seconds']:.0f} s: {result['requests']} requests, {len(errors)} errors, "
          f"{result['rps']:.1f} requests/s; latency p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms, "
          f"max {result['max']:.1f} ms")
    print(f"server process group RSS: {idle:.0f} MB idle, {before:.0f} MB after {args.warmup:.0f} s warm-up, "
          f"{after:.0f} MB at the end ({after - before:+.0f} MB, {100 * (after - before) / before:+.1f} %)")
    for error in errors[:5]:
        print(f"error: {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
