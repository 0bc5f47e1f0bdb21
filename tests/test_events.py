"""Event files in, counted once; MIND behaviors as impressions, clicks and histories."""

import pytest

from recsys.ingest.events import read_events, read_impressions
from recsys.signals.store import open_event_store
from recsys.types import InputError

ROWS = [
    '{"article_id": "a", "type": "view", "ts": "2026-11-20T10:00:00Z"}',
    '{"article_id": "a", "type": "view", "ts": "2026-11-20T10:00:00Z"}',
    '{"article_id": "a", "type": "reaction", "reaction": "veryGood", "ts": 1795000000, "count": 3}',
    '{"article_id": "b", "type": "click", "ts": "2026-11-20T11:00:00+01:00", "user_id": "u1", "event_id": "e-9"}',
    '{"article_id": "b", "type": "like", "ts": "2026-11-20T11:00:00Z"}',
    '{"article_id": "b", "type": "reaction", "ts": "2026-11-20T11:00:00Z"}',
    '{"type": "view", "ts": "2026-11-20T11:00:00Z"}',
    '{"article_id": "b", "type": "view", "ts": "yesterday"}',
    '{"article_id": "b", "type": "view", "ts": "2026-11-20", "count": 0}',
    "not json",
]


@pytest.fixture
def events_file(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(ROWS) + "\n")
    return path


def test_bad_records_are_located_and_skipped(events_file):
    batch = read_events([events_file])
    assert len(batch.events) == 4
    problems = {p.line: p.reason for p in batch.problems}
    assert set(problems) == {5, 6, 7, 8, 9, 10}
    assert "type must be one of" in problems[5]
    assert "needs a 'reaction' name" in problems[6]
    assert "article_id" in problems[7]
    assert "bad ts" in problems[8]
    assert "count must be from 1 to" in problems[9]
    assert str(batch.problems[0]).startswith(f"{events_file}:5: ")


def test_ingesting_twice_counts_once_but_identical_lines_count_twice(tmp_path, events_file):
    store = open_event_store(tmp_path)
    first = store.ingest([events_file])
    assert (first.stored, first.duplicates) == (4, 0)
    again = store.ingest([events_file])
    assert (again.stored, again.duplicates) == (0, 4)
    views = store.conn.execute("SELECT sum(count) FROM events WHERE article_id='a' AND type='view'").fetchone()[0]
    assert views == 2  # two identical view lines are two real views
    click = store.conn.execute("SELECT event_key, ts, user_id FROM events WHERE type='click'").fetchone()
    assert click == ("id:e-9", 1795168800.0, "u1")  # 11:00+01:00 is 10:00 UTC


def test_fail_mode_stores_nothing(tmp_path, events_file):
    store = open_event_store(tmp_path)
    with pytest.raises(InputError, match=r"events\.jsonl:5"):
        store.ingest([events_file], on_error="fail")
    assert store.max_seq() == 0


def test_csv_events(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("article_id,type,reaction,ts,count\na,reaction,sad,2026-11-20T10:00:00Z,2\nb,view,,bad,1\n")
    batch = read_events([path])
    assert [(e.article_id, e.reaction, e.count) for _, e in batch.events] == [("a", "sad", 2)]
    assert [(p.line, p.reason.split(":")[0]) for p in batch.problems] == [(3, "bad ts")]


def test_mind_behaviors(tmp_path):
    path = tmp_path / "behaviors.tsv"
    path.write_text(
        "1\tU1\t11/12/2019 2:14:46 PM\tN1 N2\tN3-1 N4-0 N5-0\n"
        "2\tU2\t11/12/2019 3:00:00 PM\t\tN3-0 N4-1\n"
        "3\tU3\tnot a time\tN1\tN3-1\n"
        "4\tU4\t11/12/2019 3:00:00 PM\tN1\tN3-x\n"
    )
    impressions = read_impressions(path)
    assert [(i.impression_id, i.candidates, i.clicked) for i in impressions] == [
        ("1", ("N3", "N4", "N5"), (True, False, False)),
        ("2", ("N3", "N4"), (False, True)),
    ]
    assert impressions[0].ts == 1573568086.0  # 2019-11-12 14:14:46 UTC
    store = open_event_store(tmp_path)
    report = store.ingest([path])
    assert (report.read, report.history, len(report.problems)) == (7, 2, 2)
    assert store.ingest([path]).stored == 0
    counts = dict(store.conn.execute("SELECT type, sum(count) FROM events GROUP BY type").fetchall())
    assert counts == {"impression": 5, "click": 2}
    # newest first: the click at the impression, then the history from its end
    assert [a for a, _ in store.reads_of("U1", until=2e9)] == ["N3", "N2", "N1"]
