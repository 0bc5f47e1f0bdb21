"""``recsys events ingest``, ``recsys ranking``, ``recsys recommend``, ``recsys page``."""

from __future__ import annotations

from enum import StrEnum

import typer

from recsys.archive.layout import IndexLayout
from recsys.archive.version import VersionReader
from recsys.cli.common import (
    EXIT_SKIPPED,
    EventsOption,
    IndexOption,
    JsonOption,
    OnError,
    offline,
    print_hits,
    print_json,
    settings_of,
)
from recsys.ingest.events import EVENT_FORMATS
from recsys.service import Recommender
from recsys.signals.store import open_event_store

events_app = typer.Typer(
    rich_markup_mode=None, help="Reader events: views, clicks, impressions, reactions.", no_args_is_help=True
)
EventFormat = StrEnum("EventFormat", {name: name for name in EVENT_FORMATS})  # type: ignore[misc]
KOption = typer.Option(None, "-k", min=0, max=100, help="How many (default from config).")
HistoryOption = typer.Option(None, "--history", help="Read article ids, oldest first (comma-separated or repeated).")
UserOption = typer.Option(None, "--user", help="A user id whose stored reads make the history.")
NowOption = typer.Option(None, "--now", help="Pretend the query runs at this time (ISO 8601).")


def _history(values: list[str] | None) -> list[str]:
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]


@events_app.command("ingest")
def ingest(
    ctx: typer.Context,
    files: list[str] = typer.Argument(..., help="JSONL/CSV event files or MIND behaviors.tsv."),
    index: str = IndexOption,
    events: str = EventsOption,
    fmt: EventFormat = typer.Option(None, "--format", "-f", help="Event format (default: from the extension)."),
    on_error: OnError = typer.Option(
        OnError.skip, "--on-error", help="skip: report bad records, store the rest, exit 3. fail: store nothing."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Store events; the same file twice counts nothing twice."""
    view = VersionReader(IndexLayout(index).current())  # events belong to an index: fail early if there is none
    store = open_event_store(index, settings_of(ctx, events).events)
    try:
        report = store.ingest(
            files, None if fmt is None else str(fmt.value), on_error.value, lambda ids: set(view.store.rows_of(ids))
        )
    finally:
        view.close()
    for problem in report.problems:
        typer.echo(str(problem), err=True)
    if as_json:
        print_json(report.to_dict())
    else:
        held = ""
        if report.unindexed:
            held = (
                f"; {report.unindexed:,} of them for {report.unindexed_ids:,} id(s) not indexed: held, they count "
                "once those articles are indexed"
            )
        typer.echo(
            f"read {report.read:,} events: stored {report.stored:,}, already had {report.duplicates:,}{held}; "
            f"{report.history:,} history entries"
        )
    if report.problems:
        typer.echo(f"{len(report.problems)} bad record(s) skipped (exit code {EXIT_SKIPPED})", err=True)
        raise typer.Exit(EXIT_SKIPPED)


def ranking(
    ctx: typer.Context,
    k: int = KOption,
    index: str = IndexOption,
    events: str = EventsOption,
    category: list[str] = typer.Option(None, "--category", help="Only these categories (repeatable)."),
    window_hours: float = typer.Option(None, "--window-hours", help="Activity window (default from config)."),
    now: str = NowOption,
    as_json: bool = JsonOption,
) -> None:
    """What is popular now, from views, clicks and reactions."""
    with Recommender.open(index, offline(settings_of(ctx, events))) as rec:
        hits = rec.ranking(k, category=category or None, window_hours=window_hours, now=now)
    print_hits(hits, as_json, "" if as_json else "Popular now")


def recommend(
    ctx: typer.Context,
    history: list[str] = HistoryOption,
    user: str = UserOption,
    k: int = KOption,
    index: str = IndexOption,
    events: str = EventsOption,
    now: str = NowOption,
    as_json: bool = JsonOption,
) -> None:
    """Articles for a reader, from what they read (no history: what is popular)."""
    with Recommender.open(index, offline(settings_of(ctx, events))) as rec:
        hits = rec.recommend(_history(history), user_id=user, k=k, now=now)
    print_hits(hits, as_json, "" if as_json else "Recommended for you")


def page(
    ctx: typer.Context,
    article_id: str = typer.Argument(..., metavar="ID", help="The article being read."),
    history: list[str] = HistoryOption,
    user: str = UserOption,
    index: str = IndexOption,
    events: str = EventsOption,
    k_related: int = typer.Option(None, "--k-related", min=0, max=100, help="Related list length (default 10)."),
    k_ranking: int = typer.Option(None, "--k-ranking", min=0, max=100, help="Ranking list length (default 8)."),
    k_recommend: int = typer.Option(
        None, "--k-recommend", min=0, max=100, help="Recommendation list length (default 8)."
    ),
    now: str = NowOption,
    as_json: bool = JsonOption,
) -> None:
    """The three lists of one page view: Related, Ranking, Recommendation."""
    with Recommender.open(index, offline(settings_of(ctx, events))) as rec:
        result = rec.page(
            article_id,
            _history(history),
            user_id=user,
            k_related=k_related,
            k_ranking=k_ranking,
            k_recommend=k_recommend,
            now=now,
        )
        title = rec.article(article_id).title
    if as_json:
        print_json(result.to_dict())
        return
    typer.echo(f"{article_id}: {title}\n")
    print_hits(result.related, False, "Related")
    print_hits(result.ranking, False, "\nRanking")
    print_hits(result.recommendation, False, "\nRecommendation")
