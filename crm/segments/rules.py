"""Parse and validate a segment's rule tree (JSON) before anything reaches SQL.

The tree
--------
A group::

    {"type": "group", "match": "all" | "any" | "none", "rules": [<group or condition>, ...]}

Groups nest up to MAX_DEPTH levels (the root group is level 1) and a tree holds at most
MAX_CONDITIONS conditions. An empty "all" group matches everyone, an empty "any" group no one,
an empty "none" group everyone (nothing to exclude).

A condition::

    {"type": "condition", "field": <field>, "op": <op>, "value": <value>}

    field           op                              value
    petitions       any_of | all_of | none_of       {"petition_ids": [1, 2],
                                                     "since_days": 30}          (optional) or
                                                     "date_from"/"date_to": "YYYY-MM-DD" (optional)
    email_status    in                              ["subscribed", "bouncing", ...]
    tags            any_of | all_of | none_of       [tag ids]
    country         in                              ["GB", "FR"]   (ISO 3166-1 alpha-2)
    postal_code     starts_with                     ["SW1", "N1"]  (case-insensitive prefixes)
    created         between                         {"date_from": "YYYY-MM-DD", "date_to": ...}
                                                     (either may be omitted, not both; inclusive)
    source          starts_with                     "petition" | "import" | "api"
    segment         member | not_member             segment id
    custom_field    equals | contains               {"key": "branch", "value": "Leeds"}
    engagement      see below                       see below

Engagement conditions read the send log (message) and what recipients did (engagement_event)::

    op                                   value
    received | not_received              {"campaign_id": 7, "within_days": 30}   both optional
    opened | not_opened                  {"campaign_id": 7, "within_days": 90,   all optional
                                          "people_only": true}
    clicked | not_clicked                {"campaign_id": 7, "within_days": 90,   all optional
                                          "people_only": true}
    never_opened                         {"people_only": true}                   optional
    received_at_least | received_at_most {"count": 3, "within_days": 30}         days optional

"Received" means a message with status `sent` (the server accepted it), dated by sent_at;
"opened" / "clicked" mean an engagement event of kind open / click, dated by its created_at.
Without campaign_id any campaign counts; without within_days any time counts. The not_* ops
are the exact negations ("have not been emailed in the last 14 days"), never_opened is
not_opened with neither option, and received_at_most counts people never mailed as 0.
"people_only" leaves out the events flagged as a machine's (image proxies such as Apple Mail
Privacy Protection, which open every message, and link scanners): "opened" then means a person
opened it, and "not opened" takes in those whom only a machine opened for.

`validate(tree)` returns a ValidatedRules: a normalised copy of the tree (ints for ids,
upper-case codes, ISO dates) plus the names of every petition, tag, campaign and segment it mentions
(looked up with one query per kind), with referenced segments validated recursively. Any
problem raises RuleError with the path of the offending node, e.g.
"rules[1].rules[0]: petition 42 does not exist".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from crm.extensions import db
from crm.models import EMAIL_STATUSES, Campaign, Petition, Segment, Tag

MAX_DEPTH = 5
MAX_CONDITIONS = 50
MAX_LIST = 500  # ids or codes in one condition
MAX_DAYS = 36500
MATCHES = ("all", "any", "none")
SOURCES = ("petition", "import", "api")
MAX_COUNT = 10**6  # messages in one received_at_least / received_at_most condition
# Custom-field keys become part of a JSON path on SQLite ('$."key"'), so quotes and
# backslashes are refused; the key itself is always a bound parameter.
CUSTOM_KEY = re.compile(r"^[^\"\\\x00-\x1f]{1,64}$")
POSTAL_PREFIX = re.compile(r"^[A-Za-z0-9 -]{1,10}$")

FIELD_OPS: dict[str, tuple[str, ...]] = {
    "petitions": ("any_of", "all_of", "none_of"),
    "email_status": ("in",),
    "tags": ("any_of", "all_of", "none_of"),
    "country": ("in",),
    "postal_code": ("starts_with",),
    "created": ("between",),
    "source": ("starts_with",),
    "segment": ("member", "not_member"),
    "custom_field": ("equals", "contains"),
    "engagement": ("received", "not_received", "opened", "not_opened", "clicked", "not_clicked",
                   "never_opened", "received_at_least", "received_at_most"),
}

EMPTY_TREE: dict[str, Any] = {"type": "group", "match": "all", "rules": []}


class RuleError(ValueError):
    """A rule tree refused, with the path of the node at fault (empty for the whole tree)."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


