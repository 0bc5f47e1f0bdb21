"""Hostile connections against `recsys serve` alone: silent sockets and stalled partial requests.

Starts `recsys serve` (its open-file limit set to --nofile), opens --silent connections that send nothing and
--partial ones that send half a request line, from --processes helper processes, then measures how long a
fresh client's GET /health takes, how much the server logged, and whether every hostile socket was closed
by the server within the request timeout. Prints a table and writes benchmarks/results/connections.json.

    python benchmarks/connections.py                      # 20,000 silent + 200 partial, the server at 20,000 fds
    python benchmarks/connections.py --silent 1200 --partial 100 --nofile 1024   # what the test runs
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "connections.json"

# Opens sockets to the port, sends half a request on some, says "ready", waits for a line on stdin, then
# prints how many of its sockets the server had accepted and how many of those it has closed since (a
# connect the kernel's queue never took is still pending and counts for neither).
FLOODER = r"""
import resource, select, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
port, silent, partial = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
socks = []
deadline = time.monotonic() + 60
for i in range(silent + partial):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    socks.append(s)
    if i % 500 == 499:
        time.sleep(0.05)  # let the server accept as we go
for s in socks[silent:]:
    poll = select.poll(); poll.register(s, select.POLLOUT); poll.poll(5000)
    try:
        s.send(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Stalled: ")
    except OSError:
        pass
print("ready", flush=True)
sys.stdin.readline()
connected = set()
for i, s in enumerate(socks):
    try:
        s.getpeername()
        connected.add(i)
    except OSError:
        pass
closed = set()
def check():
    for i in connected - closed:
        try:
            if socks[i].recv(65536) == b"":
                closed.add(i)
        except BlockingIOError:
            pass
        except OSError:
            closed.add(i)
check()
# A handshake whose last ACK arrived while the server's queue was full (a SYN cookie was used) looks
# connected here, but the server holds nothing for it until the socket sends: send one byte on every socket
# still open, so the server sees each of them, and poll until it has closed them all.
for i in connected - closed:
    try:
        socks[i].send(b"G")
    except OSError:
        pass
limit = time.monotonic() + float(sys.argv[4])
while True:
    check()
    if closed == connected or time.monotonic() > limit:
        break
    time.sleep(0.5)
connected, closed = len(connected), len(closed)
print(connected, closed, flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health_seconds(port: int, timeout: float = 10.0) -> float:
    """Seconds a fresh client waits for GET /health (inf when it gets no 200)."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return float("inf")
    return time.perf_counter() - started if data.startswith(b"HTTP/1.1 200") else float("inf")


def flood_check(
    index: Path,
    silent: int,
    partial: int,
    nofile: int,
    processes: int = 1,
    request_timeout: float = 2.0,
    log: Path | None = None,
) -> dict[str, float | int]:
    """Run the scenario against a fresh `recsys serve` of ``index``; returns the figures."""
    port = free_port()
    log = log or Path(tempfile.mkstemp(suffix=".log")[1])
    env = {**os.environ, "RECSYS_HTTP__REQUEST_TIMEOUT": str(request_timeout), "HF_HUB_OFFLINE": "1"}

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    command = [sys.executable, "-m", "recsys.cli", "serve", "--index", str(index), "--port", str(port)]
    with open(log, "wb") as out:
        server = subprocess.Popen([*command, "--no-access-log"], env=env, stderr=out, stdout=out, preexec_fn=limit)
    flooders: list[subprocess.Popen[str]] = []
    try:
        for _ in range(300):
            if health_seconds(port, 1.0) < float("inf"):
                break
            time.sleep(0.1)
        log_before = log.stat().st_size
        started = time.perf_counter()
        for i in range(processes):
            share = silent // processes + (1 if i < silent % processes else 0)
            more = partial // processes + (1 if i < partial % processes else 0)
            flooders.append(
                subprocess.Popen(
                    [sys.executable, "-c", FLOODER, str(port), str(share), str(more), str(request_timeout + 30)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for flooder in flooders:
            assert flooder.stdout is not None and flooder.stdout.readline().strip() == "ready"
        opened = time.perf_counter() - started
        waits = [health_seconds(port) for _ in range(5)]
        time.sleep(request_timeout + 1.0)
        connected = closed = 0
        for flooder in flooders:
            out, _ = flooder.communicate("check\n", timeout=120)
            counts = [int(x) for x in out.split()] or [0, 0]
            connected, closed = connected + counts[0], closed + counts[1]
        after = health_seconds(port)
        return {
            "silent": silent,
            "partial": partial,
            "server_nofile": nofile,
            "seconds_to_open": round(opened, 2),
            "health_max_seconds": round(max(waits), 4),
            "health_after_seconds": round(after, 4),
            "hostile_connected": connected,
            "hostile_closed_by_server": closed,
            "log_growth_bytes": log.stat().st_size - log_before,
            "server_alive": int(server.poll() is None),
        }
    finally:
        for flooder in flooders:
            flooder.kill()
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--silent", type=int, default=20_000)
    parser.add_argument("--partial", type=int, default=200)
    parser.add_argument("--nofile", type=int, default=resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    parser.add_argument("--processes", type=int, default=2, help="helper processes opening the sockets")
    parser.add_argument("--request-timeout", type=float, default=2.0)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from recsys.archive.indexer import Indexer
    from recsys.config import Settings
    from tests.conftest import KeywordEmbedder, art

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "index"
        Indexer(root, Settings(), KeywordEmbedder()).add_articles(
            [art(f"a{i}", f"storm coast flood {i}", f"storm homes {i}") for i in range(50)]
        )
        figures = flood_check(root, args.silent, args.partial, args.nofile, args.processes, args.request_timeout)
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
