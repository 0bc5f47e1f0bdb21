"""Load on the HTTP service from a second process while `recsys index add` swaps the index version.

The server (`recsys serve`, one worker) runs on the BBC index on loopback; a client process runs
`--threads` keep-alive connections for `--seconds` (at most `--max-requests`), mixing Related,
Ranking, Recommendation, page and event requests. A few seconds in, `recsys index add` indexes 50
new articles (MIND-sample news) and the service switches to the new version while under load.
Baseline in the same run: GET /health, the cheapest endpoint, so the ratio is each call's cost.

    python benchmarks/service_load.py          # prints the table, writes results/service_load.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import bbc_index, save, shared, table

CLIENT = r"""
import json, random, sys, threading, time
from urllib.parse import quote
import httpx
base, seconds, threads = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
max_requests, ids = int(sys.argv[4]), [quote(i, safe="") for i in json.loads(sys.argv[5])]
results, versions, lock = [], set(), threading.Lock()
deadline = time.monotonic() + seconds
def worker(n):
    rng = random.Random(n)
    with httpx.Client(base_url=base, timeout=30) as client:
        while time.monotonic() < deadline:
            with lock:
                if len(results) >= max_requests:
                    return
            a, b = rng.choice(ids), rng.choice(ids)
            kind = rng.choice(["health", "related", "ranking", "recommend", "page", "events"])
            path = {"health": "/health", "related": f"/related/{a}?k=10", "ranking": "/ranking?k=8",
                    "recommend": f"/recommend?history={a},{b}&k=8", "page": f"/page/{a}?history={b}",
                    "events": "/events"}[kind]
            started = time.perf_counter()
            try:
                if kind == "events":
                    event = {"article_id": a.replace("%2F", "/"), "type": "view", "user_id": f"load{n}"}
                    r = client.post(path, json={"events": [event]})
                else:
                    r = client.get(path)
                status = r.status_code
                if kind == "health" and status == 200:
                    with lock:
                        versions.add(r.json()["index_version"])
            except Exception as exc:
                status = repr(exc)[:80]
            with lock:
                results.append((kind, time.perf_counter() - started, status))
ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
t0 = time.perf_counter()
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps({"elapsed": time.perf_counter() - t0, "results": results, "versions": sorted(versions)}))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--max-requests", type=int, default=50_000)
    args = parser.parse_args()

    from recsys.ingest.articles import read_articles

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        subprocess.run(["cp", "-r", str(bbc_index()), str(root)], check=True)
        new = Path(tmp) / "new.jsonl"
        mind = read_articles([shared("mind-sample", "news.tsv")]).articles[:50]
        new.write_text("".join(json.dumps({"id": a.id, "title": a.title, "abstract": a.abstract}) + "\n" for a in mind))
        from recsys import Recommender

        ids = [i for _, i, _ in Recommender.open(root).view.store.labels("category")][:500]
        port = free_port()
        # One load client stands for many readers: lift the per-client event rate limit for this run.
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "RECSYS_HTTP__EVENTS_PER_MINUTE": "1000000"}
        server = subprocess.Popen(
            [sys.executable, "-m", "recsys.cli", "serve", "--index", str(root), "--port", str(port), "--no-access-log"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            import httpx

            for _ in range(200):
                try:
                    before = httpx.get(f"{base}/health").json()["index_version"]
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            client = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    CLIENT,
                    base,
                    str(args.seconds),
                    str(args.threads),
                    str(args.max_requests),
                    json.dumps(ids),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(min(5.0, args.seconds / 4))
            swap_started = time.perf_counter()
            added = subprocess.run(
                [sys.executable, "-m", "recsys.cli", "index", "add", str(new), "--index", str(root), "--no-progress"],
                env=env,
                capture_output=True,
                text=True,
            )
            swap_seconds = time.perf_counter() - swap_started
            out, _ = client.communicate(timeout=args.seconds + 120)
            after = httpx.get(f"{base}/health").json()
        finally:
            server.terminate()
            server.wait(timeout=30)
    data = json.loads(out)
    results = data["results"]
    errors = [r for r in results if r[2] != 200]
    rows = []
    health = np.median([r[1] for r in results if r[0] == "health"]) or 1e-9
    for kind in ("health", "related", "ranking", "recommend", "page", "events"):
        times = np.array([r[1] for r in results if r[0] == kind]) * 1000
        rows.append(
            {
                "request": kind + (" (baseline)" if kind == "health" else ""),
                "count": int(times.size),
                "p50_ms": float(np.percentile(times, 50)),
                "p99_ms": float(np.percentile(times, 99)),
                "ratio_p50": float(np.median(times) / (health * 1000)),
            }
        )
    all_times = np.array([r[1] for r in results]) * 1000
    summary = {
        "requests": len(results),
        "seconds": data["elapsed"],
        "requests_per_s": len(results) / data["elapsed"],
        "p50_ms": float(np.percentile(all_times, 50)),
        "p99_ms": float(np.percentile(all_times, 99)),
        "errors": len(errors),
        "error_examples": errors[:5],
        "threads": args.threads,
        "index_add_exit": added.returncode,
        "index_add_seconds": swap_seconds,
        "version_before": before,
        "version_after": after["index_version"],
        "versions_seen_by_client": data["versions"],
        "articles_after": after["articles"],
    }
    print(
        f"{summary['requests']:,} requests in {summary['seconds']:.1f} s from {args.threads} threads "
        "in a second process: "
        f"{summary['requests_per_s']:,.0f} req/s, p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms, "
        f"errors {summary['errors']}\n`recsys index add` of 50 articles during the load: exit {added.returncode}, "
        f"{swap_seconds:.1f} s; version {before} -> {after['index_version']} "
        f"(client saw {len(data['versions'])} versions), {after['articles']:,} articles\n"
    )
    print(table(rows, ["request", "count", "p50_ms", "p99_ms", "ratio_p50"]))
    path = save("service_load", {**summary, "rows": rows})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
