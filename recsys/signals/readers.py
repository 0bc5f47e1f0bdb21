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
reads, for the ``MAX_READERS`` readers active last (the others are forgotten first). Kept small: article ids
are interned (one string per article, not one per event) and a shown entry is one int packing the count and
the last time in whole seconds (rounded up, so a moment never counts an impression from later in its second):
about 80 bytes an entry, so at most ~300 MB when every one of 20,000 readers has 200 entries (EB-NeRD's median
reader is shown 86 articles a week). Folded under the
tracker's lock (recsys/signals/activity.py); serving threads only read, each answer from one copy.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict

SHOWN_PER_READER = 200
READS_PER_READER = 50
MAX_READERS = 20_000
_TIME_BITS = 34  # whole seconds up to the year 2514
_TIME_MASK = (1 << _TIME_BITS) - 1
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
        self._shown: OrderedDict[str, dict[str, int]] = OrderedDict()  # article -> count << _TIME_BITS | last
        self._reads: OrderedDict[str, dict[str, float]] = OrderedDict()

    def add(self, reader: str, article: str, kind: str, ts: float) -> None:
        """One event of ``reader`` on ``article`` (an impression: shown; a view or click: read); others ignored."""
        if not reader or not math.isfinite(ts):
            return
        article = sys.intern(str(article))
        if kind in SHOWN_TYPES:
            shown = _entry(self._shown, reader, self.max_readers)
            packed = shown.pop(article, 0)
            last = max(packed & _TIME_MASK, min(max(math.ceil(ts), 0), _TIME_MASK))
            # re-inserted: the dict's order is the order last shown
            shown[article] = ((packed >> _TIME_BITS) + 1) << _TIME_BITS | last
            if len(shown) > self.shown_per_reader:
                del shown[next(iter(shown))]
        elif kind in READ_TYPES and self.reads_per_reader > 0:
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
        # list() copies in one step under the GIL: a serving thread reads while the fold may be adding
        unpacked = ((a, (packed >> _TIME_BITS, float(packed & _TIME_MASK))) for a, packed in list(found.items()))
        return {a: entry for a, entry in unpacked if entry[1] < at}

    def reads(self, reader: str, at: float) -> list[str]:
        """What ``reader`` read (viewed or clicked) before ``at``, newest first."""
        found = self._reads.get(reader)
        if not found:
            return []
        return [a for a, ts in sorted(list(found.items()), key=lambda item: (-item[1], item[0])) if ts < at]


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
