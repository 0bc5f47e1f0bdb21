"""The loop closed: a simulated site drives `recsys serve` and the engine measures and learns from itself.

Readers (a hidden preference per BBC section, a keenness, and a position bias: a place p is looked at with
probability p ** -0.8) read article pages; each page view asks GET /page, the simulator decides which headline
(if any) each box's reader clicks from that hidden model (not the ranker's features), posts the click with its
list_id and position, and the clicked article is the next page. Then:

  (a) `recsys report online --json` counts the same lists and clicks per box as the simulator did;
  (b) `recsys train` with no behaviors file fits a model from the served-list log alone;
  (c) an A/B and an interleaved experiment between the defaults and a variant whose Recommendation is not
      personal (no candidate is close enough to the reader's reads, so it falls back to Ranking): both name the
      good one in the Recommendation box, and interleaving gets there with fewer lists;
  (d) page latency with the served-list log on and off, interleaved in one run.

    python benchmarks/closed_loop.py [--views 3000]     # prints tables, writes results/closed_loop.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from _common import REPO, bbc_index, save, table

SECTIONS = ("business", "entertainment", "politics", "sport", "tech")
WRITE_KEY = "closed-loop-benchmark"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Served:
    """`recsys serve` on a copy of an index, with a config file, until closed."""

    def __init__(self, index: Path, folder: Path, config: str) -> None:
        self.root = folder / "index"
        shutil.copytree(index, self.root, ignore=shutil.ignore_patterns("events.sqlite*"))
        self.config = folder / "recsys.toml"
        self.config.write_text(f'[http]\nwrite_key = "{WRITE_KEY}"\n' + config)
        self.port = free_port()
        env = {**os.environ, "RECSYS_CONFIG": str(self.config)}
        command = [sys.executable, "-m", "recsys.cli", "serve", "--index", str(self.root), "--port", str(self.port)]
        self.process = subprocess.Popen([*command, "--no-access-log"], env=env, cwd=REPO, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        # the site's own back end posts the clicks, with the write key (no per-client rate limit)
        self.client = httpx.Client(base_url=self.url, timeout=30, headers={"X-Recsys-Key": WRITE_KEY})
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise SystemExit("recsys serve did not start")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "RECSYS_CONFIG": str(self.config)}
        return subprocess.run(
            [sys.executable, "-m", "recsys.cli", *args, "--index", str(self.root)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(timeout=30)


class Readers:
    """The hidden model: who likes which section, how keen they are, where they look."""

    def __init__(self, sections: dict[str, str], n: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.sections = sections
        self.ids = sorted(sections)
        self.likes = {f"reader-{r}": self._taste() for r in range(n)}
        self.keen = {r: 0.5 + self.rng.random() for r in self.likes}
        self.appeal = {a: self.rng.gauss(0, 0.5) for a in self.ids}  # some stories draw more than others

    def _taste(self) -> dict[str, float]:
        favourite = self.rng.choice(SECTIONS)
        return {s: (1.5 if s == favourite else -1.5) for s in SECTIONS}

    def click(self, reader: str, hits: list[dict]) -> dict | None:
        """The headline this reader clicks in one box (at most one), or None."""
        for hit in hits:
            section = self.sections.get(hit["id"], "")
            liking = self.likes[reader].get(section, -1.5) + self.appeal.get(hit["id"], 0.0) - 2.0
            looked = hit["position"] ** -0.8
            if self.rng.random() < looked * self.keen[reader] / (1 + math.exp(-liking)):
                return hit
        return None


def drive(
    served: Served, readers: Readers, views: int, timings: list[float] | None = None, logged: bool = True
) -> dict:
    """Page views by random readers, each following what they click; returns the simulator's own counts."""
    counts = {box: {"lists": 0, "clicks": 0} for box in ("related", "ranking", "recommendation")}
    rng = readers.rng
    where = {r: rng.choice(readers.ids) for r in readers.likes}
    for _ in range(views):
        reader = rng.choice(list(readers.likes))
        article = where[reader]
        started = time.perf_counter()
        page = served.client.get(
            f"/page/{article}", params={"user_id": reader, "k_related": 5, "k_ranking": 5, "k_recommend": 5}
        ).json()
        if timings is not None:
            timings.append(time.perf_counter() - started)
        served.client.post("/events", json={"events": [{"type": "view", "article_id": article, "user_id": reader}]})
        clicks = []
        for box in counts:
            hits = page[box]
            if not hits:
                continue
            counts[box]["lists"] += 1
            hit = readers.click(reader, hits)
            if hit is not None:
                counts[box]["clicks"] += 1
                clicks.append(hit)
        if clicks:
            events = [
                {
                    "type": "click",
                    "article_id": h["id"],
                    "list_id": h["list_id"],
                    "position": h["position"],
                    "user_id": reader,
                }
                for h in clicks
            ]
            answer = served.client.post("/events", json={"events": events}).json()
            assert answer["attributed"] == (len(events) if logged else 0), answer  # every click is credited
            where[reader] = clicks[0]["id"]
        else:
            where[reader] = rng.choice(readers.ids)
    return {"counts": counts}


def experiment_config(mode: str) -> str:
    return (
        f'[experiment]\nname = "closed-loop-{mode}"\nmode = "{mode}"\n'
        "[experiment.variants.good]\nshare = 50\n"
        "[experiment.variants.impersonal]\nshare = 50\n"
        'overrides = { "recommend.min_similarity" = 0.95 }\n'
        "[popularity]\nrefresh_seconds = 0.5\n"
    )


