"""``recsys eval related|impressions|recommend``: offline evaluation runs with baselines and sweeps."""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from recsys.archive.indexer import Indexer
from recsys.cli.common import EventsOption, offline, settings_of
from recsys.cli.train import article_lookup
from recsys.config import Settings
from recsys.evaluation.impressions import (
    METRICS,
    BlendScorer,
    ContentScorer,
    ImpressionScorer,
    LearnedScorer,
    PopularityScorer,
    RandomScorer,
    SmoothedCTRScorer,
    replay,
    text_coverage,
    with_text_only,
)
from recsys.evaluation.recommend import (
    evaluate_recommend,
    make_readers,
    mean_profile_recommender,
    random_recommender,
    reading_sequences,
    recsys_recommender,
)
from recsys.evaluation.related import default_systems, evaluate_related, label_map, recsys_system
from recsys.evaluation.report import RUNS_DIR, Run, Sweep, markdown_table, parse_sweep, text_table
from recsys.ingest.articles import read_articles
from recsys.ingest.events import read_impressions
from recsys.learning.training import ArticleLookup, in_time_order
from recsys.service import Recommender
from recsys.signals.records import Impression
from recsys.types import InputProblem, RecsysError

eval_app = typer.Typer(
    rich_markup_mode=None, help="Offline evaluation on labelled articles or logged impressions.", no_args_is_help=True
)

OutOption = typer.Option(None, "--out", help="Run folder (default: a new runs/<time>-<kind>/).")
SweepOption = typer.Option(None, "--sweep", help="section.key=v1,v2,... re-run per value (repeatable).")
EvalIndexOption = typer.Option(
    None, "--index", "-i", help="Index to use/build for the articles (default: a cache under runs/index-cache/)."
)
SeedOption = typer.Option(0, "--seed", help="Seed for samples and the random baseline.")


def _index_for(paths: list[str], index: str | None, settings: Settings, fmt: str | None = None) -> Path:
    """An index holding exactly these files; a cached one is reused (unchanged texts embed nothing)."""
    if index is None:
        key = hashlib.sha1("\0".join(sorted(str(Path(p).resolve()) for p in paths)).encode()).hexdigest()[:12]
        index = str(RUNS_DIR / "index-cache" / key)
    report = Indexer(index, settings).build(paths, fmt=fmt)
    if report.problems:
        typer.echo(f"{len(report.problems)} bad record(s) skipped while indexing, e.g. {report.problems[0]}", err=True)
    return Path(index)


def _sweeps(values: list[str] | None, settings: Settings) -> list[Sweep]:
    return [parse_sweep(v, settings) for v in values or []]


def _plot_sweep(run: Run, sweep: Sweep, rows: list[dict], metrics: list[str]) -> None:
    def draw(axes: Any) -> None:  # a matplotlib Axes
        xs = list(range(len(rows)))
        for metric in metrics:
            axes.plot(xs, [r[metric] for r in rows], marker="o", label=metric)
        axes.set_xticks(xs, [str(r[sweep.name]) for r in rows])
        axes.set_xlabel(sweep.name)
        axes.set_ylabel("metric")
        axes.set_title(f"sweep of {sweep.name}")
        axes.legend()
        axes.grid(alpha=0.3)

    run.plot(f"sweep-{sweep.name.replace('.', '-')}", draw)


def _finish(run: Run, title: str, settings: Settings, main_table: str) -> None:
    folder = run.write(title, settings)
    typer.echo(main_table)
    typer.echo(f"\nwrote {folder}/report.md, metrics.json and {len(run.plots)} plot(s)")


