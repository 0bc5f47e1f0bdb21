"""Editorial rules: an editor's pins, blocks and boosts, stored with the index and applied to every list.

One JSON object per rule (the interface ``recsys rules`` and ``/rules`` take)::

    {"action": "pin", "article_id": "X", "box": "related", "where": {"article_id": "Y"}, "position": 1,
     "from": "2026-12-01T08:00:00Z", "until": "2026-12-02T08:00:00Z"}
    {"action": "block", "box": "all", "match": {"section": "sponsored"}, "where": {"section": "obituaries"}}
    {"action": "boost", "box": "recommendation", "match": {"tag": "election"}, "by": 0.3, "until": "..."}

``box`` is related / ranking / recommendation / all. ``match`` says which articles a rule is about and ``where``
on which pages it applies (the article being read: Related, and every box of ``page()``); each takes
``article_id``, ``section`` (= the article's category) and ``tag``, a name or a list of names (any of them;
several keys: all of them), compared without case; empty or absent means every article / every page. A rule
with a ``where`` never applies to a list served without an article being read (``recommend()``,
``ranking()``). ``from`` / ``until`` (ISO time or epoch seconds) bound when it is active, judged at the list's
own ``now`` (so a past ``--now`` sees the rules of that moment).

Effects, in order: a **block** removes its matches (also pinned ones: a block wins over everything but a
takedown, which removes the article from the index itself); a **boost** moves its matches ``by`` x k places up
the list (0.3 in a list of 10: three places; negative moves down), which also brings in matches from just below
the list; a **pin** puts its article at ``position`` with the reason "editor's pick" (unless it is the article
being read, already shown in an earlier box of the page, blocked, or not live).

The rules live in ``rules.json`` at the index root, beside the versions (so they survive every new version),
replaced atomically, copied by ``recsys index pull`` like the trained files, and re-read by serving processes
within ``[popularity] refresh_seconds`` (``StoredModels``). This module owns that file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from recsys.archive.layout import RULES_FILE, load_trained, write_json_atomic
from recsys.ingest.text import parse_timestamp
from recsys.types import Filters, Hit, RecsysError

ACTIONS = ("pin", "block", "boost")
BOXES = ("related", "ranking", "recommendation", "all")
KEYS = ("article_id", "section", "tag")  # what match / where select by
FIELDS = frozenset({"id", "action", "box", "article_id", "match", "where", "position", "by", "from", "until", "note"})
MAX_RULES = 10_000
MAX_NAMES = 1_000  # names in one match / where key
MAX_TEXT = 512
PICK_REASON = "editor's pick"
LOCK_FILE = ".rules.lock"


def _names(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or len(items) > MAX_NAMES:
        raise ValueError(f"{where} must be a name or a list of 1-{MAX_NAMES} names")
    out = []
    for item in items:
        if not isinstance(item, str) or not item.strip() or len(item) > MAX_TEXT:
            raise ValueError(f"{where} holds {item!r}; names are non-empty strings of at most {MAX_TEXT} characters")
        out.append(item.strip())
    return tuple(out)


def _selector(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f'{where} must be an object like {{"section": "sponsored"}}, not {value!r}')
    unknown = set(value) - set(KEYS) - {"category"}
    if unknown:
        raise ValueError(f"{where} selects by {', '.join(KEYS)}; unknown: {', '.join(sorted(unknown))}")
    out = {("section" if key == "category" else key): _names(names, f"{where}.{key}") for key, names in value.items()}
    return {k: v if k == "article_id" else tuple(n.lower() for n in v) for k, v in out.items()}


def _time(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{name!r} must be an ISO time or epoch seconds, not {value!r}")
    try:
        moment = parse_timestamp(value).timestamp()
    except (ValueError, OverflowError, OSError) as exc:
        raise ValueError(f"bad {name!r}: {exc}") from None
    if not math.isfinite(moment):
        raise ValueError(f"bad {name!r}: {value!r}")
    return moment


@dataclass(frozen=True)
class Rule:
    """One editorial rule (see the module docstring)."""

    id: str
    action: str
    box: str = "all"
    article_id: str = ""  # a pin's article
    match: dict[str, tuple[str, ...]] = field(default_factory=dict)
    where: dict[str, tuple[str, ...]] = field(default_factory=dict)
    position: int = 1
    by: float = 0.0
    start: float | None = None  # "from"
    until: float | None = None
    note: str = ""

    @classmethod
    def from_json(cls, record: Any, rule_id: str | None = None) -> Rule:
        """A checked rule from its JSON object (ValueError says what is wrong and how it should look)."""
        if not isinstance(record, dict):
            raise ValueError(f'a rule is a JSON object like {{"action": "block", ...}}, not {record!r:.60}')
        unknown = set(record) - FIELDS
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}; a rule has {', '.join(sorted(FIELDS))}")
        action = record.get("action")
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
        box = record.get("box", "all")
        if box not in BOXES:
            raise ValueError(f"box must be one of {', '.join(BOXES)}, not {box!r}")
        article_id = record.get("article_id", "")
        if not isinstance(article_id, str) or len(article_id) > MAX_TEXT:
            raise ValueError("article_id must be a string")
        position, by = record.get("position", 1), record.get("by", 0.3 if action == "boost" else 0.0)
        if action == "pin":
            if not article_id.strip():
                raise ValueError('a pin needs the "article_id" of the article to pin')
            if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= 1000:
                raise ValueError(f"position must be a whole number from 1 to 1000, not {position!r}")
            if record.get("match"):
                raise ValueError('a pin names its article with "article_id"; "match" is for block and boost')
        elif article_id:
            raise ValueError(f'a {action} selects articles with "match", e.g. {{"match": {{"article_id": "X"}}}}')
        if action == "boost" and (
            isinstance(by, bool) or not isinstance(by, int | float) or not math.isfinite(by) or not -1 <= by <= 1
        ):
            raise ValueError(f"by must be a number from -1 to 1 (the share of the list to move up), not {by!r}")
        start, until = _time(record.get("from"), "from"), _time(record.get("until"), "until")
        if start is not None and until is not None and until <= start:
            raise ValueError('"until" must be after "from"')
        note = record.get("note", "")
        if not isinstance(note, str) or len(note) > MAX_TEXT:
            raise ValueError(f"note must be a string of at most {MAX_TEXT} characters")
        given = record.get("id") if rule_id is None else rule_id
        if not isinstance(given, str) or not given:
            given = "r" + secrets.token_hex(4)
        return cls(
            id=given[:64],
            action=action,
            box=box,
            article_id=article_id.strip(),
            match=_selector(record.get("match"), "match"),
            where=_selector(record.get("where"), "where"),
            position=int(position) if action == "pin" else 1,
            by=float(by) if action == "boost" else 0.0,
            start=start,
            until=until,
            note=note,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "action": self.action, "box": self.box}
        if self.action == "pin":
            out["article_id"], out["position"] = self.article_id, self.position
        if self.match:
            out["match"] = {k: list(v) for k, v in self.match.items()}
        if self.where:
            out["where"] = {k: list(v) for k, v in self.where.items()}
        if self.action == "boost":
            out["by"] = self.by
        for name, value in (("from", self.start), ("until", self.until)):
            if value is not None:
                out[name] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
        if self.note:
            out["note"] = self.note
        return out

    def active(self, box: str, now_s: float) -> bool:
        return (
            self.box in (box, "all")
            and (self.start is None or self.start <= now_s)
            and (self.until is None or now_s < self.until)
        )


def selects(selector: dict[str, tuple[str, ...]], article_id: str, section: str, tags: Sequence[str]) -> bool:
    """Does an article (its id, section and tags) pass a match / where selector (every key given, any name)?"""
    for key, names in selector.items():
        if key == "article_id" and article_id not in names:
            return False
        if key == "section" and section.lower() not in names:
            return False
        if key == "tag" and not {t.lower() for t in tags} & set(names):
            return False
    return True


def _hit_tags(hit: Hit) -> Sequence[str]:
    tags = hit.metadata.get("tags")
    return tags if isinstance(tags, list | tuple) else ()


@dataclass(frozen=True)
class Context:
    """The article being read (for ``where``), or none."""

    article_id: str
    section: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class BoxRules:
    """The rules active for one list: who is blocked, who is boosted, what is pinned where."""

    blocks: tuple[Rule, ...] = ()
    boosts: tuple[Rule, ...] = ()
    pins: tuple[Rule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.blocks or self.boosts or self.pins)

    def fetch(self, k: int, limit: int) -> int:
        """How many hits to ask the list for, so blocked ones can be replaced and boosted ones brought in."""
        return min(limit, k * 2 + 10) if (self.blocks or self.boosts) else k

    def filtered(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(ids, sections) the blocks keep out that a list's filters can keep out before it is built (a block by
        one id or one section: the list then fills from what is left; tag blocks are screened afterwards)."""
        ids: list[str] = []
        sections: list[str] = []
        for rule in self.blocks:
            if set(rule.match) == {"article_id"}:
                ids += rule.match["article_id"]
            elif set(rule.match) == {"section"}:
                sections += rule.match["section"]
        return tuple(ids), tuple(sections)

    def apply_to(self, filters: Filters) -> Filters:
        """``filters`` also keeping out what ``filtered`` names."""
        ids, sections = self.filtered()
        return filters.excluding(ids, sections)

    def blocked(self, article_id: str, section: str, tags: Sequence[str]) -> bool:
        return any(selects(r.match, article_id, section, tags) for r in self.blocks)

    def screen(self, hits: Sequence[Hit], k: int) -> list[Hit]:
        """Blocked hits dropped, boosted ones moved up (by ``by`` x k places; stable otherwise)."""
        kept = [h for h in hits if not self.blocked(h.id, h.category, _hit_tags(h))]
        if not self.boosts:
            return kept

        def place(item: tuple[int, Hit]) -> float:
            i, hit = item
            lift = sum(r.by for r in self.boosts if selects(r.match, hit.id, hit.category, _hit_tags(hit)))
            return i - lift * max(k, 1)

        return [h for _, h in sorted(enumerate(kept), key=place)]

    def pin(self, hits: list[Hit], k: int, pinned: dict[str, Hit], taken: set[str]) -> list[Hit]:
        """The pins placed at their positions (``pinned``: each pin's article as a hit, or absent when it is not
        live; ``taken``: ids that may not appear, the article being read and earlier boxes' hits)."""
        out = list(hits)
        for rule in sorted(self.pins, key=lambda r: r.position):
            hit = pinned.get(rule.article_id)
            if hit is None or rule.article_id in taken or self.blocked(hit.id, hit.category, _hit_tags(hit)):
                continue
            out = [h for h in out if h.id != hit.id]
            at = min(rule.position - 1, len(out))
            score = out[at].score if at < len(out) else (out[-1].score if out else 0.0)
            out.insert(
                at, replace(hit, score=score, reason=PICK_REASON, metadata={**hit.metadata, "recsys_rule": rule.id})
            )
        return out[:k]


