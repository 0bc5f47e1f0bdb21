"""Online experiments between variants of the lists: A/B (each reader one variant) and team-draft interleaving
(every reader sees both variants merged; each click is credited to the variant that placed the article).

Assignment is a hash of the experiment's name and the reader id, so a reader keeps their variant across
requests and processes, and a new experiment reshuffles everyone. Readers with no id are served the first
variant and recorded outside the experiment (variant ""). Interleaving follows Radlinski, Kurup & Joachims
(CIKM 2008) and Chapelle et al. (TOIS 2012): the same verdict as A/B from far fewer lists, because every list
compares the two variants on the same reader at the same moment.

The verdicts (``experiment_report``): A/B by a two-sided two-proportion z-test on the share of lists clicked;
interleaving by a two-sided sign test on the lists where one variant's articles got more clicks than the
other's. Both say how many more lists a decision would need at 5% significance and 80% power if the
observed difference is the true one.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recsys.archive.layout import load_trained
from recsys.config import ConfigError, Settings
from recsys.feedback.report import served_and_credited
from recsys.learning.clock import RankingClock
from recsys.learning.ranker import LearnedRanker
from recsys.learning.trained import StoredModels
from recsys.lists import ListContext, RankingList, RecommendationList, RelatedList
from recsys.signals.activity import PopularityTracker
from recsys.signals.coreads import CoReadTable
from recsys.signals.store.base import EventStore
from recsys.types import Hit

MODES = ("ab", "interleave")
Z_ALPHA, Z_POWER = 1.959964, 0.841621  # two-sided 5% significance, 80% power


@dataclass(frozen=True)
class Variant:
    name: str
    share: float
    settings: Settings
    ranker: Path | None = None  # a ranker.json of its own (else the index's)


@dataclass(frozen=True)
class Experiment:
    name: str
    mode: str
    variants: tuple[Variant, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> Experiment | None:
        """The configured experiment, or None without an ``[experiment] name``; a mistake is a ConfigError
        saying what to write."""
        config = settings.experiment
        if not config.name:
            return None
        if config.mode not in MODES:
            raise ConfigError(f"[experiment] mode = {config.mode!r}: choose {' or '.join(MODES)}")
        variants = []
        for name, spec in config.variants.items():
            if not isinstance(spec, dict):
                raise ConfigError(f"[experiment.variants.{name}] must be a table with share (and overrides)")
            unknown = set(spec) - {"share", "overrides", "ranker"}
            if unknown:
                raise ConfigError(f"[experiment.variants.{name}]: unknown key(s) {', '.join(sorted(unknown))}")
            share = spec.get("share", 1)
            if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < math.inf:
                raise ConfigError(f"[experiment.variants.{name}] share = {share!r}: a positive number")
            ranker = spec.get("ranker")
            if ranker is not None and (not isinstance(ranker, str) or not Path(ranker).is_file()):
                raise ConfigError(
                    f"[experiment.variants.{name}] ranker = {ranker!r}: the path of a ranker.json written by "
                    "`recsys train` (copy one from an index, or from its models/ folder)"
                )
            overridden = with_overrides(settings, name, spec.get("overrides", {}))
            variants.append(Variant(str(name), float(share), overridden, Path(ranker) if ranker else None))
        if len(variants) < 2:
            raise ConfigError("[experiment] needs two variants, e.g. [experiment.variants.control] share = 50")
        if config.mode == "interleave" and len(variants) != 2:
            raise ConfigError('[experiment] mode = "interleave" compares exactly two variants')
        return cls(config.name, config.mode, tuple(variants))

    def assign(self, reader: str) -> Variant | None:
        """The reader's variant in an A/B experiment (None: no reader id, outside the experiment)."""
        if not reader:
            return None
        digest = hashlib.sha256(f"{self.name}\x00{reader}".encode("utf-8", "surrogatepass")).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * sum(v.share for v in self.variants)
        for variant in self.variants:
            point -= variant.share
            if point < 0:
                return variant
        return self.variants[-1]


def with_overrides(settings: Settings, variant: str, overrides: Any) -> Settings:
    """``settings`` with a variant's overrides ({"section.key": value}) applied, each checked like TOML."""
    if not isinstance(overrides, dict):
        raise ConfigError(f'[experiment.variants.{variant}] overrides must be a table of "section.key" = value')
    for dotted, value in overrides.items():
        section, _, key = str(dotted).partition(".")
        if not key or section not in settings.to_dict() or section in ("experiment", "events", "http"):
            raise ConfigError(
                f"[experiment.variants.{variant}] overrides: {dotted!r} should name a list setting such as "
                '"related.freshness_weight" or "recommend.mmr_lambda"'
            )
        settings = settings.replace(section, **{key: value})
    return settings