@eval_app.command("related")
def eval_related(
    ctx: typer.Context,
    articles: list[str] = typer.Argument(..., help="Article files or folders (any format recsys reads)."),
    label: str = typer.Option(..., "--label", help="Field whose equality means 'same topic' (e.g. category)."),
    k: int = typer.Option(10, "-k", min=1, max=100),
    sample: int = typer.Option(None, "--sample", min=1, help="Evaluate a seeded sample of this many articles."),
    seed: int = SeedOption,
    fmt: str = typer.Option(None, "--format", "-f", help="Input format (default: from the extension)."),
    index: str = EvalIndexOption,
    events: str = EventsOption,
    sweep: list[str] = SweepOption,
    out: str = OutOption,
) -> None:
    """Related vs random, lexical (TF-IDF), plain dense kNN: precision, nDCG, duplicates, diversity, coverage."""
    run = Run("eval-related", Path(out) if out else None)  # started now: its timer covers the whole run
    settings = offline(settings_of(ctx, events))
    sweeps = _sweeps(sweep, settings)
    read = read_articles(articles, fmt)
    labels = label_map(read.articles, label)
    if not labels:
        raise typer.BadParameter(f"no article has a value for {label!r}", param_hint="--label")
    root = _index_for(articles, index, settings, fmt)
    rec = Recommender.open(root, settings)
    report = evaluate_related(
        rec, labels, k=k, sample=sample, seed=seed, systems=default_systems(rec, k, seed), label_name=label
    )
    columns = [
        "system",
        "precision",
        "ndcg",
        "duplicate_rate",
        "diversity",
        "coverage",
        "median_age_gap_days",
        "ms_per_query",
    ]
    rows = [s.to_dict() for s in report.scores]
    run.metrics.update(report.to_dict())
    run.add(
        "Data",
        f"{len(read.articles):,} articles read from {', '.join(articles)} ({len(read.problems)} bad records skipped); "
        f"{report.articles:,} indexed with a `{label}`, {report.labels} distinct values; {report.dated:,} dated. "
        f"Queries: {report.queries:,}" + (f" (seeded sample, seed {seed})" if sample else "") + f"; k = {k}.",
    )
    run.add(f"Related lists, same `{label}` = relevant", markdown_table(rows, columns))

    def draw(axes: Any) -> None:
        for score in report.scores:
            axes.hist(score.per_query_precision, bins=np.linspace(0, 1, 11), alpha=0.5, label=score.system)
        axes.set_xlabel(f"precision@{k} per article")
        axes.set_ylabel("articles")
        axes.legend()

    run.plot("precision-distribution", draw)
    for item in sweeps:
        sweep_rows = []
        for value, variant in item.settings(settings):
            other = Recommender.open(root, variant)
            score = evaluate_related(
                other, labels, k=k, sample=sample, seed=seed, systems={"recsys": recsys_system(other, k)}
            ).scores[0]
            sweep_rows.append({item.name: value, **score.to_dict()})
        run.add(f"Sweep of {item.name}", markdown_table(sweep_rows, [item.name, *columns[1:]]))
        run.metrics.setdefault("sweeps", {})[item.name] = sweep_rows
        _plot_sweep(run, item, sweep_rows, ["precision", "ndcg", "diversity"])
    _finish(run, f"Related on {label}", settings, text_table(rows, columns))


def _impressions(behaviors: str, limit: int | None, seed: int) -> tuple[list[Impression], list[InputProblem]]:
    problems: list[InputProblem] = []
    impressions = read_impressions(Path(behaviors), problems)
    if limit is not None and limit < len(impressions):
        picks = np.random.default_rng(seed).choice(len(impressions), limit, replace=False)
        impressions = [impressions[i] for i in sorted(picks)]
    return impressions, problems


def _mind_run(
    ctx: typer.Context,
    events: str | None,
    sweep: list[str] | None,
    behaviors: str,
    limit: int | None,
    seed: int,
    news: str,
    index: str | None,
) -> tuple[Settings, list[Sweep], list[Impression], list[InputProblem], Recommender]:
    """What both MIND evaluations start from: settings, checked sweeps, impressions, the news index."""
    settings = offline(settings_of(ctx, events))
    sweeps = _sweeps(sweep, settings)
    impressions, problems = _impressions(behaviors, limit, seed)
    rec = Recommender.open(_index_for([news], index, settings, "mind"), settings)
    return settings, sweeps, impressions, problems, rec


