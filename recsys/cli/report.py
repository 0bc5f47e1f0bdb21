"""``recsys report online|experiment``: what the served boxes earned, and which variant of an experiment wins,
read back from the served-list log."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import typer

from recsys.archive.store import NO_TIME
from recsys.cli.common import EventsOption, IndexOption, JsonOption, offline, print_json, settings_of
from recsys.evaluation.report import text_table
from recsys.feedback.experiment import Experiment, experiment_report
from recsys.feedback.report import GROUPINGS, OnlineReport, online_report
from recsys.lists.base import epoch
from recsys.service import Recommender
from recsys.signals.store import open_event_store
from recsys.types import RecsysError

BY_HELP = f"Group by {' | '.join(GROUPINGS)} (repeatable)."
report_app = typer.Typer(rich_markup_mode=None, help="Reports on what was served.", no_args_is_help=True)


@report_app.command("online")
def online(
    ctx: typer.Context,
    index: str = IndexOption,
    events: str = EventsOption,
    since: float = typer.Option(7.0, "--since", help="Days back from now (or from --until)."),
    until: str = typer.Option(None, "--until", help="End of the window (ISO 8601 or epoch seconds; default now)."),
    by: list[str] = typer.Option(["box"], "--by", help=BY_HELP),
    as_json: bool = JsonOption,
) -> None:
    """Lists served, clicks and CTR (share of lists clicked, with a 95% interval) per box, variant or day."""
    end = time.time() if until is None else float(epoch(until))
    settings = offline(settings_of(ctx, events))
    with Recommender.open(index, settings) as rec:
        view = rec.view

        def published(ids: Sequence[str]) -> dict[str, float]:
            rows = view.store.rows_of(ids)
            times = np.asarray(view.rows["published"])
            return {a: float(times[r]) for a, r in rows.items() if times[r] != NO_TIME}

        store = open_event_store(index, settings.events)
        try:
            report = online_report(store, end - since * 86_400.0, end, tuple(by), published)
        finally:
            store.close()
    if as_json:
        print_json(report.to_dict())
        return
    print_report(report)


def print_report(report: OnlineReport) -> None:
    window = f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(report.since))} .. "
    window += time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report.until))
    typer.echo(f"Served lists and their clicks, {window}\n")
    rows = [*report.rows, *([report.totals] if report.totals else [])]
    figures = ["lists", "clicked_lists", "clicks", "ctr", "95% interval", "articles", "median age", "explored"]
    columns = [*report.by, *figures]
    table = []
    for row in rows:
        line = {g: getattr(row, g) or "(all)" for g in report.by}
        line.update(
            lists=row.lists,
            clicked_lists=row.clicked_lists,
            clicks=row.clicks,
            ctr=f"{row.ctr:.4f}",
            **{"95% interval": f"{row.ctr_low:.4f} .. {row.ctr_high:.4f}"},
            articles=row.articles_shown,
            **{"median age": "-" if row.median_age_hours is None else f"{row.median_age_hours:.1f} h"},
            explored=f"{row.explored_clicks}/{row.explored_lists}" if row.explored_lists else "-",
        )
        table.append(line)
    typer.echo(text_table(table, columns) if table else "  (no lists)")
    unattributed = report.unattributed_clicks
    typer.echo(f"\nunattributed clicks (naming no recorded list, or an article not in it): {unattributed:,}")
    typer.echo("ctr: share of lists with at least one click; clicks: every (list, article) clicked, once;")
    typer.echo("explored: clicks / lists on the slot given to a new article ([explore])")
    for note in report.notes:
        typer.echo(f"note: {note}")


@report_app.command("experiment")
def experiment(
    ctx: typer.Context,
    index: str = IndexOption,
    events: str = EventsOption,
    since: float = typer.Option(30.0, "--since", help="Days back from now."),
    box: str = typer.Option(None, "--box", help="Only this box's lists (related, ranking, recommendation)."),
    as_json: bool = JsonOption,
) -> None:
    """The experiment in the current configuration: per variant lists, clicks and CTR (A/B) or wins, losses
    and ties (interleaving), the winner, its p-value and how many more lists a decision would need."""
    settings = offline(settings_of(ctx, events))
    configured = Experiment.from_settings(settings)
    if configured is None:
        raise RecsysError(
            "no experiment configured: add an [experiment] section with a name, a mode and two variants "
            "(see README, Measuring the boxes online)"
        )
    store = open_event_store(index, settings.events)
    try:
        now = time.time()
        result = experiment_report(store, configured, now - since * 86_400.0, now, box)
    finally:
        store.close()
    if as_json:
        print_json(result)
        return
    typer.echo(f"Experiment {result['experiment']!r} ({result['mode']})\n")
    if configured.mode == "ab":
        columns = ["variant", "lists", "clicked_lists", "ctr"]
    else:
        columns = ["variant", "lists", "wins", "losses", "ties"]
    rows = [{**v, "ctr": f"{v['ctr']:.4f}"} for v in result["variants"]]
    typer.echo(text_table(rows, columns))
    verdict = result["winner"] or "none yet"
    typer.echo(f"\nwinner: {verdict} (p = {result['p_value']:.4g})")
    more = result["more_lists_needed"]
    if result["winner"] is None:
        typer.echo(
            "a decision needs about "
            + ("an unbounded number of more lists (no difference seen)" if more is None else f"{more:,} more lists")
        )
