"""Online figures from the served-list log: lists served, the clicks they earned, CTR with a 95% interval, and
what was shown (how many articles, how old), per box, variant or day.

A click counts for a list only if the list was recorded and holds the clicked article (whatever position the
click claimed: the list's own order gives the position); a list and article count once however often the
click is posted, so a client repeating a click, or naming lists it never got, moves no figure. Clicks that
name no recorded list, or an article not in it, are reported apart as unattributed.

CTR here is the share of served lists with at least one click (a list is one trial, so the Wilson interval
applies); ``clicks`` counts every (list, article) clicked.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from recsys.signals.records import AttributedClick, ServedList
from recsys.signals.store.base import EventStore

GROUPINGS = ("box", "variant", "day", "hour")
CLICK_GRACE = 86_400.0  # a click up to a day after a report's window still answers a list served inside it
Z95 = 1.959964


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (0, 1 with no trials)."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class OnlineRow:
    """The figures of one group (box, variant and/or day; "" where not grouped by it)."""

    box: str
    variant: str
    day: str
    hour: str  # "YYYY-MM-DD HH:00" (UTC) when grouped by hour
    lists: int
    clicked_lists: int
    clicks: int
    ctr: float
    ctr_low: float
    ctr_high: float
    articles_shown: int  # distinct articles in the group's lists
    median_age_hours: float | None  # of what was shown, at the time it was shown (dated articles only)
    mean_click_position: float | None
    explored_lists: int = 0  # lists with a slot given to a new article ([explore])
    explored_clicks: int = 0  # clicks on those slots

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OnlineReport:
    rows: list[OnlineRow]
    since: float
    until: float
    by: tuple[str, ...]
    unattributed_clicks: int  # clicks naming a list that was not recorded, or an article not in it
    totals: OnlineRow | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "by": list(self.by),
            "rows": [r.to_dict() for r in self.rows],
            "totals": None if self.totals is None else self.totals.to_dict(),
            "unattributed_clicks": self.unattributed_clicks,
            "notes": self.notes,
        }


def credited_clicks(
    lists: Iterable[ServedList], clicks: Iterable[AttributedClick]
) -> tuple[dict[str, dict[str, int]], int]:
    """(list id -> {clicked article: its position in the list}, unattributed count): each click credited to the
    list it names if that list holds its article, once per list and article."""
    position_of = {s.list_id: {a: i for i, a in enumerate(s.ids, start=1)} for s in lists}
    credited: dict[str, dict[str, int]] = defaultdict(dict)
    unattributed = 0
    for click in clicks:
        positions = position_of.get(click.list_id)
        if positions is None or click.article_id not in positions:
            unattributed += 1
            continue
        credited[click.list_id].setdefault(click.article_id, positions[click.article_id])
    return credited, unattributed


def served_and_credited(
    store: EventStore, since: float, until: float
) -> tuple[list[ServedList], dict[str, dict[str, int]], int]:
    """The lists served in [since, until], the clicks credited to them (``credited_clicks``) and how many clicks
    were unattributed. A click may come a while after its list: up to ``CLICK_GRACE`` after the window it still
    answers a list inside it."""
    lists = store.served_lists(since, until)
    clicks = store.attributed_clicks(since, min(until + CLICK_GRACE, 1e18))
    credited, unattributed = credited_clicks(lists, clicks)
    return lists, credited, unattributed


def online_report(
    store: EventStore,
    since: float | None = None,
    until: float | None = None,
    by: Sequence[str] = ("box",),
    published: Callable[[Sequence[str]], dict[str, float]] | None = None,
) -> OnlineReport:
    """The figures of lists served in [since, until] (default: the last 7 days), grouped ``by`` any of box,
    variant, day, hour. ``published`` maps article ids to publication times (epoch seconds) for the age column."""
    until = time.time() if until is None else until
    since = until - 7 * 86_400.0 if since is None else since
    unknown = [g for g in by if g not in GROUPINGS]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}; choose from {', '.join(GROUPINGS)}")
    lists, credited, unattributed = served_and_credited(store, since, until)
    dates = published(sorted({a for s in lists for a in s.ids})) if published is not None and lists else {}
    groups: dict[tuple[str, str, str, str], list[ServedList]] = defaultdict(list)
    for served in lists:
        when = time.gmtime(served.ts)
        key = (
            served.box if "box" in by else "",
            served.variant if "variant" in by else "",
            time.strftime("%Y-%m-%d", when) if "day" in by else "",
            time.strftime("%Y-%m-%d %H:00", when) if "hour" in by else "",
        )
        groups[key].append(served)
    rows = [_row(key, members, credited, dates) for key, members in sorted(groups.items())]
    totals = _row(("", "", "", ""), lists, credited, dates) if len(rows) > 1 else None
    notes = []
    if not lists:
        notes.append("no served lists recorded in this window: is [feedback] log_rate 0, or is nothing served yet?")
    return OnlineReport(rows, since, until, tuple(by), unattributed, totals, notes)


def _row(
    key: tuple[str, str, str, str],
    members: Sequence[ServedList],
    credited: dict[str, dict[str, int]],
    dates: dict[str, float],
) -> OnlineRow:
    clicked = [credited[s.list_id] for s in members if s.list_id in credited]
    positions = [p for c in clicked for p in c.values()]
    ages = sorted((s.ts - dates[a]) / 3600.0 for s in members for a in s.ids if a in dates and dates[a] <= s.ts)
    low, high = wilson(len(clicked), len(members))
    return OnlineRow(
        box=key[0],
        variant=key[1],
        day=key[2],
        hour=key[3],
        lists=len(members),
        clicked_lists=len(clicked),
        clicks=len(positions),
        ctr=len(clicked) / len(members) if members else 0.0,
        ctr_low=low,
        ctr_high=high,
        articles_shown=len({a for s in members for a in s.ids}),
        median_age_hours=ages[len(ages) // 2] if ages else None,
        mean_click_position=sum(positions) / len(positions) if positions else None,
        explored_lists=sum(1 for s in members if s.explored),
        explored_clicks=sum(1 for s in members if s.explored and s.explored in credited.get(s.list_id, {}).values()),
    )