@eval_app.command("impressions")
def eval_impressions(
    ctx: typer.Context,
    news: str = typer.Option(..., "--news", help="MIND news.tsv (article text)."),
    behaviors: str = typer.Option(..., "--behaviors", help="MIND behaviors.tsv (impressions)."),
    limit: int = typer.Option(None, "--limit", min=1, help="A seeded sample of this many impressions."),
    seed: int = SeedOption,
    index: str = EvalIndexOption,
    events: str = EventsOption,
    sweep: list[str] = SweepOption,
    out: str = OutOption,
) -> None:
    """Replay impressions in time order: baselines, each signal, and `recsys` (what Recommendation serves)."""
    run = Run("eval-impressions", Path(out) if out else None)
    settings, sweeps, impressions, problems, rec = _mind_run(ctx, events, sweep, behaviors, limit, seed, news, index)
    timed = [i for i in impressions if math.isfinite(i.ts)]
    untimed = [i for i in impressions if not math.isfinite(i.ts)]
    if timed:
        replayed, order_note = timed, "in time order"
    else:  # no times at all: file order stands in for time, and ages are unknown
        replayed, _ = in_time_order(untimed)
        untimed, order_note = [], "in file order (the log has no times; article ages unknown)"
    content = ContentScorer(rec, settings.recommend)
    content.prepare(impressions)
    coverage = text_coverage(impressions, content.rows)
    lookup = article_lookup(rec, replayed) if rec.learned_ranker() is not None else None
    served, served_note = _served_scorer(rec, lookup, content, settings, bool(timed))
    scorers: list[ImpressionScorer] = [
        RandomScorer(seed),
        SmoothedCTRScorer(settings.popularity.ctr_prior, settings.popularity.ctr_prior_strength),
        PopularityScorer(settings.popularity),
        content,
    ]
    if isinstance(served, LearnedScorer):
        scorers.append(BlendScorer(content, settings))
    scorers.append(served)
    result = replay(replayed, scorers)
    if result.scored == 0:
        raise RecsysError(
            f"no impression in {behaviors} has both a clicked and an unclicked candidate, so nothing can be scored; "
            "check that the file holds impressions with labels (N123-1 N456-0)"
        )
    rows = [{"scorer": name, **values} for name, values in result.metrics.items()]
    run.metrics.update(
        {"replay": result.to_dict(), "text_coverage": coverage, "bad_rows": len(problems), "served": served_note}
    )
    run.add(
        "Data",
        f"{len(impressions):,} impressions from {behaviors} ({len(problems)} bad rows skipped), replayed "
        f"{order_note}: {result.scored:,} scored ({result.skipped_one_class} without both a click and a non-click "
        f"skipped); articles from {news}.\n\n"
        + "\n".join(f"- {name}: {value:,}" for name, value in coverage.items())
        + f"\n\nThe row `recsys` is what Recommendation serves: {served_note}. A candidate without text gets its "
        "impression's mean content score; a reader with no known history gets equal content scores. Popularity "
        "and the learned features use only impressions earlier than the one scored.",
    )
    run.add("Per-impression metrics (MIND protocol)", markdown_table(rows, ["scorer", *METRICS]))
    if untimed:
        alone = replay(untimed, [RandomScorer(seed), content])
        run.metrics["untimed_content_only"] = alone.to_dict()
        run.add(
            "Rows without a time: content only",
            f"{len(untimed):,} rows have no time, so nothing time-respecting can score them; they are scored by "
            "content match alone and are not part of the table above.\n\n"
            + markdown_table([{"scorer": n, **v} for n, v in alone.metrics.items()], ["scorer", *METRICS]),
        )
    texted = with_text_only(replayed, content.rows)
    fresh: list[ImpressionScorer] = [RandomScorer(seed), PopularityScorer(settings.popularity), content]
    fresh.append(_served_scorer(rec, lookup, content, settings, bool(timed))[0])  # texted ⊂ replayed
    text_result = replay(texted, fresh)
    text_rows = [{"scorer": name, **values} for name, values in text_result.metrics.items()]
    run.metrics["text_only_replay"] = text_result.to_dict()
    run.add(
        "Candidates with text only",
        f"The same replay with each impression cut to its candidates that have article text: {text_result.scored:,} "
        "impressions keep both a click and a non-click. This is where content match can be judged.\n\n"
        + markdown_table(text_rows, ["scorer", *METRICS]),
    )

    def draw(axes: Any) -> None:
        clicked, other = result.distributions[served.name]
        bins = np.linspace(min(clicked + other, default=0), max(clicked + other, default=1), 40)
        axes.hist(other, bins=bins, alpha=0.5, density=True, label="not clicked")
        axes.hist(clicked, bins=bins, alpha=0.5, density=True, label="clicked")
        axes.set_xlabel("recsys score")
        axes.set_ylabel("density")
        axes.set_title("score distribution, every tenth impression")
        axes.legend()

    run.plot("recsys-score-distribution", draw)
    for item in sweeps:
        sweep_rows = []
        for value, variant in item.settings(settings):
            blend = BlendScorer(content, variant)
            sweep_rows.append({item.name: value, **replay(replayed, [blend]).metrics[blend.name]})
        run.add(f"Sweep of {item.name} (hand-set blend)", markdown_table(sweep_rows, [item.name, *METRICS]))
        run.metrics.setdefault("sweeps", {})[item.name] = sweep_rows
        _plot_sweep(run, item, sweep_rows, list(METRICS))
    _finish(run, "Impression replay", settings, text_table(rows, ["scorer", *METRICS]))


