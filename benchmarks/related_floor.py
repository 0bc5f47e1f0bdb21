"""How often the site's Related floor (``[related] floor = "auto"``, calibrated at build) leaves page()'s Related
short or empty, on BBC and MIND-sample news, and what it drops: the topic precision of the hits it keeps and of
those it drops (label = topic folder / subcategory). related() itself is unchanged (benchmarks/related_quality.py).

python benchmarks/related_floor.py     # after related_quality.py built the indexes; writes results/related_floor.json
"""

from __future__ import annotations

from _common import CACHE, save, shared, table
from related_quality import index_of

from recsys.archive.calibrate import Calibration
from recsys.config import Settings
from recsys.evaluation.related import store_labels
from recsys.service import Recommender


def corpus(name: str, source, label: str, k: int) -> dict:
    root = index_of(name, source)
    calibration = Calibration.load(root)
    rec = Recommender.open(root, Settings().replace("feedback", log_rate=0.0))
    labels = store_labels(rec, label)
    short = empty = kept_same = kept = dropped_same = dropped = 0
    for article_id, topic in labels.items():
        hits = rec.related(article_id, k)
        floored = [h for h in hits if h.similarity is not None and h.similarity >= calibration.floor]
        short += len(floored) < k
        empty += not floored
        kept += len(floored)
        kept_same += sum(labels.get(h.id) == topic for h in floored)
        gone = [h for h in hits if h not in floored]
        dropped += len(gone)
        dropped_same += sum(labels.get(h.id) == topic for h in gone)
    n = len(labels)
    row = {
        "corpus": name,
        "floor": calibration.floor,
        "method": calibration.method,
        "pages": n,
        "related_short": round(short / n, 4),
        "related_empty": round(empty / n, 4),
        "kept_precision": round(kept_same / max(kept, 1), 4),
        "dropped_precision": round(dropped_same / max(dropped, 1), 4),
        "hits_dropped": round(dropped / max(kept + dropped, 1), 4),
    }
    return row


def main(k: int = 10) -> None:
    rows = [
        corpus("bbc", shared("bbc", "bbc"), "category", k),
        corpus("mind-sample", shared("mind-sample", "news.tsv"), "subcategory", k),
    ]
    print(table(rows, list(rows[0])))
    print(f"\nwrote {save('related_floor', {'k': k, 'rows': rows})}")


if __name__ == "__main__":
    assert CACHE
    main()
