"""Helpers shared by the benchmark scripts: data paths, cached embeddings, result tables."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
CACHE = Path(__file__).parent / ".cache"
RESULTS = Path(__file__).parent / "results"


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        sys.exit(f"needs the shared evaluation data at {path} (see ../shared/data/README.md)")
    return path


def embed_cached(texts: Sequence[str], model: str = "all-MiniLM-L6-v2") -> np.ndarray:
    """Embed with recsys's embedder, caching vectors by the texts' hash (benchmarks only)."""
    from recsys.config import EmbedderConfig
    from recsys.embedder import make_embedder

    digest = hashlib.sha256(("\0".join(texts) + model).encode("utf-8", "surrogatepass")).hexdigest()[:20]
    path = CACHE / f"{digest}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    vectors = make_embedder(EmbedderConfig(model=model)).encode(list(texts))
    CACHE.mkdir(exist_ok=True)
    np.save(path, vectors)
    return vectors


def bbc_index() -> Path:
    """The BBC corpus indexed with the defaults, kept under .cache (re-running embeds nothing new)."""
    from recsys.archive.indexer import Indexer
    from recsys.config import Settings

    root = CACHE / "bbc-index"
    Indexer(root, Settings()).build([shared("bbc", "bbc")])
    return root


def table(rows: list[dict], columns: Sequence[str]) -> str:
    """The evaluation reports' plain-text table (one format for benchmarks and `recsys eval`)."""
    from recsys.evaluation.report import text_table

    return text_table(rows, columns)


def save(name: str, data: dict) -> Path:
    """Write results/<name>.json with the machine and time it was measured on."""
    RESULTS.mkdir(exist_ok=True)
    data = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "processor": platform.machine(), "cpus": _cpus()},
        **data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))
