"""Several serving processes on index replicas that share one PostgreSQL events store.

One source index (BBC, the packaged model), two replicas made with `recsys index pull`, two `recsys serve`
processes (one per replica) with `--events postgresql://...`, and a load client in a third process
(keep-alive connections, Related / Ranking / Recommendation / page requests). In one run:

1. **Throughput**: the same client load against one process, then spread over both, alternated for
   `--rounds` rounds; the ratio of req/s (two processes vs one) is the figure.
2. **Agreement**: views posted to process A only; both processes' `/ranking` are polled until they
   are identical; the time it took is compared with `[popularity] refresh_seconds`.
3. **Pull and swap under load**: `recsys index add` on the source, then `recsys index pull` into both
   replicas while both serve; every request's status is counted.
4. **PostgreSQL outage**: the database is stopped under load, then started again: list requests must keep
   answering, event posts must be refused with 503 (never accepted and lost), and both must recover.

The database is a throwaway cluster (scripts/postgres.sh) unless RECSYS_BENCH_POSTGRES_URL names one.

    python benchmarks/multi_host.py          # prints the tables, writes results/multi_host.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _common import bbc_index, save, shared, table

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-write-key"
REFRESH_SECONDS = 2.0
SERVE = [sys.executable, "-m", "recsys.cli", "serve", "--no-access-log"]

CLIENT = r"""
import json, random, sys, threading, time
from urllib.parse import quote
import httpx
bases, seconds, threads = json.loads(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
ids, events, key = [quote(i, safe="") for i in json.loads(sys.argv[4])], sys.argv[5] == "1", sys.argv[6]
results, lock = [], threading.Lock()
deadline = time.monotonic() + seconds
def worker(n):
    rng = random.Random(n)
    base = bases[n % len(bases)]
    with httpx.Client(base_url=base, timeout=30, headers={"X-Recsys-Key": key}) as client:
        while time.monotonic() < deadline:
            a, b = rng.choice(ids), rng.choice(ids)
            kinds = ["related", "ranking", "recommend", "page"] + (["events"] if events else [])
            kind = rng.choice(kinds)
            path = {"related": f"/related/{a}?k=10", "ranking": "/ranking?k=8",
                    "recommend": f"/recommend?history={a},{b}&k=8", "page": f"/page/{a}?history={b}",
                    "events": "/events"}[kind]
            started, wall = time.perf_counter(), time.time()
            try:
                if kind == "events":
                    event = {"article_id": a.replace("%2F", "/"), "type": "view", "user_id": f"load{n}-{rng.random()}"}
                    status = client.post(path, json={"events": [event]}).status_code
                else:
                    status = client.get(path).status_code
            except Exception as exc:
                status = repr(exc)[:80]
            with lock:
                results.append((kind, n % len(bases), time.perf_counter() - started, status, wall))
ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
t0 = time.perf_counter()
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps({"elapsed": time.perf_counter() - t0, "results": results}))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def recsys(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recsys.cli", *args], env=env, capture_output=True, text=True)


def start_client(bases: list[str], seconds: float, threads: int, ids: list[str], events: bool) -> subprocess.Popen:
    args = [json.dumps(bases), str(seconds), str(threads), json.dumps(ids), "1" if events else "0", KEY]
    return subprocess.Popen([sys.executable, "-c", CLIENT, *args], stdout=subprocess.PIPE, text=True)


def finish(client: subprocess.Popen) -> dict:
    out, _ = client.communicate(timeout=600)
    return json.loads(out)


def wait_up(base: str) -> None:
    for _ in range(300):
        try:
            httpx.get(f"{base}/health", timeout=2).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{base} did not start")


def ranking(base: str) -> list[str]:
    return [h["id"] for h in httpx.get(f"{base}/ranking?k=10", timeout=10).json()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each throughput phase.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    from recsys.ingest.articles import read_articles
    from recsys.service import Recommender

    tmp = Path(tempfile.mkdtemp(prefix="recsys-multi-"))
    tmp.chmod(0o755)
    pg_dir = tmp / "pg"
    own_pg = not os.environ.get("RECSYS_BENCH_POSTGRES_URL")
    if own_pg:
        started = subprocess.run(
            ["bash", str(REPO / "scripts/postgres.sh"), "start", str(pg_dir), "55434"], capture_output=True, text=True
        )
        if started.returncode:
            raise SystemExit(f"cannot start PostgreSQL: {started.stderr.strip()}")
        url = started.stdout.strip()
    else:
        url = os.environ["RECSYS_BENCH_POSTGRES_URL"]
    servers: list[subprocess.Popen] = []
    try:
        source, replicas = tmp / "source", [tmp / "replica-a", tmp / "replica-b"]
        shutil.copytree(bbc_index(), source)
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "RECSYS_EVENTS__URL": url,
            "RECSYS_HTTP__WRITE_KEY": KEY,
            "RECSYS_POPULARITY__REFRESH_SECONDS": str(REFRESH_SECONDS),
            "RECSYS_EVENTS__RETRIES": "1",
            "RECSYS_EVENTS__CONNECT_TIMEOUT": "1",
        }
        for replica in replicas:
            pulled = recsys("index", "pull", str(source), "--index", str(replica), env=env)
            assert pulled.returncode == 0, pulled.stderr
        with Recommender.open(source) as rec:
            ids = [i for _, i, _ in rec.view.store.labels("category")][:500]
        bases = []
        for replica in replicas:
            port = free_port()
            servers.append(
                subprocess.Popen(
                    [*SERVE, "--index", str(replica), "--port", str(port), "--events", url],
                    env=env,
                    stderr=subprocess.DEVNULL,
                )
            )
            bases.append(f"http://127.0.0.1:{port}")
        for base in bases:
            wait_up(base)

        # 1. throughput: one process vs two, alternated
        rates: dict[str, list[float]] = {"one process": [], "two processes": []}
        errors = 0
        for _ in range(args.rounds):
            for label, targets in (("one process", bases[:1]), ("two processes", bases)):
                data = finish(start_client(targets, args.seconds, args.threads, ids, events=False))
                rates[label].append(len(data["results"]) / data["elapsed"])
                errors += sum(1 for r in data["results"] if r[3] != 200)
        one, two = float(np.median(rates["one process"])), float(np.median(rates["two processes"]))

        # 2. agreement: views posted to A only
        picked = ids[100:103]
        events = [{"article_id": a, "type": "view", "user_id": f"agree-{a}-{u}"} for a in picked for u in range(40)]
        posted = time.monotonic()
        httpx.post(f"{bases[0]}/events", json={"events": events}, headers={"X-Recsys-Key": KEY}).raise_for_status()
        agreed_after = None
        while time.monotonic() - posted < 30:
            a, b = ranking(bases[0]), ranking(bases[1])
            if a == b and set(picked) <= set(a[:3]):
                agreed_after = time.monotonic() - posted
                break
            time.sleep(0.1)

        # 3. a new version pulled and swapped into both replicas under load (events posted to both)
        new = tmp / "new.jsonl"
        mind = read_articles([shared("mind-sample", "news.tsv")]).articles[:50]
        new.write_text("".join(json.dumps({"id": a.id, "title": a.title, "abstract": a.abstract}) + "\n" for a in mind))
        before = [httpx.get(f"{b}/health").json()["index_version"] for b in bases]
        client = start_client(bases, 40.0, args.threads, ids, events=True)
        added = recsys("index", "add", str(new), "--index", str(source), "--no-progress", env=env)
        pulls = [recsys("index", "pull", str(source), "--index", str(r), env=env).returncode for r in replicas]
        time.sleep(2)
        after = [httpx.get(f"{b}/health").json()["index_version"] for b in bases]
        swap = finish(client)["results"]
        swap_errors = [r for r in swap if r[3] != 200]

        # 4. PostgreSQL stopped under load, then started again
        outage: dict[str, object] = {"skipped": "an external database is not stopped by the benchmark"}
        if own_pg:
            client = start_client(bases, 12.0, args.threads, ids, events=True)
            time.sleep(3)
            down_at = time.time()
            subprocess.run(["bash", str(REPO / "scripts/postgres.sh"), "stop", str(pg_dir)], check=True)
            time.sleep(4)
            subprocess.run(
                ["bash", str(REPO / "scripts/postgres.sh"), "start", str(pg_dir), "55434"],
                check=True,
                capture_output=True,
            )
            up_at = time.time()
            data = finish(client)["results"]
            reads = [r for r in data if r[0] != "events"]
            writes = [r for r in data if r[0] == "events"]
            accepted_again = [r[4] for r in writes if r[4] >= up_at and r[3] == 200]
            recovered = (min(accepted_again) - up_at) if accepted_again else None
            outage = {
                "down_seconds": round(up_at - down_at, 2),
                "list_requests": len(reads),
                "list_errors": sum(1 for r in reads if r[3] != 200),
                "event_posts": len(writes),
                "event_posts_refused_503": sum(1 for r in writes if r[3] == 503),
                "event_posts_other_errors": sum(1 for r in writes if r[3] not in (200, 503)),
                "event_posts_accepted_while_down": sum(
                    1 for r in writes if down_at + 0.5 < r[4] < up_at and r[3] == 200
                ),
                "seconds_to_accept_events_again": recovered,
            }
        # Every event post answered 200 is in the database, once: none accepted and lost
        import psycopg

        accepted_posts = sum(1 for r in swap if r[0] == "events" and r[3] == 200)
        if own_pg:
            accepted_posts += sum(1 for r in data if r[0] == "events" and r[3] == 200)
        with psycopg.connect(url) as conn:
            stored_load_events = conn.execute("SELECT count(*) FROM events WHERE user_id LIKE 'load%'").fetchone()[0]
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        if own_pg:
            subprocess.run(["bash", str(REPO / "scripts/postgres.sh"), "stop", str(pg_dir)], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [
        {"setup": "one recsys serve process", "req_per_s": one, "rounds": rates["one process"]},
        {"setup": "two processes, two replicas, one PostgreSQL", "req_per_s": two, "rounds": rates["two processes"]},
    ]
    summary = {
        "threads": args.threads,
        "seconds_per_phase": args.seconds,
        "throughput_ratio": two / one,
        "throughput_errors": errors,
        "refresh_seconds": REFRESH_SECONDS,
        "rankings_identical_after_s": agreed_after,
        "swap": {
            "index_add_exit": added.returncode,
            "pull_exits": pulls,
            "versions_before": before,
            "versions_after": after,
            "requests": len(swap),
            "errors": len(swap_errors),
            "error_examples": swap_errors[:5],
        },
        "outage": outage,
        "event_posts_answered_200": accepted_posts,
        "load_events_stored": stored_load_events,
    }
    print(table(rows, ["setup", "req_per_s"]))
    print(f"\ntwo processes / one: {summary['throughput_ratio']:.2f}x ({errors} errors)")
    print(f"/ranking identical on both after {agreed_after} s (refresh_seconds {REFRESH_SECONDS})")
    print(f"pull + swap under load: {len(swap)} requests, {len(swap_errors)} errors; versions {before} -> {after}")
    print(f"PostgreSQL outage: {json.dumps(outage)}")
    print(f"event posts answered 200: {accepted_posts}; load events in PostgreSQL: {stored_load_events}")
    print(f"\nwrote {save('multi_host', {**summary, 'rows': rows})}")


if __name__ == "__main__":
    main()