@dataclass
class ValidatedRules:
    """A normalised tree plus the names it mentions; the only input the compiler accepts."""

    tree: dict[str, Any]
    petitions: dict[int, str] = field(default_factory=dict)
    tags: dict[int, str] = field(default_factory=dict)
    campaigns: dict[int, str] = field(default_factory=dict)
    # Referenced segments: id -> (name, their own ValidatedRules), compiled inline.
    segments: dict[int, tuple[str, ValidatedRules]] = field(default_factory=dict)


def validate(tree: Any, *, segment_id: int | None = None,
             _chain: tuple[tuple[int, str], ...] = ()) -> ValidatedRules:
    """Check `tree` (parsed JSON) and return it normalised, or raise RuleError.

    `segment_id` is the segment being edited, so a rule that refers back to it is a cycle.
    """
    counter = {"conditions": 0}
    refs: dict[str, dict[int, str]] = {"petitions": {}, "tags": {}, "campaigns": {}, "segments": {}}
    normalised = _group(tree, "", 1, counter, refs)
    result = ValidatedRules(normalised)
    result.petitions = _existing(Petition, Petition.title, refs["petitions"])
    result.tags = _existing(Tag, Tag.name, refs["tags"])
    result.campaigns = _existing(Campaign, Campaign.name, refs["campaigns"])
    chain = _chain or (((segment_id, ""),) if segment_id is not None else ())
    if refs["segments"]:
        rows = db.session.execute(
            db.select(Segment.id, Segment.name, Segment.rules)
            .where(Segment.id.in_(list(refs["segments"])))
        ).all()
        found = {row.id: row for row in rows}
        for seg_id, path in refs["segments"].items():
            row = found.get(seg_id)
            if row is None:
                raise RuleError(path, f"segment {seg_id} does not exist")
            if any(seg_id == seen for seen, _ in chain):
                names = [name for _, name in chain if name] + [row.name]
                loop = " → ".join(f"“{n}”" for n in names)
                raise RuleError(path, f"segment “{row.name}” refers back to the segment being "
                                      f"checked ({loop}); segments cannot include themselves")
            try:
                inner = validate(row.rules, _chain=(*chain, (seg_id, row.name)))
            except RuleError as exc:
                if "refers back" in exc.message:
                    raise RuleError(path, exc.message) from None
                raise RuleError(path, f"segment “{row.name}” has an invalid rule: {exc}") from None
            result.segments[seg_id] = (row.name, inner)
    return result


def _existing(model, label, wanted: dict[int, str]) -> dict[int, str]:
    """Look up every id of one kind in one query; a missing one is an error at its first path."""
    if not wanted:
        return {}
    rows = db.session.execute(db.select(model.id, label).where(model.id.in_(list(wanted)))).all()
    names = {row[0]: row[1] for row in rows}
    for ident, path in wanted.items():
        if ident not in names:
            raise RuleError(path, f"{model.__tablename__} {ident} does not exist")
    return names


def _child(path: str, index: int) -> str:
    return f"{path}.rules[{index}]" if path else f"rules[{index}]"


