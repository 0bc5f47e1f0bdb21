"""The ``recsys`` command. Thin: it parses, calls the library, prints.

One module per command group (``index``, ``lists``, ``query``, ``serve``, ``train``, ``evaluate``, ``report``,
``rules``); shared
options and printing in ``common``. On top of the house: it may import any recsys module.
"""

from __future__ import annotations

import sys
from typing import Any

import click
import typer
from typer.core import TyperGroup

from recsys.cli.common import State, app_state, fail
from recsys.cli.evaluate import eval_app
from recsys.cli.index import index_app
from recsys.cli.lists import events_app, page, ranking, recommend
from recsys.cli.query import config_app, demo, related
from recsys.cli.report import report_app
from recsys.cli.rules import rules_app
from recsys.cli.serve import serve
from recsys.cli.train import model_app, train_command
from recsys.types import RecsysError


class _Group(TyperGroup):
    """Turns library errors into one clear line on stderr and exit code 1, for every command."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RecsysError as exc:
            fail(str(exc))


app = typer.Typer(
    cls=_Group,
    rich_markup_mode=None,  # plain help: flags show no value placeholder
    name="recsys",
    help="Related-article, ranking and recommendation lists for news sites.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(index_app, name="index")
app.add_typer(events_app, name="events")
app.add_typer(eval_app, name="eval")
app.add_typer(config_app, name="config")
app.add_typer(report_app, name="report")
app.add_typer(model_app, name="model")
app.add_typer(rules_app, name="rules")
app.command()(related)
app.command()(ranking)
app.command()(recommend)
app.command()(page)
app.command()(demo)
app.command()(serve)
app.command("train")(train_command)


@app.callback()
def _root(
    ctx: typer.Context,
    config: str = typer.Option(None, "--config", help="TOML settings file (default: $RECSYS_CONFIG or ./recsys.toml)."),
) -> None:
    ctx.obj = State(config_path=config)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "app_state", "main"]
