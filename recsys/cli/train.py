"""``recsys train``: fit the learned ranker and the co-read table from the site's own logged impressions."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import typer

from recsys.archive.layout import CLOCK_FILE, write_json_atomic
from recsys.archive.store import NO_TIME
from recsys.cli.common import EXIT_SKIPPED, EventsOption, IndexOption, JsonOption, offline, print_json, settings_of
from recsys.config import Settings
from recsys.evaluation.report import Run, markdown_table, text_table
from recsys.feedback.served import served_impressions
from recsys.ingest.events import read_impressions
from recsys.learning.clock import MIN_HELD_CLICKS, OrderChoice, RankingClock, choose_clock, choose_order
from recsys.learning.history import better_or_equal, keep_current, list_models, rollback
from recsys.learning.ranker import RANKER_FILE, LearnedRanker
from recsys.learning.training import ArticleLookup, TrainingResult, coreads_from_reads, train
from recsys.service import Recommender
from recsys.signals.coreads import COREADS_FILE
from recsys.signals.records import Impression
from recsys.signals.store import open_event_store
from recsys.types import InputProblem, RecsysError

BASELINES = {"popularity": "recsys popularity", "ctr_all": "smoothed CTR", "content_max": "content match"}


def article_lookup(rec: Recommender, impressions: list[Impression]) -> ArticleLookup:
    """What the index knows of the articles the impressions mention."""
    view = rec.view
    # sorted: the content search of training's pools walks these in order, and a set's order changes with every
    # process's string hashes (the same log must fit the same models)
    rows = view.store.rows_of(sorted({a for i in impressions for a in (*i.candidates, *i.history)}))
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
    every: float = typer.Option(
        None, "--every", min=0.01, help="Hours: retrain on the latest logs this often, until stopped (guarded)."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Fit how Recommendation mixes its signals and how fast Ranking forgets, from logged impressions (or, without
    --behaviors, the events and served lists in the index); store both in the index (ranker.json, clock.json,
    coreads.json). A new model replaces the serving one only if it does at least as well on the latest
    held-back days; replaced ones are kept (`recsys model list`, `recsys model rollback`)."""
    if every is None:
        _train_once(ctx, index, events, behaviors, test_days, out, as_json)
        return
    while True:  # on a schedule a run with bad rows (exit 3) or an error says so and the next run comes anyway
        try:
            _train_once(ctx, index, events, behaviors, test_days, None, as_json)
        except typer.Exit as exc:
            if exc.exit_code != EXIT_SKIPPED:
                raise
        except RecsysError as exc:
            typer.echo(f"error: {exc}", err=True)
        typer.echo(f"next training in {every:g} h", err=True)
        time.sleep(every * 3600.0)


def _train_once(
    ctx: typer.Context,
    index: str,
    events: str | None,
    behaviors: list[str] | None,
    test_days: float,
    out: str | None,
    as_json: bool,
) -> None:
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
    imported = _import_histories(index, settings, impressions) if behaviors else 0
    result = train(impressions, lookup, settings.popularity, settings.recommend, test_days)
    if not behaviors:  # every stored read, not only the impressions' histories, makes the co-read table
        result.coreads = coreads_from_reads(store.reads_by_reader())
        result.report["coread_articles"] = len(result.coreads.neighbours)
    clock = _clock(impressions, test_days, settings, result, lookup)
    promote = _guard(result, Path(index))
    if clock is not None and not promote:
        clock = _serving_order(clock, Path(index))
    stored = _store(result, Path(index), clock, promote)
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
    run.add("Model", f"{report['model']}; stored: {', '.join(stored) or 'nothing'}. {report.get('guard', '')}")
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
        if report.get("guard"):
            typer.echo(report["guard"])
        if rows:
            typer.echo(f"{report.get('split', '')}\n")
            typer.echo(text_table(rows, columns))
        typer.echo(f"\n{_clock_text(clock, settings)}")
        typer.echo(f"\nstored in {index}: {', '.join(stored) or 'nothing'}; report in {folder}/report.md")
        if behaviors:
            typer.echo(
                f"readers' histories imported: {imported:,} reads (`recommend --user ID` knows them; the impressions "
                "themselves are not counted as events: `recsys events ingest BEHAVIORS` does that)"
            )
    if problems:
        raise typer.Exit(EXIT_SKIPPED)


def _import_histories(index: str, settings: Settings, impressions: list[Impression]) -> int:
    """The readers' histories of the impressions trained on, into the events store (as ``events ingest`` stores
    them: reads a second apart before the row's time), so ``recommend --user`` knows who read what."""
    store = open_event_store(index, settings.events)
    latest: dict[str, Impression] = {}
    for impression in impressions:
        if impression.user_id and impression.history:
            if impression.user_id not in latest or impression.ts > latest[impression.user_id].ts:
                latest[impression.user_id] = impression
    rows = [
        (i.user_id, article_id, i.ts - (len(i.history) - n))
        for i in latest.values()
        for n, article_id in enumerate(i.history)
    ]
    for start in range(0, len(rows), 50_000):
        store.add([], rows[start : start + 50_000])
    return len(rows)


model_app = typer.Typer(rich_markup_mode=None, help="The learned rankers kept in an index.", no_args_is_help=True)


