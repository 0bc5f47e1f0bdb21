"""``/rules``: the editorial rules over HTTP (recsys/archive/rules.py). Reading them is public (they only say what the
lists show anyway); adding or removing one needs ``[http] write_key``, and without a key configured they cannot be
changed over HTTP at all (``recsys rules`` on the host can)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Request

from recsys.archive.rules import MAX_RULES, Rule, RuleSet, add_rules, remove_rule


def rules_router(root: Path, has_key: Callable[[Request], bool], key_configured: bool) -> APIRouter:
    """The routes for the index at ``root``; ``has_key(request)`` says whether a request carries the write key."""
    router = APIRouter(tags=["rules"])

    def require_key(request: Request) -> None:
        if not key_configured:
            raise HTTPException(403, "set [http] write_key to manage rules over HTTP or run `recsys rules`")
        if not has_key(request):
            raise HTTPException(401, "managing rules needs the write key in the X-Recsys-Key header")

    @router.get("/rules")
    def list_rules() -> list[dict[str, Any]]:
        """Every stored rule (see ``recsys rules``)."""
        return (RuleSet.load(root) or RuleSet()).to_json()["rules"]

    @router.post("/rules", status_code=201)
    def post_rules(request: Request, body: Annotated[Any, Body()]) -> list[dict[str, Any]]:
        """Add one rule (a JSON object) or several (an array); all or nothing. Answers the rules as stored,
        with their ids."""
        require_key(request)
        items = body if isinstance(body, list) else [body]
        if not items or len(items) > MAX_RULES:
            raise HTTPException(422, f"send one rule or a list of 1-{MAX_RULES}")
        rules = []
        for number, item in enumerate(items):
            try:
                rules.append(Rule.from_json(item, rule_id=""))
            except ValueError as exc:
                raise HTTPException(422, f"bad rule {number}: {exc}") from None
        return [r.to_json() for r in add_rules(root, rules)]

    @router.delete("/rules/{rule_id}")
    def delete_rule(request: Request, rule_id: str) -> dict[str, str]:
        require_key(request)
        if not remove_rule(root, rule_id[:64]):
            raise HTTPException(404, f"no rule {rule_id[:64]!r}; GET /rules lists them")
        return {"removed": rule_id}

    return router
