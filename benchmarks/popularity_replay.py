"""Ranking's popularity on real impressions: MIND-sample behaviors replayed in time order.

Every impression's candidates are scored with popularity known only from earlier impressions, then
AUC / MRR / nDCG@5 / nDCG@10 are averaged over impressions (MIND protocol). Baselines in the same run:
random, and a time-respecting smoothed CTR. A sweep of half-life and prior strength shows why the defaults are
what they are (the MIND sample logs impressions and clicks only, so its ranking is the decayed, shrunk CTR and
ctr_weight does not change the order).

    python benchmarks/popularity_replay.py     # prints tables, writes results/popularity_replay.json
"""

from __future__ import annotations

from _common import save, shared, table

from recsys.config import PopularityConfig
from recsys.evaluation.impressions import METRICS, PopularityScorer, RandomScorer, SmoothedCTRScorer, replay
from recsys.ingest.events import read_impressions


def main() -> None:
    impressions = read_impressions(shared("mind-sample", "behaviors.tsv"))
    defaults = PopularityConfig()
    result = replay(
        impressions, [RandomScorer(0), SmoothedCTRScorer(defaults.ctr_prior, 10.0), PopularityScorer(defaults)]
    )
    rows = [{"scorer": name, **values} for name, values in result.metrics.items()]
    print(
        f"MIND sample: {result.impressions:,} impressions, {result.scored:,} scored "
        f"({result.skipped_one_class} with no click or only clicks skipped)\n"
    )
    print(table(rows, ["scorer", *METRICS]))

    sweep = []
    for half_life in (6.0, 24.0, 72.0, 1e6):
        for strength in (2.0, 10.0, 50.0):
            config = PopularityConfig(half_life_hours=half_life, ctr_prior_strength=strength)
            metrics = replay(impressions, [PopularityScorer(config)]).metrics["recsys popularity"]
            sweep.append({"half_life_hours": half_life, "ctr_prior_strength": strength, **metrics})
    print("\nsweep (recsys popularity):\n")
    print(table(sweep, ["half_life_hours", "ctr_prior_strength", *METRICS]))
    path = save("popularity_replay", {**result.to_dict(), "sweep": sweep})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