@model_app.command("list")
def model_list(index: str = IndexOption, as_json: bool = JsonOption) -> None:
    """The serving ranker and the ones it replaced, newest first, with what each was fitted on."""
    models = list_models(index)
    if as_json:
        print_json([{**m.__dict__, "path": str(m.path)} for m in models])
        return
    if not models:
        typer.echo("no trained ranker in this index (run `recsys train`)")
    for m in models:
        auc = "-" if m.held_out_auc is None else f"{m.held_out_auc:.4f}"
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(m.saved_at))
        typer.echo(f"{'*' if m.current else ' '} {m.model_id}  {when}  held-back AUC {auc}  {m.fitted_on}")


@model_app.command("rollback")
def model_rollback(
    model_id: str = typer.Argument(None, help="A kept model's id (default: the newest kept one)."),
    index: str = IndexOption,
) -> None:
    """Serve a kept ranker again (running services pick it up within refresh_seconds); the serving one is kept."""
    chosen = rollback(index, model_id)
    typer.echo(f"serving {chosen.model_id} again (fitted {chosen.fitted_on or 'on an earlier log'})")


def _clock(
    impressions: list[Impression], test_days: float, settings: Settings, result: TrainingResult, lookup: ArticleLookup
) -> RankingClock | None:
    """The Ranking clock that caught the most clicks on the held-back days (None: too few to choose), with the
    order of its leaders (the clock's, the box model's or a Ranking model's) judged on the same days with models
    fitted before them; a chosen Ranking model joins ``result.ranker`` (stored in ranker.json with the others)."""
    timed = [i for i in impressions if math.isfinite(i.ts)]
    if not timed:
        return None
    held_from = max(i.ts for i in timed) - test_days * 86400.0
    clock = choose_clock(timed, held_from, settings.popularity)
    if clock is None:
        return None
    # judged only where the validated models had seen nothing (a short log holds back its last quarter instead)
    judged_from = max(held_from, result.fitted_before)
    choice: OrderChoice = choose_order(timed, judged_from, clock, result.validated, lookup, settings.popularity)
    if result.ranker is not None:
        result.ranker = result.ranker.with_ranking(choice.ranking_text)
        if choice.ranking_text is not None:
            rates = choice.clock.order_hit_rates
            result.ranker.meta["ranking_model"] = {"rounds": choice.rounds, "order_hit_rates": rates}
    return choice.clock


def _serving_order(clock: RankingClock, root: Path) -> RankingClock:
    """When the serving model stays (the guard), the order judged for it earlier stays too: the one just judged
    was the new model's (a clock.json from before the order was judged, or none: the box model's, as before)."""
    try:
        previous = RankingClock.load(root)
    except RecsysError:
        previous = None
    order, rates = ("box_model", {}) if previous is None else (previous.order, previous.order_hit_rates)
    return dataclasses.replace(clock, order=order, order_hit_rates=rates)


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
    text = (
        f"Ranking clock: half-life {clock.half_life_hours:g} h, window {clock.window_hours:g} h, CTR cap "
        f"{clock.ctr_cap:g}: its top "
        f"{clock.k} held a clicked article in {clock.hit_rate:.1%} of {clock.held_clicks:,} held-back clicked "
        f"impressions (replayed in time order). Best candidates: {others}."
    )
    rates = clock.order_hit_rates
    if len(rates) > 1:
        names = {"clock": "the clock", "box_model": "the box model", "ranking_model": "the Ranking model"}
        each = ", ".join(f"by {names.get(o, o)} {rate:.1%}" for o, rate in rates.items())
        text += (
            f" Its leaders' top {clock.k} (models fitted before those days) caught a next click {each}: the "
            f"Ranking box orders them by {names.get(clock.order, clock.order)}."
        )
    return text


def _guard(result: TrainingResult, root: Path) -> bool:
    """Whether the new model replaces the serving one: both scored on the new training's held-back days
    (recsys/learning/history.py); the verdict and figures go in the report."""
    if result.ranker is None:
        return True
    try:
        current = LearnedRanker.load(root)
    except RecsysError:
        current = None  # a damaged current model is replaced
    promote, figures = better_or_equal(result.ranker, current, result.held)
    if "current" in figures:
        outcome = "the new model replaces it" if promote else "the serving model stays (it did better)"
        result.report["guard"] = (
            f"guard: on the held-back days the new model scores AUC {figures['new']:.4f}, the serving one "
            f"{figures['current']:.4f}: {outcome}; earlier models: `recsys model list`"
        )
        result.report["guard_figures"] = figures
    return promote


def _store(result: TrainingResult, root: Path, clock: RankingClock | None = None, promote: bool = True) -> list[str]:
    stored = []
    if clock is not None:
        write_json_atomic(root / CLOCK_FILE, clock.to_json())
        stored.append(CLOCK_FILE)
    else:
        (root / CLOCK_FILE).unlink(missing_ok=True)  # too little data now: the configured clock serves
    if result.coreads.neighbours:
        write_json_atomic(root / COREADS_FILE, result.coreads.to_json())
        stored.append(COREADS_FILE)
    if result.ranker is not None and not promote:
        pass  # the serving model did better on the latest days: it stays
    elif result.ranker is not None:
        keep_current(root)  # the one it replaces stays available to `recsys model rollback`
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
