"""`make bench` (part 6): a bounded load test of `dlx serve` on loopback.

A digits MLP is trained, served by a real uvicorn (`dlx serve`, signed requests), and 8 client
threads send 2,000 signed POST /v1/predict requests in all, each its own HTTP client: first one
example per request (single), then 16 per request (batched); then the single load again while
another client keeps sending requests of large images just under the pixel limits and a training
job (submitted through /v1/jobs) runs. Reported: requests/s, examples/s, p50/p99 latency, the
error count, and the loaded p99 against the quiet one. Writes benchmarks/results/serve.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import tables  # benchmarks/tables.py: the script's directory is on sys.path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def load(base: str, key_id: str, secret: str, inputs: list, clients: int, requests: int) -> dict:
    import httpx

    from dlx.serve.auth import signed_headers

    body = json.dumps({"inputs": inputs}).encode()
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per_client = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]

    def worker(n: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            for _ in range(n):
                headers = {"Content-Type": "application/json"} | signed_headers(key_id, secret, "POST", "/v1/predict", "", body)
                t0 = time.perf_counter()
                try:
                    ok = http.post("/v1/predict", content=body, headers=headers).status_code == 200
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    errors[0] += not ok

    threads = [threading.Thread(target=worker, args=(n,)) for n in per_client]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    return {"requests": len(latencies), "wall": wall, "rps": len(latencies) / wall, "eps": len(latencies) * len(inputs) / wall,
            "p50": statistics.median(latencies) * 1000, "p99": latencies[int(0.99 * (len(latencies) - 1))] * 1000,
            "errors": errors[0]}


class pressure:
    """While inside: one client sends requests of large images, just under the pixel limits, and a
    training job runs on the server's worker. On exit, what they did."""

    def __init__(self, base: str, key_id: str, secret: str):
        self.base, self.key = base, (key_id, secret)
        self.stop = threading.Event()
        self.codes: dict[int, int] = {}
        self.result: dict = {}

    def _images(self) -> None:
        import io

        import httpx
        from PIL import Image

        from dlx.serve.auth import signed_headers
        from dlx.serve.client import multipart

        import numpy as np

        # 3.6 million pixels each (serve.max_pixels is 4 million) in a small file: a smooth pattern,
        # under serve.max_upload_bytes together, so that every request is decoded and predicted
        ramp = (np.add.outer(np.arange(1900), np.arange(1900)) // 15 % 256).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(ramp).save(buf, "PNG")
        body, kind = multipart([("file", f"{i}.png", buf.getvalue()) for i in range(3)], {})
        with httpx.Client(base_url=self.base, timeout=120) as http:
            while not self.stop.is_set():
                headers = {"Content-Type": kind} | signed_headers(*self.key, "POST", "/v1/predict", "", body)
                code = http.post("/v1/predict", content=body, headers=headers).status_code
                self.codes[code] = self.codes.get(code, 0) + 1

    def __enter__(self):
        import httpx

        from dlx.serve.auth import signed_headers

        payload = json.dumps({"kind": "train", "overrides": ["trainer.epochs=200", "trainer.early_stopping.enabled=false",
                                                            "logger=none"]}).encode()
        headers = {"Content-Type": "application/json"} | signed_headers(*self.key, "POST", "/v1/jobs", "", payload)
        self.job = httpx.post(f"{self.base}/v1/jobs", content=payload, headers=headers, timeout=30).json()["id"]
        self.thread = threading.Thread(target=self._images)
        self.thread.start()
        time.sleep(3.0)  # the job's process is up and training
        return self.result

    def __exit__(self, *exc):
        import httpx

        from dlx.serve.auth import signed_headers

        self.stop.set()
        self.thread.join(timeout=300)
        path = f"/v1/jobs/{self.job}"
        status = httpx.get(f"{self.base}{path}", headers=signed_headers(*self.key, "GET", path, "", b""), timeout=30).json()
        self.result |= {"large_requests": sum(self.codes.values()),
                        "large_codes": ", ".join(f"{c} x {n}" for c, n in sorted(self.codes.items())),
                        "job": f"status {status['status']} when the load ended"}
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="quiet / loaded rounds, alternating")
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    from test_serve import add_user, start_server, trained

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = trained(work / "run", "trainer.epochs=5")
        state = work / "state"
        key_id, secret = add_user(state, "bench")
        # the clients share one key: its request rate is not what is measured here
        server, base = start_server(run, state, "serve.predict_per_s=1000000", "serve.max_jobs_per_key=100")
        try:
            images = load_digits().images.tolist()
            load(base, key_id, secret, images[:1], 2, 50)  # warm-up
            rows = {
                "single (1 example per request)": load(base, key_id, secret, images[:1], args.clients, args.requests),
                f"batched ({args.batch} examples per request)": load(base, key_id, secret, images[: args.batch], args.clients, args.requests),
            }
            # quiet and loaded rounds alternate: the machine's own load moves between them
            quiet, rounds = [rows["single (1 example per request)"]], []
            for i in range(args.rounds):
                if i:
                    quiet.append(load(base, key_id, secret, images[:1], args.clients, args.requests))
                with pressure(base, key_id, secret) as side:
                    rounds.append(load(base, key_id, secret, images[:1], args.clients, args.requests) | {"side": side})
            ratios = [b["p99"] / a["p99"] for a, b in zip(quiet, rounds)]
            middle = sorted(range(len(rounds)), key=lambda i: ratios[i])[len(rounds) // 2]
            rows["single, under load (large images + a training job)"] = rounds[middle] | rounds[middle]["side"]
        finally:
            server.terminate()
            server.wait(timeout=30)

    import fastapi
    import uvicorn

    lines = [
        "# dlx serve: load test on loopback",
        "",
        f"`make bench` on {platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}; FastAPI {fastapi.__version__}, "
        f"uvicorn {uvicorn.__version__} (one process), a digits MLP (`dlx train trainer.epochs=5`), HMAC-signed requests.",
        "",
        f"{args.clients} client threads (each its own HTTP connection) send {args.requests:,} POST /v1/predict requests in all, "
        "JSON inputs of raw 8x8 digits; the clients run on the same 2 CPUs as the server, so these are lower bounds.",
        "",
        "| requests | requests/s | examples/s | p50 latency (ms) | p99 latency (ms) | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['rps']:.0f} | {r['eps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['errors']} |")
    single, batched, loaded = rows.values()
    ratio = sorted(ratios)[len(ratios) // 2]
    lines += ["", f"Batching {args.batch} examples per request gives {batched['eps'] / single['eps']:.1f}x the examples/s of "
              "one example per request.", "",
              f"Under load: meanwhile one more client sent {loaded['large_requests']} requests of 3 images of 1,900x1,900 "
              f"pixels each (just under serve.max_pixels, decoded and predicted; HTTP status x count: {loaded['large_codes']}) "
              f"and a training job ran ({loaded['job']}); the row above is the round with the median ratio. p99 of the small "
              f"requests under load / on the quiet server, per round (rounds alternate quiet and loaded): "
              f"{', '.join(f'{r:.2f}x' for r in ratios)}; median {ratio:.2f}x "
              f"(target < 3x: {'met' if ratio < 3 and all(r['errors'] == 0 for r in rounds) else 'missed'})."]
    tables.write("serve.md", lines)


if __name__ == "__main__":
    main()