def team_draft(first: Sequence[Hit], second: Sequence[Hit], k: int, seed: str) -> tuple[list[Hit], str]:
    """Team-draft interleaving of two ranked lists into at most ``k`` hits: in each round the team with fewer
    picks (a coin, seeded by ``seed``, breaks ties) adds its best article not yet taken. Returns the hits and,
    per position, the team that placed it ("a": ``first``, "b": ``second``)."""
    coin = random.Random(seed)
    merged: list[Hit] = []
    teams: list[str] = []
    taken: set[str] = set()
    picks = {"a": 0, "b": 0}
    lists = {"a": list(first), "b": list(second)}
    cursor = {"a": 0, "b": 0}

    def next_of(team: str) -> Hit | None:
        hits = lists[team]
        while cursor[team] < len(hits) and hits[cursor[team]].id in taken:
            cursor[team] += 1
        return hits[cursor[team]] if cursor[team] < len(hits) else None

    while len(merged) < k:
        first_a = picks["a"] < picks["b"] or (picks["a"] == picks["b"] and coin.random() < 0.5)
        order = ["a", "b"] if first_a else ["b", "a"]
        for team in order:
            hit = next_of(team)
            if hit is not None:
                break
        else:
            break
        merged.append(hit)
        teams.append(team)
        taken.add(hit.id)
        picks[team] += 1
    return merged, "".join(teams)


@dataclass(frozen=True)
class ArmFigures:
    variant: str
    lists: int
    clicked_lists: int
    ctr: float
    wins: int = 0  # interleaving: lists where this variant's articles got more clicks
    losses: int = 0
    ties: int = 0


