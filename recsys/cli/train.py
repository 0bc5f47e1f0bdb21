"""``recsys train``: fit the learned ranker and the co-read table from the site's own logged impressions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import typer

from recsys.archive.layout import CLOCK_FILE
from recsys.archive.store import NO_TIME
from recsys.cli.common import EXIT_SKIPPED, EventsOption, IndexOption, JsonOption, offline, print_json, settings_of
from recsys.config import Settings
from recsys.evaluation.report import Run, markdown_table, text_table
from recsys.feedback.served import served_impressions
from recsys.ingest.events import read_impressions
from recsys.learning.clock import MIN_HELD_CLICKS, RankingClock, choose_clock
from recsys.learning.ranker import RANKER_FILE, write_json_atomic
from recsys.learning.training import ArticleLookup, TrainingResult, coreads_from_reads, train
from recsys.service import Recommender
from recsys.signals.coreads import COREADS_FILE
from recsys.signals.records import Impression
from recsys.signals.store import open_event_store
from recsys.types import InputProblem

BASELINES = {"popularity": "recsys popularity", "ctr_all": "smoothed CTR", "content_max": "content match"}


def article_lookup(rec: Recommender, impressions: list[Impression]) -> ArticleLookup:
    """What the index knows of the articles the impressions mention."""
    view = rec.view
    rows = view.store.rows_of({a for i in impressions for a in (*i.candidates, *i.history)})
    articles = view.store.get_rows(list(rows.values()))
    published = np.asarray(view.rows["published"])
    return ArticleLookup(
        rows,
        view.vectors,
        {a.id: a.category for a in articles.values() if a.category},
        {a: float(published[r]) for a, r in rows.items() if published[r] != NO_TIME},
    )


def train_command(
    ctx: typer.Context,
    index: str = IndexOption,
    events: str = EventsOption,
    behaviors: list[str] = typer.Option(
        None, "--behaviors", help="MIND behaviors.tsv file(s); default: the impressions ingested into the index."
    ),
    test_days: float = typer.Option(2.0, "--test-days", min=0.1, help="Days at the end held back for the report."),
    out: str = typer.Option(None, "--out", help="Report folder (default: a new runs/<time>-train/)."),
    as_json: bool = JsonOption,
) -> None:
    """Fit how Recommendation mixes its signals and how fast Ranking forgets, from logged impressions; store both
    in the index (ranker.json, clock.json, coreads.json)."""
    run = Run("train", Path(out) if out else None)
    settings = offline(settings_of(ctx, events))
    problems: list[InputProblem] = []
    with Recommender.open(index, settings) as rec:
        if behaviors:
            impressions = [i for path in behaviors for i in read_impressions(Path(path), problems)]
            source = ", ".join(behaviors)
        else:
            store = open_event_store(index, settings.events)
            logged = store.logged_impressions()
            served = served_impressions(store)
            impressions = sorted([*logged, *served.impressions], key=lambda i: (i.ts, i.impression_id))
            source = (
                f"the events in {index}: {len(logged):,} impressions the site logged, {served.lists:,} lists the "
                f"service served ({served.clicked_lists:,} with a credited click, positions known; "
                f"{served.unattributed_clicks:,} clicks named no recorded list)"
            )
        lookup = article_lookup(rec, impressions)
    result = train(impressions, lookup, settings.popularity, settings.recommend, test_days)
    if not behaviors:  # every stored read, not only the impressions' histories, makes the co-read table
        result.coreads = coreads_from_reads(store.reads_by_reader())
        result.report["coread_articles"] = len(result.coreads.neighbours)
    clock = _clock(impressions, test_days, settings)
    stored = _store(result, Path(index), clock)
    report = result.report
    run.metrics.update({"training": report, "source": source, "stored": stored, "bad_rows": len(problems)})
    rows, columns = _table(result)
    run.add(
        "Data",
        f"{report['impressions']:,} impressions from {source} ({len(problems)} bad rows skipped), "
        f"{report['rows']:,} candidates, {report['clicks']:,} clicks; {report['informative_impressions']:,} "
        f"impressions have a click and a non-click. {report.get('split', '')}. Co-read table: "
        f"{report['coread_articles']:,} articles with neighbours.",
    )
    run.add("Model", f"{report['model']}; stored: {', '.join(stored) or 'nothing'}.")
    run.metrics["ranking_clock"] = None if clock is None else clock.to_json()
    run.add("Ranking clock", _clock_text(clock, settings))
    if rows:
        run.add(
            "Each feature alone and the model, on the held-back impressions (mean per-impression AUC)",
            markdown_table(rows, columns),
        )
    folder = run.write("Training the ranker", settings)
    for problem in problems[:20]:
        typer.echo(str(problem), err=True)
    if as_json:
        print_json(run.metrics)
    else:
        typer.echo(f"{report['model']}")
        if rows:
            typer.echo(f"{report.get('split', '')}\n")
            typer.echo(text_table(rows, columns))
        typer.echo(f"\n{_clock_text(clock, settings)}")
        typer.echo(f"\nstored in {index}: {', '.join(stored) or 'nothing'}; report in {folder}/report.md")
    if problems:
        raise typer.Exit(EXIT_SKIPPED)


def _clock(impressions: list[Impression], test_days: float, settings: Settings) -> RankingClock | None:
    """The Ranking clock that caught the most clicks on the held-back days (None: too few to choose)."""
    timed = [i for i in impressions if math.isfinite(i.ts)]
    if not timed:
        return None
    held_from = max(i.ts for i in timed) - test_days * 86400.0
    return choose_clock(timed, held_from, settings.popularity)


def _clock_text(clock: RankingClock | None, settings: Settings) -> str:
    if clock is None:
        config = settings.popularity
        return (
            f"Ranking clock: too few timed, clicked impressions on the held-back days to choose one "
            f"(at least {MIN_HELD_CLICKS}); the box keeps half-life {config.ranking_half_life_hours:g} h, "
            f"window {config.window_hours:g} h ([popularity])."
        )
    best = sorted(clock.candidates, key=lambda r: -r["hit_rate"])[:5]
    others = "; ".join(
        f"{r['half_life_hours']:g} h / {r['window_hours']:g} h / CTR cap {r['ctr_cap']:g}: {r['hit_rate']:.3f}"
        for r in best
    )
    return (
        f"Ranking clock: half-life {clock.half_life_hours:g} h, window {clock.window_hours:g} h, CTR cap "
        f"{clock.ctr_cap:g}: its top "
        f"{clock.k} held a clicked article in {clock.hit_rate:.1%} of {clock.held_clicks:,} held-back clicked "
        f"impressions (replayed in time order). Best candidates: {others}."
    )


def _store(result: TrainingResult, root: Path, clock: RankingClock | None = None) -> list[str]:
    stored = []
    if clock is not None:
        write_json_atomic(root / CLOCK_FILE, clock.to_json())
        stored.append(CLOCK_FILE)
    else:
        (root / CLOCK_FILE).unlink(missing_ok=True)  # too little data now: the configured clock serves
    if result.coreads.neighbours:
        write_json_atomic(root / COREADS_FILE, result.coreads.to_json())
        stored.append(COREADS_FILE)
    if result.ranker is not None:
        result.ranker.save(root)
        stored.append(RANKER_FILE)
    else:
        (root / RANKER_FILE).unlink(missing_ok=True)  # too little data now: the hand-set blend serves
    return stored


def _table(result: TrainingResult) -> tuple[list[dict], list[str]]:
    held = result.report.get("held_out", {}).get("auc", {})
    importance = result.report.get("importance", {})
    rows = []
    for name, value in sorted(held.items(), key=lambda item: -np.nan_to_num(item[1], nan=0.0)):
        label = BASELINES.get(name, "")
        rows.append(
            {
                "signal": name,
                "auc": round(float(value), 4),
                "importance": round(importance.get(name, float("nan")), 4) if name in importance else "",
                "baseline": label,
            }
        )
    return rows, ["signal", "auc", "importance", "baseline"]
