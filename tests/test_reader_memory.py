"""What each reader was shown and read: remembered per reader, only from earlier events, the same in training's
replay and in a served list for a known reader."""

import math

import numpy as np

from recsys.config import Settings
from recsys.learning import features as features_module
from recsys.learning.features import FEATURES
from recsys.learning.training import build_dataset
from recsys.lists import learned
from recsys.signals.logstate import LogState
from recsys.signals.readers import ReaderMemory
from recsys.signals.records import Impression
from tests.test_learning import index, lookup_of, synthetic_log  # noqa: F401  (the fixture too)
from tests.test_served_learning import _served

SHOWN, SINCE = FEATURES.index("shown_to_reader"), FEATURES.index("hours_since_shown")
IN_HISTORY = FEATURES.index("in_history")


def test_a_reader_is_remembered_with_what_they_were_shown_and_read_before_a_time_and_within_bounds():
    memory = ReaderMemory(shown_per_reader=3, reads_per_reader=2, max_readers=2)
    memory.add("r1", "a", "impression", 10.0)
    memory.add("r1", "a", "impression", 20.0)
    memory.add("r1", "b", "impression", 30.0)
    memory.add("r2", "a", "impression", 5.0)
    memory.add("", "a", "impression", 1.0)  # no reader: nobody's
    memory.add("r1", "c", "impression", math.nan)  # no time: refused
    memory.add("r1", "c", "reaction", 12.0)  # neither shown nor read
    assert memory.shown("r1", 25.0) == {"a": (2, 20.0)}  # b came later
    assert memory.shown("r1", 20.0) == {}  # shown at 20 is not "before 20"
    assert memory.shown("r1", 31.0) == {"a": (2, 20.0), "b": (1, 30.0)}
    assert memory.shown("r2", 31.0) == {"a": (1, 5.0)} and memory.shown("nobody", 31.0) == {}
    for n, article in enumerate("cde"):
        memory.add("r1", article, "impression", 40.0 + n)
    assert set(memory.shown("r1", 99.0)) == {"c", "d", "e"}  # the three shown last
    memory.add("r1", "x", "click", 50.0)
    memory.add("r1", "y", "view", 60.0)
    memory.add("r1", "x", "view", 70.0)  # read again: now the newest
    assert memory.reads("r1", 99.0) == ["x", "y"] and memory.reads("r1", 65.0) == ["y"]
    memory.add("r1", "z", "click", 80.0)
    assert memory.reads("r1", 99.0) == ["z", "x"]  # two at most
    memory.add("r3", "a", "impression", 90.0)  # a third reader: r2, active least recently, is forgotten
    assert memory.shown("r2", 99.0) == {} and memory.shown("r3", 99.0) == {"a": (1, 90.0)}
    assert memory.shown("r1", 99.0)


def test_an_untrusted_client_marks_articles_as_seen_for_itself_only():
    state = LogState(Settings().popularity)
    # (article, type, reaction, ts, count, reader): a stored event's reader is its untrusted sender when it has one
    state.fold([("a", "impression", "", 10.0, 1, "ip:abc"), ("b", "impression", "", 11.0, 1, "u1")])
    assert state.readers.shown("u1", 20.0) == {"b": (1, 11.0)}
    assert state.readers.shown("ip:abc", 20.0) == {"a": (1, 10.0)}
    assert state.readers.reads("u1", 20.0) == [] and not state.readers._reads
    state.fold([("c", "click", "", 12.0, 1, "u1")])
    assert state.readers.reads("u1", 20.0) == ["c"]  # a replay keeps reads; a serving process asks the store
    serving = LogState(Settings().popularity, live_coreads=True)
    serving.fold([("c", "click", "", 12.0, 1, "u1"), ("b", "impression", "", 11.0, 1, "u1")])
    assert serving.readers.reads("u1", 20.0) == [] and serving.readers.shown("u1", 20.0) == {"b": (1, 11.0)}


