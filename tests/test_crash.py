"""A build killed with SIGKILL at any point leaves the previous version serving, unchanged."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recsys.archive.indexer import Indexer
from recsys.archive.layout import CRASH_ENV, IndexLayout
from recsys.config import Settings
from recsys.service import Recommender
from tests.conftest import KeywordEmbedder, write_jsonl

REPO = Path(__file__).resolve().parents[1]
BASE = [{"id": f"b{i}", "title": f"storm coast flood {i}", "body": f"storm flood homes {i} power"} for i in range(40)]
NEW = [{"id": f"n{i}", "title": f"storm coast news {i}", "body": f"storm flood update {i}"} for i in range(400)]

WRITER = """
import sys, time
from recsys.config import Settings
from recsys.archive.indexer import Indexer
from tests.conftest import KeywordEmbedder

class Slow(KeywordEmbedder):
    def encode(self, texts, progress=None):
        out = []
        for start in range(0, len(texts), 20):
            time.sleep(0.02)
            out.append(super().encode(texts[start:start + 20]))
        import numpy as np
        return np.concatenate(out)

Indexer(sys.argv[1], Settings(), Slow()).add([sys.argv[2]])
"""


def run_writer(root: Path, articles: Path, crash_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(articles)], env=env, cwd=root.parent)


@pytest.fixture
def served(make_indexer, tmp_path):
    make_indexer().build([write_jsonl(tmp_path / "base.jsonl", BASE)])
    root = tmp_path / "index"
    rec = Recommender.open(root)
    return root, rec.version, [h.id for h in rec.related("b0", 10)]


# the new segment: written, flushed, renamed into segments/; then the version: renamed, pointer written, swapped
STAGES = [
    "after-sqlite",
    "after-vectors",
    "after-ann",
    "after-segment",
    "before-rename",
    "before-pointer",
    "before-swap",
]


@pytest.mark.parametrize("stage", STAGES)
def test_kill_at_each_stage_keeps_previous_version(served, tmp_path, stage):
    root, version, answer = served
    proc = run_writer(root, write_jsonl(tmp_path / "new.jsonl", NEW), crash_at=stage)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    rec = Recommender.open(root)
    assert rec.version == version and len(rec) == len(BASE)
    assert [h.id for h in rec.related("b0", 10)] == answer
    # the lock died with the writer, and the next job cleans up after it
    done = Indexer(root, Settings(), KeywordEmbedder()).add([tmp_path / "new.jsonl"])
    assert done.added == len(NEW)
    assert not list((root / "versions").glob(".staging-*"))
    assert not list(root.glob(".CURRENT.*.tmp"))  # a pointer written but never swapped in is cleaned up too
    layout = IndexLayout(root)
    assert {p.name for p in layout.segments.iterdir()} == layout.listed_segments()  # no orphan segment is left
    assert len(Recommender.open(root)) == len(BASE) + len(NEW)


def test_kill_after_pointer_swap_serves_the_new_version(served, tmp_path):
    root, version, _ = served
    proc = run_writer(root, write_jsonl(tmp_path / "new.jsonl", NEW), crash_at="after-pointer")
    assert proc.wait(timeout=120) == -signal.SIGKILL
    rec = Recommender.open(root)
    assert rec.version != version and len(rec) == len(BASE) + len(NEW)


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.6, 0.9])
def test_external_kill_9_mid_build(served, tmp_path, delay):
    root, version, answer = served
    rec = Recommender.open(root)
    proc = run_writer(root, write_jsonl(tmp_path / "new.jsonl", NEW))
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    after = Recommender.open(root)
    if after.version == version:
        assert len(after) == len(BASE) and [h.id for h in after.related("b0", 10)] == answer
    else:  # the kill landed after the swap: the new version is complete
        assert len(after) == len(BASE) + len(NEW)
    assert rec.related("b0", 3)  # an open reader keeps answering either way
    assert IndexLayout(root).current().is_dir()