@dataclass(frozen=True)
class RuleSet:
    """Every stored rule, in the order they were added."""

    rules: tuple[Rule, ...] = ()

    def for_list(self, box: str, now_s: float, context: Context | None) -> BoxRules:
        """The rules that apply to one list of ``box`` served at ``now_s`` on ``context``'s page."""
        found: dict[str, list[Rule]] = {"block": [], "boost": [], "pin": []}
        for rule in self.rules:
            if not rule.active(box, now_s):
                continue
            if rule.where and (context is None or not selects(rule.where, *_context_fields(context))):
                continue
            found[rule.action].append(rule)
        return BoxRules(tuple(found["block"]), tuple(found["boost"]), tuple(found["pin"]))

    def to_json(self) -> dict[str, Any]:
        return {"rules": [r.to_json() for r in self.rules]}

    @classmethod
    def from_json(cls, data: Any) -> RuleSet:
        if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
            raise ValueError('expected {"rules": [...]}')
        return cls(tuple(Rule.from_json(r) for r in data["rules"]))

    @classmethod
    def load(cls, root: Path) -> RuleSet | None:
        return load_trained(root, RULES_FILE, cls.from_json, "fix or remove it (`recsys rules list` shows what loads)")


def _context_fields(context: Context) -> tuple[str, str, tuple[str, ...]]:
    return context.article_id, context.section, context.tags