def _served_scorer(
    rec: Recommender, lookup: ArticleLookup | None, content: ContentScorer, settings: Settings, timed: bool
) -> tuple[ImpressionScorer, str]:
    """The scorer for the row `recsys`: the stored ranker if the index has one (``lookup`` then describes the
    replayed articles), else the hand-set blend."""
    ranker = rec.learned_ranker()
    if ranker is None or lookup is None:
        blend = BlendScorer(content, settings)
        blend.name = "recsys"
        return blend, "the hand-set blend (this index has no ranker.json; `recsys train` fits one)"
    fitted = ranker.meta.get("fitted_on", "")
    return LearnedScorer(ranker, lookup, settings, timed), f"the learned ranker stored in the index ({fitted})"


@eval_app.command("recommend")
def eval_recommend(
    ctx: typer.Context,
    news: str = typer.Option(..., "--news", help="MIND news.tsv (article text)."),
    behaviors: str = typer.Option(..., "--behaviors", help="MIND behaviors.tsv (reading histories and clicks)."),
    k: int = typer.Option(10, "-k", min=1, max=100),
    holdout: int = typer.Option(1, "--holdout", min=1, help="Last reads held out per reader."),
    min_history: int = typer.Option(2, "--min-history", min=1, help="Indexed reads a reader needs before them."),
    limit: int = typer.Option(None, "--limit", min=1, help="A seeded sample of this many readers."),
    seed: int = SeedOption,
    index: str = EvalIndexOption,
    events: str = EventsOption,
    sweep: list[str] = SweepOption,
    out: str = OutOption,
) -> None:
    """Hold out each reader's last read(s); recall@k and nDCG@k of Recommendation vs baselines."""
    run = Run("eval-recommend", Path(out) if out else None)
    settings, sweeps, impressions, problems, rec = _mind_run(ctx, events, sweep, behaviors, None, seed, news, index)
    indexed = rec.view.store.rows_of({a for i in impressions for a in (*i.history, *i.candidates)})
    sequences = reading_sequences(impressions)
    readers = make_readers(sequences, indexed, holdout, min_history, limit, seed)
    systems = {
        "random": random_recommender(rec, k, seed),
        "mean-profile kNN": mean_profile_recommender(rec, k),
        "recsys": recsys_recommender(rec, k),
    }
    rows = evaluate_recommend(rec, readers, k, systems)
    columns = ["system", f"recall@{k}", f"ndcg@{k}", "diversity", "coverage", "ms_per_query"]
    run.metrics.update({"readers": len(readers), "users": len(sequences), "k": k, "holdout": holdout, "systems": rows})
    run.add(
        "Data",
        f"{len(sequences):,} readers in {behaviors} ({len(problems)} bad rows skipped); {len(readers):,} have at least "
        f"{min_history} indexed reads before their last {holdout} indexed one(s)"
        + (f" (seeded sample of {limit})" if limit else "")
        + f". Articles from {news}. The recsys index has no events here, so popularity is neutral.",
    )
    run.add("Held-out reads", markdown_table(rows, columns))
    for item in sweeps:
        sweep_rows = []
        for value, variant in item.settings(settings):
            other = Recommender.open(rec.layout.root, variant)
            score = evaluate_recommend(other, readers, k, {"recsys": recsys_recommender(other, k)})[0]
            sweep_rows.append({item.name: value, **score})
        run.add(f"Sweep of {item.name}", markdown_table(sweep_rows, [item.name, *columns[1:]]))
        run.metrics.setdefault("sweeps", {})[item.name] = sweep_rows
        _plot_sweep(run, item, sweep_rows, [f"recall@{k}", f"ndcg@{k}", "diversity"])
    _finish(run, "Recommendation hold-out", settings, text_table(rows, columns))


