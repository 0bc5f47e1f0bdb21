"""``recsys rules add|list|remove``: the editors' pins, blocks and boosts (recsys/archive/rules.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from recsys.archive.layout import IndexLayout
from recsys.archive.rules import RuleSet, add_rules, parse_rules, remove_rule
from recsys.cli.common import EXIT_FAILED, EXIT_SKIPPED, IndexOption, JsonOption
from recsys.types import RecsysError

rules_app = typer.Typer(
    help="Editorial rules: pin, block and boost articles in the lists (stored with the index, followed by "
    "running services within [popularity] refresh_seconds).",
    no_args_is_help=True,
)


def _root(index: str) -> Path:
    layout = IndexLayout(index)
    layout.current()  # no index here: fails with how to build one
    return layout.root


@rules_app.command("add")
def add(
    source: str = typer.Argument(..., help="A file of rules (one JSON object per line, or a JSON array); - for stdin."),
    index: str = IndexOption,
    as_json: bool = JsonOption,
) -> None:
    """Add rules, e.g. {"action": "block", "box": "all", "match": {"section": "sponsored"}}. A bad rule is reported
    as file:line: reason and the others are added (exit code 3)."""
    root = _root(index)
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise RecsysError(f"cannot read {source}: {exc}") from None
    rules, problems = parse_rules(text, "stdin" if source == "-" else source)
    for problem in problems:
        typer.echo(problem, err=True)
    if not rules:
        typer.echo("no rule added", err=True)
        raise typer.Exit(EXIT_FAILED)
    stored = add_rules(root, rules)
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in stored], indent=2, ensure_ascii=False))
    else:
        for rule in stored:
            typer.echo(f"added {rule.id}: {json.dumps(rule.to_json(), ensure_ascii=False)}")
    if problems:
        raise typer.Exit(EXIT_SKIPPED)


@rules_app.command("list")
def list_rules(index: str = IndexOption, as_json: bool = JsonOption) -> None:
    """Every stored rule (expired ones too, until removed)."""
    found = RuleSet.load(_root(index)) or RuleSet()
    if as_json:
        typer.echo(json.dumps(found.to_json()["rules"], indent=2, ensure_ascii=False))
        return
    if not found.rules:
        typer.echo("(no rules)")
    for rule in found.rules:
        typer.echo(json.dumps(rule.to_json(), ensure_ascii=False))


@rules_app.command("remove")
def remove(
    rule_id: str = typer.Argument(..., help="The rule's id (`recsys rules list`)."), index: str = IndexOption
) -> None:
    """Delete a rule."""
    if not remove_rule(_root(index), rule_id):
        raise RecsysError(f"no rule {rule_id!r}; `recsys rules list` shows the ids")
    typer.echo(f"removed {rule_id}")