def _group(node: Any, path: str, depth: int, counter: dict, refs: dict) -> dict[str, Any]:
    if not isinstance(node, dict) or node.get("type") != "group":
        raise RuleError(path, "expected a group: {\"type\": \"group\", \"match\": ..., \"rules\": [...]}")
    if depth > MAX_DEPTH:
        raise RuleError(path, f"groups nest at most {MAX_DEPTH} levels deep")
    match = node.get("match")
    if match not in MATCHES:
        raise RuleError(path, "match must be one of all, any, none")
    children = node.get("rules", [])
    if not isinstance(children, list):
        raise RuleError(path, "rules must be a list")
    out = []
    for index, child in enumerate(children):
        child_path = _child(path, index)
        kind = child.get("type") if isinstance(child, dict) else None
        if kind == "group":
            out.append(_group(child, child_path, depth + 1, counter, refs))
        elif kind == "condition":
            counter["conditions"] += 1
            if counter["conditions"] > MAX_CONDITIONS:
                raise RuleError(child_path, f"a segment holds at most {MAX_CONDITIONS} conditions")
            out.append(_condition(child, child_path, refs))
        else:
            raise RuleError(child_path, "each rule must be a group or a condition")
    return {"type": "group", "match": match, "rules": out}


def _ids(raw: Any, path: str, what: str) -> list[int]:
    if not isinstance(raw, list) or not raw:
        raise RuleError(path, f"choose at least one {what}")
    if len(raw) > MAX_LIST:
        raise RuleError(path, f"at most {MAX_LIST} {what}s in one condition")
    ids = []
    for item in raw:
        ident = _int(item)
        if ident is None:
            raise RuleError(path, f"{item!r} is not a {what} id")
        if ident not in ids:
            ids.append(ident)
    return ids


def _int(raw: Any, low: int = 1, high: int = 2**31 - 1) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw.strip())
    return raw if isinstance(raw, int) and low <= raw <= high else None


def _date(raw: Any, path: str, name: str) -> str | None:
    if raw in (None, ""):
        return None
    try:
        return date.fromisoformat(str(raw)).isoformat()
    except ValueError:
        raise RuleError(path, f"{name} must be a date (YYYY-MM-DD)") from None


def _date_range(value: dict, path: str, required: bool) -> dict[str, str]:
    start = _date(value.get("date_from"), path, "date_from")
    end = _date(value.get("date_to"), path, "date_to")
    if required and not (start or end):
        raise RuleError(path, "give a start date, an end date or both")
    if start and end and start > end:
        raise RuleError(path, "the start date is after the end date")
    return {k: v for k, v in (("date_from", start), ("date_to", end)) if v}


def _strings(raw: Any, path: str, what: str) -> list[str]:
    if not isinstance(raw, list) or not raw:
        raise RuleError(path, f"choose at least one {what}")
    if len(raw) > MAX_LIST or not all(isinstance(v, str) for v in raw):
        raise RuleError(path, f"expected a list of {what}s")
    return list(dict.fromkeys(v.strip() for v in raw))