@eval_app.command("served")
def eval_served(
    ctx: typer.Context,
    news: str = typer.Option(..., "--news", help="MIND news.tsv (the catalogue)."),
    behaviors: str = typer.Option(..., "--behaviors", help="MIND behaviors.tsv: the impressions replayed."),
    history_from: str = typer.Option(
        None, "--history-from", help="A behaviors.tsv of earlier days, ingested before the replay starts."
    ),
    test_days: float = typer.Option(
        None,
        "--test-days",
        min=0.01,
        help="Replay only the last DAYS of --behaviors, ingesting the earlier part first.",
    ),
    pages: str = typer.Option(None, "--pages", help="pages.tsv: the article being read per impression (page box)."),
    sample: int = typer.Option(2000, "--sample", min=1, help="Impressions with a click, sampled (seeded)."),
    k: int = typer.Option(10, "-k", min=1, max=100),
    seed: int = SeedOption,
    index: str = EvalIndexOption,
    out: str = OutOption,
) -> None:
    """Replay logged impressions in time order through the served boxes: hit@k, MRR, nDCG@k per box and for the
    page, against naive lists built from the same events at the same moment (most clicked lately, newest, co-reads).

    The replay writes its events into a copy of the index (the original's events are not touched)."""
    import shutil
    import tempfile

    from recsys.evaluation.served import read_pages, replay_served

    run = Run("eval-served", Path(out) if out else None)
    settings = offline(settings_of(ctx, None)).replace("popularity", refresh_seconds=0.0)
    problems: list[InputProblem] = []
    replayed = [i for i in read_impressions(Path(behaviors), problems) if math.isfinite(i.ts)]
    prelude = [i for i in read_impressions(Path(history_from), problems) if math.isfinite(i.ts)] if history_from else []
    if test_days is not None and replayed:
        cut = max(i.ts for i in replayed) - test_days * 86400.0
        prelude += [i for i in replayed if i.ts < cut]
        replayed = [i for i in replayed if i.ts >= cut]
    if not replayed:
        raise RecsysError(f"{behaviors}: no timed impressions to replay (MIND rows need their time column)")
    built = _index_for([news], index, settings, "mind")
    with tempfile.TemporaryDirectory(prefix="recsys-served-") as scratch:
        root = Path(scratch) / "index"
        shutil.copytree(built, root, ignore=shutil.ignore_patterns("events.sqlite*"))
        with Recommender.open(root, settings) as rec:
            report = replay_served(rec, prelude, replayed, read_pages(pages) if pages else {}, sample, k, seed)
    data = report.to_dict()
    run.metrics.update(data)
    span = f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(min(i.ts for i in replayed)))} to " + time.strftime(
        "%Y-%m-%d %H:%M UTC", time.gmtime(max(i.ts for i in replayed))
    )
    run.add(
        "Data",
        f"{len(prelude):,} impressions ingested before the replay; {len(replayed):,} replayed ({span}), "
        f"{report.sampled:,} of them sampled (with a click; seed {seed}); {len(problems)} bad rows skipped. "
        f"Replay {report.seconds:.0f} s; the served calls per sampled impression p50 {data['query_ms_p50']} ms, "
        f"p99 {data['query_ms_p99']} ms. A hit: a clicked article is in the list.",
    )
    columns = ["system", f"hit@{k}", "mrr", f"ndcg@{k}", "impressions"]
    titles = {"recommendation": "Recommendation", "ranking": "Ranking", "page": "The page (where the article is known)"}
    for box, title in titles.items():
        if box in report.boxes:
            run.add(title, markdown_table(report.table(box), columns))
            typer.echo(f"\n{title}\n" + text_table(report.table(box), columns))
    for which in ("hour", "history"):
        rows = report.breakdown(which)
        run.add(
            f"By {'hour of day (UTC)' if which == 'hour' else 'history length'}",
            markdown_table(rows, [which, *columns]),
        )

        def draw(axes: Any, rows: list[dict[str, Any]] = rows, which: str = which) -> None:
            for name in sorted({r["system"] for r in rows}):
                mine = [r for r in rows if r["system"] == name]
                axes.plot([r[which] for r in mine], [r[f"hit@{k}"] for r in mine], marker="o", label=name)
            axes.set_xlabel("hour of day (UTC)" if which == "hour" else "reads in the history")
            axes.set_ylabel(f"hit@{k}")
            axes.legend()

        run.plot(f"hit_by_{which}", draw)
    folder = run.write("Served boxes replayed in time order", settings)
    typer.echo(f"\nwrote {folder}/report.md, metrics.json and {len(run.plots)} plot(s)")