def decision_curve(served: Served, step: int, views: int, readers: Readers) -> tuple[dict, list[dict]]:
    """Drive ``views`` page views in steps, asking the experiment report after each; the lists it took."""
    curve = []
    for done in range(step, views + step, step):
        drive(served, readers, step)
        time.sleep(1.5)  # the served-list log writes within [feedback] flush_seconds (1 s)
        report = json.loads(served.cli("report", "experiment", "--box", "recommendation", "--json").stdout)
        arms = report["variants"]
        lists = sum(v["lists"] for v in arms) if report["mode"] == "ab" else arms[0]["lists"]
        curve.append({"views": done, "lists": lists, "p_value": report["p_value"], "winner": report["winner"]})
    return report, curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=3000)
    parser.add_argument("--readers", type=int, default=300)
    args = parser.parse_args()
    index = bbc_index()
    from recsys.service import Recommender

    with Recommender.open(index) as rec:
        view = rec.view
        sections = {a: label for _, a, label in view.store.labels("category")}
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="closed-loop-") as scratch:
        # (a) + (b): the counts and training from the log
        served = Served(index, Path(scratch) / "plain", "[popularity]\nrefresh_seconds = 0.5\n")
        try:
            readers = Readers(sections, args.readers, seed=1)
            simulated = drive(served, readers, args.views)["counts"]
            time.sleep(1.5)  # the served-list log writes within [feedback] flush_seconds (1 s)
            report = json.loads(served.cli("report", "online", "--json").stdout)
            counted = {r["box"]: {"lists": r["lists"], "clicks": r["clicks"]} for r in report["rows"]}
            rows = [
                {
                    "box": box,
                    "simulator lists": simulated[box]["lists"],
                    "report lists": counted.get(box, {}).get("lists"),
                    "simulator clicks": simulated[box]["clicks"],
                    "report clicks": counted.get(box, {}).get("clicks"),
                }
                for box in simulated
            ]
            results["counts"] = rows
            results["counts_equal"] = all(
                r["simulator lists"] == r["report lists"] and r["simulator clicks"] == r["report clicks"] for r in rows
            )
            trained = served.cli("train", "--test-days", "0.5", "--json")
            metrics = json.loads(trained.stdout) if trained.returncode in (0, 3) else {}
            results["train"] = {
                "exit": trained.returncode,
                "model": metrics.get("training", {}).get("model"),
                "source": metrics.get("source"),
                "held_out_auc": metrics.get("training", {}).get("held_out", {}).get("auc", {}),
            }
        finally:
            served.close()
        # (d) latency with the log on and off, the same page views interleaved in batches
        latency = {}
        for rate in ("1.0", "0.0"):
            latency[rate] = []
        servers = {
            rate: Served(index, Path(scratch) / f"latency-{rate}", f"[feedback]\nlog_rate = {rate}\n")
            for rate in ("1.0", "0.0")
        }
        try:
            for batch in range(6):
                for rate, server in servers.items():
                    readers = Readers(sections, args.readers, seed=10 + batch)
                    drive(server, readers, 150, latency[rate], logged=rate == "1.0")
        finally:
            for server in servers.values():
                server.close()
        p99 = {rate: float(np.percentile(np.asarray(t) * 1000, 99)) for rate, t in latency.items()}
        p50 = {rate: float(np.percentile(np.asarray(t) * 1000, 50)) for rate, t in latency.items()}
        results["latency_ms"] = {
            "log on": {"p50": p50["1.0"], "p99": p99["1.0"]},
            "log off": {"p50": p50["0.0"], "p99": p99["0.0"]},
            "p99 ratio on/off": p99["1.0"] / p99["0.0"],
        }
        # (c) the experiments
        for mode, step in (("ab", 500), ("interleave", 250)):
            served = Served(index, Path(scratch) / mode, experiment_config(mode))
            try:
                final, curve = decision_curve(served, step, args.views, Readers(sections, args.readers, seed=3))
            finally:
                served.close()
            decided = next((c for c in curve if c["winner"] and c["p_value"] < 0.01), None)
            results[mode] = {"final": final, "curve": curve, "lists_to_p_0.01": decided["lists"] if decided else None}

    print("(a) served lists and clicks: the simulator's counts and `recsys report online`'s\n")
    print(table(results["counts"], ["box", "simulator lists", "report lists", "simulator clicks", "report clicks"]))
    print(f"\nequal: {results['counts_equal']}")
    print(f"\n(b) recsys train from the served log alone: {results['train']['model']}; {results['train']['source']}")
    auc = results["train"]["held_out_auc"]
    if auc:
        single = max((v, k) for k, v in auc.items() if k != "recsys (learned)")
        model = auc["recsys (learned)"]
        print(f"    held-back AUC: model {model:.3f}, best single signal {single[0]:.3f} ({single[1]})")
    print("\n(c) experiments, Recommendation box: the defaults ('good') vs Ranking for everyone ('impersonal')\n")
    for mode in ("ab", "interleave"):
        final = results[mode]["final"]
        print(
            f"  {mode}: winner {final['winner']}, p = {final['p_value']:.2g}; "
            f"lists until p < 0.01: {results[mode]['lists_to_p_0.01']}"
        )
    latency = results["latency_ms"]
    print(
        f"\n(d) page latency, log on: p50 {latency['log on']['p50']:.1f} ms, p99 {latency['log on']['p99']:.1f} ms; "
        f"off: p50 {latency['log off']['p50']:.1f}, p99 {latency['log off']['p99']:.1f}; "
        f"p99 on/off {latency['p99 ratio on/off']:.2f}"
    )
    print(f"\nwrote {save('closed_loop', results)}")


if __name__ == "__main__":
    main()
