"""The editorial rules (recsys/archive/rules.py) applied to a served list: which rules a list of one box on one page
obeys, blocks and boosts on each pipeline's hits, pins on the merged list."""

from __future__ import annotations

from collections.abc import Sequence

from recsys.archive.rules import PICK_REASON, BoxRules, Context
from recsys.archive.version import VersionReader
from recsys.learning.trained import StoredModels
from recsys.lists.base import to_hit
from recsys.types import Hit

NO_RULES = BoxRules()


def rules_for(models: StoredModels, view: VersionReader, box: str, now_s: float, article_id: str = "") -> BoxRules:
    """The rules a list of ``box`` served at ``now_s`` obeys, on the page of ``article_id`` (if any)."""
    ruleset = models.rules()
    if not ruleset.rules:
        return NO_RULES
    context = None
    if article_id:
        row = view.store.row_of(article_id)
        article = view.store.get_rows([row], with_text=False).get(row) if row is not None else None
        section, tags = (article.category, tuple(article.tags)) if article is not None else ("", ())
        context = Context(article_id, section, tags)
    return ruleset.for_list(box, now_s, context)


def place_pins(
    view: VersionReader, rules: BoxRules, hits: Sequence[Hit], k: int, taken: set[str], teams: str = ""
) -> tuple[list[Hit], str]:
    """The merged list with the pins in place, cut to ``k``; an interleaved list's ``teams`` follow their hits
    (a pinned place belongs to neither variant: "-")."""
    if not rules.pins:
        return list(hits[:k]), teams[:k]
    live = view.store.rows_of([r.article_id for r in rules.pins])  # live ones only: a takedown is never pinned
    articles = view.store.get_rows(list(live.values()), with_text=False)
    pinned = {a: to_hit(articles[row], 0.0, "", None) for a, row in live.items() if row in articles}
    placed = rules.pin(list(hits), k, pinned, taken)
    if teams:
        team_of = {h.id: teams[i] for i, h in enumerate(hits) if i < len(teams)}
        teams = "".join(team_of.get(h.id, "-") if h.reason != PICK_REASON else "-" for h in placed)
    return placed, teams