def parse_rules(text: str, source: str = "-") -> tuple[list[Rule], list[str]]:
    """Rules from text: one JSON object per line, or one JSON array / object. Returns (rules, problems), each
    problem ``source:line: reason``; a bad rule costs itself, not the others."""
    rules: list[Rule] = []
    problems: list[str] = []
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except ValueError as exc:
            return [], [f"{source}:1: not valid JSON ({exc})"]
        numbered = list(enumerate(items if isinstance(items, list) else [items], start=1))
    else:
        numbered = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                numbered.append((number, json.loads(line)))
            except ValueError as exc:
                problems.append(f"{source}:{number}: not valid JSON ({exc})")
    for number, item in numbered:
        try:
            rules.append(Rule.from_json(item, rule_id=""))  # ids are given by the store
        except ValueError as exc:
            problems.append(f"{source}:{number}: {exc}")
    return rules, problems


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One writer of rules.json at a time (the CLI and HTTP services may both edit)."""
    with open(root / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(root: Path, rules: RuleSet) -> None:
    write_json_atomic(root / RULES_FILE, rules.to_json(), indent=1)


def add_rules(root: str | Path, new: Sequence[Rule]) -> list[Rule]:
    """Store rules (each gets a fresh id); returns them as stored."""
    root = Path(root)
    if not root.is_dir():
        raise RecsysError(f"{root}: no index here; build one with `recsys index build ARTICLES`")
    with _locked(root):
        current = RuleSet.load(root) or RuleSet()
        if len(current.rules) + len(new) > MAX_RULES:
            raise RecsysError(f"at most {MAX_RULES} rules; remove expired ones with `recsys rules remove ID`")
        taken = {r.id for r in current.rules}
        stored = []
        for rule in new:
            rule_id = rule.id if rule.id and rule.id not in taken else ""
            while not rule_id or rule_id in taken:
                rule_id = "r" + secrets.token_hex(4)
            taken.add(rule_id)
            stored.append(replace(rule, id=rule_id))
        _write(root, RuleSet((*current.rules, *stored)))
    return stored


def remove_rule(root: str | Path, rule_id: str) -> bool:
    """Delete one rule by id; False when there is none with that id."""
    root = Path(root)
    with _locked(root):
        current = RuleSet.load(root) or RuleSet()
        kept = tuple(r for r in current.rules if r.id != rule_id)
        if len(kept) == len(current.rules):
            return False
        _write(root, RuleSet(kept))
    return True
