"""What ``recsys train`` stored in an index root, as a serving process sees it: loaded on first use and
reloaded when the file is replaced, so a new ranker reaches every process without a restart."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from recsys.archive.calibrate import Calibration
from recsys.archive.layout import CALIBRATION_FILE, CLOCK_FILE, RULES_FILE
from recsys.archive.rules import RuleSet
from recsys.learning.clock import RankingClock
from recsys.learning.ranker import RANKER_FILE, LearnedRanker
from recsys.signals.coreads import COREADS_FILE, CoReadTable
from recsys.types import RecsysError

logger = logging.getLogger(__name__)


class StoredModels:
    """What ``recsys train`` stored in the index root (ranker.json, coreads.json, clock.json), and the editorial rules
    (rules.json), loaded on first use and reloaded when the file changes (checked at most every ``refresh_seconds``)."""

    def __init__(self, root: Path, refresh_seconds: float) -> None:
        self.root = root
        self.refresh = refresh_seconds
        self._loaded: dict[str, tuple[tuple[int, int] | None, Any]] = {}
        self._checked: dict[str, float] = {}
        self._lock = threading.Lock()
        self.problems: dict[str, str] = {}  # file -> why it is being ignored (for /health)

    def _get(self, name: str, load: Any) -> Any:
        now = time.monotonic()
        if name in self._loaded and now - self._checked.get(name, -1e18) < self.refresh:
            return self._loaded[name][1]
        with self._lock:
            try:
                st = (self.root / name).stat()
                stamp: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)
            except FileNotFoundError:
                stamp = None
            if name not in self._loaded or self._loaded[name][0] != stamp:
                try:
                    value = load(self.root) if stamp is not None else None
                    self.problems.pop(name, None)
                except Exception as exc:  # a damaged file is skipped (hand-set blend, no co-reads), never a 500
                    reason = str(exc) if isinstance(exc, RecsysError) else f"{type(exc).__name__}: {exc}"
                    logger.warning("ignoring %s: %s", name, reason)
                    self.problems[name] = reason
                    value = None
                self._loaded[name] = (stamp, value)
            self._checked[name] = now
            return self._loaded[name][1]

    def ranker(self) -> LearnedRanker | None:
        return self._get(RANKER_FILE, LearnedRanker.load)

    def coreads(self) -> CoReadTable | None:
        return self._get(COREADS_FILE, CoReadTable.load)

    def clock(self) -> RankingClock | None:
        return self._get(CLOCK_FILE, RankingClock.load)

    def rules(self) -> RuleSet:
        """The editorial rules (none when there is no rules.json, or it is damaged: reported in ``problems``)."""
        return self._get(RULES_FILE, RuleSet.load) or RuleSet()

    def calibration(self) -> Calibration | None:
        """The similarity floor measured at build/optimize (recsys/archive/calibrate.py), or None."""
        return self._get(CALIBRATION_FILE, Calibration.load)