def test_an_impressions_reader_columns_come_from_that_readers_earlier_impressions_only(index):  # noqa: F811
    from recsys.service import Recommender

    rec = Recommender.open(index)
    t0 = 1_790_000_000.0
    log = [
        Impression("1", "r1", t0, ("el1",), ("fb1", "fb2", "fb3"), (True, False, False)),
        Impression("2", "r2", t0 + 10, ("el1",), ("fb2", "fb4"), (False, True)),  # another reader
        Impression("3", "r1", t0 + 3600, ("el1",), ("fb1", "fb2", "fb4", "fb5"), (False, False, False, True)),
        Impression("4", "r1", t0 + 3600, ("el1",), ("fb2", "fb6"), (True, False)),  # the same second as 3
        Impression("5", "r1", t0 + 9000, ("el1",), ("fb5", "fb6"), (True, False)),  # later: must change nothing
    ]
    settings = Settings()
    dataset, _ = build_dataset(log, lookup_of(rec), settings.popularity, settings.recommend)
    first = dataset.features[dataset.groups == 0]
    assert np.all(first[:, SHOWN] == 0) and np.all(np.isnan(first[:, SINCE]))  # nothing shown to r1 before
    third = dict(zip(log[2].candidates, dataset.features[dataset.groups == 2], strict=True))
    assert third["fb2"][SHOWN] == np.log1p(1)  # once to r1 (r2's impression is r2's)
    assert third["fb2"][SINCE] == np.log1p(1.0)  # an hour ago
    assert third["fb4"][SHOWN] == 0 and np.isnan(third["fb4"][SINCE])  # shown to r2 only
    assert third["fb1"][IN_HISTORY] == 1  # r1 clicked it an hour ago: read, though not in the row's history
    fourth = dict(zip(log[3].candidates, dataset.features[dataset.groups == 3], strict=True))
    assert fourth["fb6"][SHOWN] == 0  # impression 3 of the same second is not yet known
    fifth = dict(zip(log[4].candidates, dataset.features[dataset.groups == 4], strict=True))
    assert fifth["fb5"][SHOWN] == np.log1p(1) and fifth["fb6"][SHOWN] == np.log1p(1)
    early, _ = build_dataset(log[:4], lookup_of(rec), settings.popularity, settings.recommend)
    np.testing.assert_array_equal(early.features, dataset.features[: early.labels.size])


def test_a_known_reader_is_served_with_what_they_read_and_were_shown_and_a_history_alone_without(
    index, monkeypatch  # noqa: F811
):
    log = synthetic_log(1500)
    now = max(i.ts for i in log) + 60
    rec = _served(index)
    reader = log[-1].user_id
    clicked = [a for i in log if i.user_id == reader for a, c in zip(i.candidates, i.clicked, strict=True) if c]
    shown = {a for i in log if i.user_id == reader for a in i.candidates}
    seen: list[np.ndarray] = []
    scorer = learned.score

    def watching(*args, **kwargs):
        scores, rows = scorer(*args, **kwargs)
        seen.append(rows)
        return scores, rows

    monkeypatch.setattr(learned, "score", watching)
    history = list(log[-1].history)
    known = rec.recommend(history, user_id=reader, k=8, now=now)
    assert known and not {h.id for h in known} & set(clicked)  # what they clicked is read
    assert np.nanmax(seen[-1][:, SHOWN]) > 0 and np.all(seen[-1][:, SHOWN] >= 0)  # what they passed over counts
    served_ids = [h.id for h in known]
    assert served_ids == [h.id for h in rec.recommend(history, user_id=reader, k=8, now=now)]
    alone = rec.recommend(history, k=8, now=now)
    assert alone and np.all(np.isnan(seen[-1][:, SHOWN]))  # no reader id: not known, not "never shown"
    # the reads a served list takes for a known reader: the recorded ones (timed, newest first) before the history
    reads = rec._reads(history, reader, now)
    newest_first = list(dict.fromkeys(reversed(clicked)))
    assert reads[: len(newest_first)] == newest_first and set(history) <= set(reads)
    assert shown and (SHOWN in features_module.READER_COLUMNS and SINCE in features_module.READER_COLUMNS)
