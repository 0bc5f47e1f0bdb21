"""The site's query path (every list, and recording events) must not load torch or sentence-transformers."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.config import Settings
from tests.conftest import write_jsonl

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
from recsys import Recommender
rec = Recommender.open(sys.argv[1])
hits = rec.related("a0", 3)
rec.record_view("a1", user_id="u1")
rec.record_reaction("a2", "veryGood")
rec.flush()
page = rec.page("a0", ["a1", "a5"], k_related=3, k_ranking=3, k_recommend=3)
assert page.related and page.ranking and page.recommendation
assert rec.recommend(user_id="u1", k=2) and rec.ranking(2)
print(json.dumps({"hits": [h.id for h in hits], "heavy": HEAVY()}))
"""


# Prepended to every probe: which torch-family modules the process has loaded.
HEAVY_PRELUDE = """
import sys
def HEAVY():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "sentence_transformers", "transformers"))
"""


def run_probe(script: str, tmp_path: Path) -> dict:
    """Run a probe in a fresh interpreter against tmp_path/index; return what it printed as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", HEAVY_PRELUDE + script, str(tmp_path / "index")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "", "RECSYS_RELATED__FLOOR": "off"},  # keyword vectors: no floor
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("backend", ["exact", "faiss-ivf"])
def test_every_list_and_event_call_imports_no_torch(make_indexer, tmp_path, backend):
    settings = Settings().replace("index", backend=backend)
    docs = [{"id": f"a{i}", "title": f"topic {i % 7} story", "body": f"words {i % 7} more {i}"} for i in range(200)]
    make_indexer(s=settings).build([write_jsonl(tmp_path / "a.jsonl", docs)])
    result = run_probe(PROBE, tmp_path)
    assert len(result["hits"]) == 3
    assert result["heavy"] == []


SERVICE_PROBE = """
import json, sys
from fastapi.testclient import TestClient
from recsys.http import create_app
client = TestClient(create_app(sys.argv[1]))
assert client.get("/page/a0").status_code == 200
assert client.post("/events", json={"events": [{"article_id": "a1", "type": "view"}]}).status_code == 200
print(json.dumps({"heavy": HEAVY()}))
"""


def test_the_http_service_imports_no_torch(make_indexer, tmp_path):
    docs = [{"id": f"a{i}", "title": f"topic {i % 5} story", "body": f"words {i % 5} more {i}"} for i in range(50)]
    make_indexer().build([write_jsonl(tmp_path / "a.jsonl", docs)])
    assert run_probe(SERVICE_PROBE, tmp_path)["heavy"] == []
