"""What each reader was shown and what they read, as the logs said: the per-reader part of ``LogState``.

A news reader comes back to the front page many times a day and is shown the same hot articles again; what
they were shown and passed over is the strongest evidence there is of what they will not click next (on the
EB-NeRD week, an article of the last hour's ten most clicked that the reader had been shown before was
clicked a third as often as one they had not), and what they clicked earlier in the log is what they have
read. ``ReaderMemory`` keeps both per reader, folded in time order with the rest of the state, so training's
replay and a serving process read the same thing. Who a reader is follows popularity's rule (the untrusted
sender for an HTTP client without the write key, else the user id): one client can only mark articles as
seen for itself.

Bounded: the ``SHOWN_PER_READER`` articles each reader was shown last and their last ``READS_PER_READER``
reads, for the ``MAX_READERS`` readers active last (the others are forgotten first).
"""

from __future__ import annotations

import math
from collections import OrderedDict

SHOWN_PER_READER = 200
READS_PER_READER = 50
MAX_READERS = 200_000
SHOWN_TYPES = frozenset({"impression"})
READ_TYPES = frozenset({"view", "click"})


class ReaderMemory:
    """Per reader: article -> (times shown, last shown), and article -> last read; epoch seconds."""

    def __init__(
        self, shown_per_reader: int = SHOWN_PER_READER, reads_per_reader: int = READS_PER_READER,
        max_readers: int = MAX_READERS,
    ) -> None:  # fmt: skip
        self.shown_per_reader = shown_per_reader
        self.reads_per_reader = reads_per_reader
        self.max_readers = max_readers
        self._shown: OrderedDict[str, dict[str, tuple[int, float]]] = OrderedDict()
        self._reads: OrderedDict[str, dict[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._shown.keys() | self._reads.keys())

    def add(self, reader: str, article: str, kind: str, ts: float) -> None:
        """One event of ``reader`` on ``article`` (an impression: shown; a view or click: read); others ignored."""
        if not reader or not math.isfinite(ts):
            return
        if kind in SHOWN_TYPES:
            shown = _entry(self._shown, reader, self.max_readers)
            count, last = shown.pop(article, (0, -math.inf))
            shown[article] = (count + 1, max(last, ts))  # re-inserted: the dict's order is the order last shown
            if len(shown) > self.shown_per_reader:
                del shown[next(iter(shown))]
        elif kind in READ_TYPES:
            reads = _entry(self._reads, reader, self.max_readers)
            last = reads.pop(article, -math.inf)
            reads[article] = max(last, ts)
            if len(reads) > self.reads_per_reader:
                del reads[next(iter(reads))]

    def shown(self, reader: str, at: float) -> dict[str, tuple[int, float]]:
        """What ``reader`` was shown before ``at``: article -> (times shown, last shown). An article last shown
        after ``at`` is left out (its count then is not known), so no answer uses a later event."""
        found = self._shown.get(reader)
        if not found:
            return {}
        return {a: entry for a, entry in found.items() if entry[1] < at}

    def reads(self, reader: str, at: float) -> list[str]:
        """What ``reader`` read (viewed or clicked) before ``at``, newest first."""
        found = self._reads.get(reader)
        if not found:
            return []
        return [a for a, ts in sorted(found.items(), key=lambda item: (-item[1], item[0])) if ts < at]


def _entry(table: OrderedDict[str, dict], reader: str, limit: int) -> dict:
    """``table[reader]`` (made if new), marked as the most recently active; the least recent forgotten past
    ``limit``."""
    found = table.get(reader)
    if found is None:
        found = table[reader] = {}
        if len(table) > limit:
            table.popitem(last=False)
    else:
        table.move_to_end(reader)
    return found