def two_proportion_p(clicked_a: int, n_a: int, clicked_b: int, n_b: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (1.0 when there is nothing to compare)."""
    if n_a == 0 or n_b == 0:
        return 1.0
    pooled = (clicked_a + clicked_b) / (n_a + n_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if spread == 0:
        return 1.0
    z = (clicked_a / n_a - clicked_b / n_b) / spread
    return math.erfc(abs(z) / math.sqrt(2))


def sign_test_p(wins: int, losses: int) -> float:
    """Two-sided exact sign test of wins against losses (ties left out)."""
    n = wins + losses
    if n == 0:
        return 1.0
    low = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(low + 1)) / 2**n
    return min(1.0, 2 * tail)


def lists_needed_ab(p_a: float, p_b: float) -> float:
    """Lists per variant to tell CTRs ``p_a`` and ``p_b`` apart (5% two-sided, 80% power); inf if equal."""
    if p_a == p_b:
        return math.inf
    return (Z_ALPHA + Z_POWER) ** 2 * (p_a * (1 - p_a) + p_b * (1 - p_b)) / (p_a - p_b) ** 2


def lists_needed_interleave(win_share: float, decided_share: float) -> float:
    """Interleaved lists to tell a win share (among decided lists) from one half, given the share of lists
    that decide anything (5% two-sided, 80% power); inf if even."""
    if win_share == 0.5 or decided_share <= 0:
        return math.inf
    n = (Z_ALPHA * 0.5 + Z_POWER * math.sqrt(win_share * (1 - win_share))) ** 2 / (win_share - 0.5) ** 2
    return n / decided_share


def experiment_report(
    store: EventStore, experiment: Experiment, since: float, until: float, box: str | None = None
) -> dict[str, Any]:
    """Per-variant figures, the winner (None until p < 0.05), the p-value and how many more lists a decision
    would need, from the served-list log (one box's lists, or all)."""
    served, credited, _ = served_and_credited(store, since, until)
    lists = [s for s in served if s.variant and (box is None or s.box == box)]
    names = [v.name for v in experiment.variants]
    out: dict[str, Any] = {"experiment": experiment.name, "mode": experiment.mode, "box": box, "variants": []}
    if experiment.mode == "ab":
        arms = []
        for name in names:
            mine = [s for s in lists if s.variant == name]
            clicked = sum(1 for s in mine if s.list_id in credited)
            arms.append(ArmFigures(name, len(mine), clicked, clicked / len(mine) if mine else 0.0))
        best, other = sorted(arms[:2], key=lambda a: -a.ctr) if len(arms) >= 2 else (arms[0], arms[0])
        p_value = two_proportion_p(best.clicked_lists, best.lists, other.clicked_lists, other.lists)
        needed = lists_needed_ab(best.ctr, other.ctr)
        more = max(0.0, needed - min(best.lists, other.lists)) if math.isfinite(needed) else None
    else:
        interleaved = [s for s in lists if s.variant == "interleave" and s.teams]
        wins = losses = ties = 0
        for served in interleaved:
            clicked = credited.get(served.list_id, {})
            a = sum(1 for position in clicked.values() if served.teams[position - 1 : position] == "a")
            b = sum(1 for position in clicked.values() if served.teams[position - 1 : position] == "b")
            wins, losses, ties = wins + (a > b), losses + (b > a), ties + (a == b)
        n = len(interleaved)
        arms = [
            ArmFigures(names[0], n, wins, wins / n if n else 0.0, wins, losses, ties),
            ArmFigures(names[1], n, losses, losses / n if n else 0.0, losses, wins, ties),
        ]
        best, other = (arms[0], arms[1]) if wins >= losses else (arms[1], arms[0])
        p_value = sign_test_p(wins, losses)
        decided = wins + losses
        needed = lists_needed_interleave(best.wins / decided if decided else 0.5, decided / n if n else 0.0)
        more = max(0.0, needed - n) if math.isfinite(needed) else None
    out["variants"] = [asdict(a) for a in arms]
    out["p_value"] = p_value
    out["winner"] = best.variant if p_value < 0.05 and best.clicked_lists != other.clicked_lists else None
    out["more_lists_needed"] = None if more is None else math.ceil(more)
    return out


class VariantModels(StoredModels):
    """The index's trained files, except the ranker: a variant's own ranker.json (reloaded when replaced)."""

    def __init__(self, base: StoredModels, ranker_file: Path) -> None:
        super().__init__(ranker_file.parent, base.refresh)
        self.base = base
        self.name = ranker_file.name

    def ranker(self) -> LearnedRanker | None:
        return self._get(self.name, lambda root: load_trained(root, self.name, LearnedRanker.from_json))

    def coreads(self) -> CoReadTable | None:
        return self.base.coreads()

    def clock(self) -> RankingClock | None:
        return self.base.clock()


@dataclass(frozen=True)
class Boxes:
    """The three list pipelines of one variant (its settings and models in their ``ListContext``)."""

    related: RelatedList
    ranking: RankingList
    recommendation: RecommendationList
    models: StoredModels

    @classmethod
    def build(cls, context: ListContext) -> Boxes:
        ranking = RankingList(context)
        return cls(RelatedList(context), ranking, RecommendationList(context, ranking), context.models)

    def model_id(self) -> str:
        ranker = self.models.ranker()
        return "" if ranker is None else ranker.model_id


class Arms:
    """Which boxes serve a reader: the configured ones, or under an experiment the reader's variant's (A/B) or
    both variants' (interleaving, merged by ``merge``)."""

    def __init__(self, settings: Settings, activity: PopularityTracker, models: StoredModels) -> None:
        self.default = Boxes.build(ListContext(settings, activity, models))
        self.experiment = Experiment.from_settings(settings)
        variants = self.experiment.variants if self.experiment is not None else ()
        self.by_variant = {}
        for v in variants:
            own = VariantModels(models, v.ranker) if v.ranker else models
            self.by_variant[v.name] = Boxes.build(ListContext(v.settings, activity, own))

    def for_reader(self, reader: str) -> list[tuple[str, Boxes]]:
        """(variant name, boxes) to serve ``reader`` with: one pair, or two to interleave; the name is "" outside
        an experiment (no experiment, or no reader id: the first variant's boxes)."""
        experiment = self.experiment
        if experiment is None:
            return [("", self.default)]
        first = experiment.variants[0].name
        if not reader:
            return [("", self.by_variant[first])]
        if experiment.mode == "interleave":
            return [(v.name, self.by_variant[v.name]) for v in experiment.variants]
        variant = experiment.assign(reader)
        name = first if variant is None else variant.name
        return [(name, self.by_variant[name])]

    def boxes(self, variant: str) -> Boxes:
        """A variant's boxes ("" or an unknown name: the configured ones)."""
        return self.by_variant.get(variant, self.default)

    @staticmethod
    def merge(results: Sequence[tuple[str, list[Hit]]], k: int, seed: str) -> tuple[list[Hit], str, str]:
        """(hits, variant, teams) of one served list from each arm's hits: the only arm's, or two interleaved
        by team draft (variant "interleave", ``teams`` one letter per position)."""
        if len(results) == 1:
            return results[0][1], results[0][0], ""
        hits, teams = team_draft(results[0][1], results[1][1], k, seed)
        return hits, "interleave", teams