def _condition(node: dict, path: str, refs: dict) -> dict[str, Any]:
    name, op, value = node.get("field"), node.get("op"), node.get("value")
    if name not in FIELD_OPS:
        raise RuleError(path, f"unknown field {name!r}")
    if op not in FIELD_OPS[name]:
        raise RuleError(path, f"{name} does not support {op!r} (use {', '.join(FIELD_OPS[name])})")
    out: Any
    if name == "petitions":
        if not isinstance(value, dict):
            raise RuleError(path, "value must be {\"petition_ids\": [...]}")
        out = {"petition_ids": _ids(value.get("petition_ids"), path, "petition")}
        since = value.get("since_days")
        if since not in (None, ""):
            days = _int(since, 1, MAX_DAYS)
            if days is None:
                raise RuleError(path, f"since_days must be a whole number from 1 to {MAX_DAYS}")
            if value.get("date_from") or value.get("date_to"):
                raise RuleError(path, "give either since_days or a date range, not both")
            out["since_days"] = days
        else:
            out.update(_date_range(value, path, required=False))
        for ident in out["petition_ids"]:
            refs["petitions"].setdefault(ident, path)
    elif name == "email_status":
        out = _strings(value, path, "email status")
        for status in out:
            if status not in EMAIL_STATUSES:
                raise RuleError(path, f"unknown email status {status!r}")
    elif name == "tags":
        out = _ids(value, path, "tag")
        for ident in out:
            refs["tags"].setdefault(ident, path)
    elif name == "country":
        out = [c.upper() for c in _strings(value, path, "country")]
        for code in out:
            if not (len(code) == 2 and code.isascii() and code.isalpha()):
                raise RuleError(path, f"{code!r} is not a two-letter country code")
        out = list(dict.fromkeys(out))
    elif name == "postal_code":
        out = [p.upper() for p in _strings(value, path, "postal code prefix")]
        for prefix in out:
            if not POSTAL_PREFIX.match(prefix):
                raise RuleError(path, f"{prefix!r} is not a postal code prefix "
                                      "(letters, digits, spaces and hyphens, up to 10)")
        out = list(dict.fromkeys(out))
    elif name == "created":
        if not isinstance(value, dict):
            raise RuleError(path, "value must be {\"date_from\": ..., \"date_to\": ...}")
        out = _date_range(value, path, required=True)
    elif name == "source":
        if value not in SOURCES:
            raise RuleError(path, f"source must be one of {', '.join(SOURCES)}")
        out = value
    elif name == "segment":
        out = _int(value)
        if out is None:
            raise RuleError(path, "choose a segment")
        refs["segments"].setdefault(out, path)
    elif name == "custom_field":
        if not isinstance(value, dict):
            raise RuleError(path, "value must be {\"key\": ..., \"value\": ...}")
        key, text = value.get("key"), value.get("value")
        if not isinstance(key, str) or not CUSTOM_KEY.match(key.strip()):
            raise RuleError(path, "give a custom field name (up to 64 characters, no quotes)")
        if not isinstance(text, str) or len(text) > 500 or (op == "contains" and not text):
            raise RuleError(path, "give the text to compare (up to 500 characters)")
        out = {"key": key.strip(), "value": text}
    else:
        out = _engagement(op, value, path)
        if "campaign_id" in out:
            refs["campaigns"].setdefault(out["campaign_id"], path)
    return {"type": "condition", "field": name, "op": op, "value": out}


# The engagement tests that read engagement_event, where machines' events are flagged.
PEOPLE_ONLY_OPS = ("opened", "not_opened", "never_opened", "clicked", "not_clicked")


def _engagement(op: str, value: Any, path: str) -> dict[str, int | bool]:
    """Check an engagement condition's shape (see the module docstring) and normalise it."""
    if not isinstance(value, dict):
        raise RuleError(path, "value must be an object, e.g. {\"within_days\": 30}")
    out: dict[str, int | bool] = {}
    if op in PEOPLE_ONLY_OPS and value.get("people_only") not in (None, False, ""):
        if value.get("people_only") is not True:
            raise RuleError(path, "people_only must be true or false")
        out["people_only"] = True
    if op == "never_opened":
        return out
    if op in ("received_at_least", "received_at_most"):
        low = 1 if op == "received_at_least" else 0
        count = _int(value.get("count"), low, MAX_COUNT)
        if count is None:
            raise RuleError(path, f"count must be a whole number from {low} to {MAX_COUNT}")
        out["count"] = count
    elif value.get("campaign_id") not in (None, ""):
        campaign_id = _int(value.get("campaign_id"))
        if campaign_id is None:
            raise RuleError(path, f"{value.get('campaign_id')!r} is not a campaign id")
        out["campaign_id"] = campaign_id
    if value.get("within_days") not in (None, ""):
        days = _int(value.get("within_days"), 1, MAX_DAYS)
        if days is None:
            raise RuleError(path, f"within_days must be a whole number from 1 to {MAX_DAYS}")
        out["within_days"] = days
    return out


def referenced_segment_ids(tree: Any) -> set[int]:
    """Segment ids a (possibly unvalidated) tree mentions; used to refuse deleting them."""
    return _referenced(tree, "segment", lambda value: value)


def referenced_campaign_ids(tree: Any) -> set[int]:
    """Campaign ids a (possibly unvalidated) tree's engagement conditions mention."""
    return _referenced(tree, "engagement", lambda value: value.get("campaign_id") if isinstance(value, dict) else None)


def _referenced(tree: Any, field_name: str, pick) -> set[int]:
    found: set[int] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("field") == field_name:
                ident = _int(pick(node.get("value")))
                if ident is not None:
                    found.add(ident)
            stack.extend(node.get("rules", []) if isinstance(node.get("rules"), list) else [])
    return found
