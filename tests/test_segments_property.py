"""Property: the compiled SQL selects exactly the supporters a pure-Python evaluator selects."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.extensions import db
from crm.models import (
    EMAIL_STATUSES,
    Campaign,
    EngagementEvent,
    Message,
    Petition,
    Segment,
    Signature,
    Supporter,
    Tag,
    supporter_tag,
    utcnow,
)
from crm.segments import compiler

PETITIONS = [1, 2, 3]
CAMPAIGNS = [1, 2, 3]
MESSAGE_STATUSES = ["sent", "sent", "sent", "queued", "bounced", "failed"]  # only "sent" counts as received
EVENT_KINDS = ["open", "click", "unsubscribe"]
ENGAGEMENT_OPS = ["received", "not_received", "opened", "not_opened", "clicked", "not_clicked", "never_opened",
                  "received_at_least", "received_at_most"]
TAGS = [1, 2, 3]
COUNTRIES = ["GB", "FR", "IE", ""]
POSTAL_CODES = ["SW1A 1AA", "sw1a 2bb", "N1 9GU", "n19 5aa", "E1", ""]
PREFIXES = ["SW1", "N1", "n19", "E", "SW1A 2"]
SOURCES = ["petition:save-bees", "import:2", "api", "", "apiary"]
CUSTOM_VALUES = ["York", "Leeds North", "york", "3", "", 3, True, False, None]
CUSTOM_TESTS = ["York", "Leeds", "3", "true", "or", "' OR 1=1 --"]  # not "": contains refuses it
BASE_DAY = date(2024, 1, 1)

SUPPORTER = st.fixed_dictionaries({
    "email_status": st.sampled_from(EMAIL_STATUSES),
    "country": st.sampled_from(COUNTRIES),
    "postal_code": st.sampled_from(POSTAL_CODES),
    "source": st.sampled_from(SOURCES),
    "created_day": st.integers(0, 20),
    "erased": st.booleans(),
    "custom": st.dictionaries(st.sampled_from(["branch", "n"]), st.sampled_from(CUSTOM_VALUES), max_size=2),
    "tags": st.sets(st.sampled_from(TAGS)),
    "signed": st.dictionaries(st.sampled_from(PETITIONS), st.integers(0, 60), max_size=3),  # petition -> days ago
    # campaign -> (message status, days ago it was sent); unique per campaign like the table.
    "messages": st.dictionaries(st.sampled_from(CAMPAIGNS),
                                st.tuples(st.sampled_from(MESSAGE_STATUSES), st.integers(0, 3)), max_size=3),
    # (campaign, kind, days ago); kept only where that campaign messaged this supporter.
    "events": st.lists(st.tuples(st.sampled_from(CAMPAIGNS), st.sampled_from(EVENT_KINDS), st.integers(0, 3)),
                       max_size=4),
})
supporter_rows = st.lists(SUPPORTER, max_size=25)
# The engagement-only property uses more people, so window edges and counts decide often.
crowded_supporter_rows = st.lists(SUPPORTER, min_size=8, max_size=25)


def days_range():
    return st.one_of(
        st.just({}),
        st.builds(lambda n: {"since_days": n}, st.integers(1, 60)),
        st.builds(lambda a, b: {k: (date.today() - timedelta(days=v)).isoformat()
                                for k, v in (("date_from", max(a, b)), ("date_to", min(a, b)))},
                  st.integers(0, 60), st.integers(0, 60)),
    )


def id_list(ids):
    return st.lists(st.sampled_from(ids), min_size=1, max_size=3, unique=True)


@st.composite
def engagement_condition(draw):
    """Any engagement op; days 1-3 against message and event ages of 0-3 days (and a half), so
    every window splits the data somewhere and an off-by-one in it changes the answer."""
    op = draw(st.sampled_from(ENGAGEMENT_OPS))
    value = {}
    if op in ("received_at_least", "received_at_most"):
        value["count"] = draw(st.integers(1 if op == "received_at_least" else 0, 2))
    elif op != "never_opened" and draw(st.booleans()):
        value["campaign_id"] = draw(st.sampled_from(CAMPAIGNS))
    days = None if op == "never_opened" else draw(st.one_of(st.none(), st.integers(1, 3)))
    if days:
        value["within_days"] = days
    return {"field": "engagement", "op": op, "value": value}


def conditions(with_segment: bool, only_engagement: bool = False):
    if only_engagement:
        return engagement_condition().map(lambda c: {"type": "condition", **c})
    kinds = [
        st.builds(lambda op, ids, window: {"field": "petitions", "op": op, "value": {"petition_ids": ids, **window}},
                  st.sampled_from(["any_of", "all_of", "none_of"]), id_list(PETITIONS), days_range()),
        st.builds(lambda v: {"field": "email_status", "op": "in", "value": v},
                  st.lists(st.sampled_from(EMAIL_STATUSES), min_size=1, max_size=3, unique=True)),
        st.builds(lambda op, ids: {"field": "tags", "op": op, "value": ids},
                  st.sampled_from(["any_of", "all_of", "none_of"]), id_list(TAGS)),
        st.builds(lambda v: {"field": "country", "op": "in", "value": v}, id_list(["GB", "FR", "ie"])),
        st.builds(lambda v: {"field": "postal_code", "op": "starts_with", "value": v}, id_list(PREFIXES)),
        st.builds(lambda a, span: {"field": "created", "op": "between", "value": {
            k: (BASE_DAY + timedelta(days=v)).isoformat()
            for k, v in (("date_from", a), ("date_to", None if span is None else (a or 0) + span))
            if v is not None}},
                  st.one_of(st.none(), st.integers(0, 15)), st.one_of(st.none(), st.integers(0, 10)))
        .filter(lambda c: c["value"]),
        st.builds(lambda v: {"field": "source", "op": "starts_with", "value": v},
                  st.sampled_from(["petition", "import", "api"])),
        st.builds(lambda op, key, v: {"field": "custom_field", "op": op, "value": {"key": key, "value": v}},
                  st.sampled_from(["equals", "contains"]), st.sampled_from(["branch", "n", "missing"]),
                  st.sampled_from(CUSTOM_TESTS)),
    ]
    kinds.append(engagement_condition())
    if with_segment:
        kinds.append(st.builds(lambda op: {"field": "segment", "op": op, "value": 1},
                               st.sampled_from(["member", "not_member"])))
    return st.one_of(kinds).map(lambda c: {"type": "condition", **c})


def trees(with_segment: bool, only_engagement: bool = False):
    leaf = conditions(with_segment, only_engagement)
    return st.recursive(
        leaf,
        lambda children: st.builds(lambda m, rs: {"type": "group", "match": m, "rules": rs},
                                   st.sampled_from(["all", "any", "none"]), st.lists(children, max_size=4)),
        max_leaves=8,
    ).map(lambda t: t if t["type"] == "group" else {"type": "group", "match": "all", "rules": [t]})


# -- The reference evaluator ------------------------------------------------------------------
def custom_text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return str(value)
    return None


def in_window(when: datetime, value: dict, now: datetime) -> bool:
    if "since_days" in value and when < now - timedelta(days=value["since_days"]):
        return False
    if "date_from" in value and when.date() < date.fromisoformat(value["date_from"]):
        return False
    return not ("date_to" in value and when.date() > date.fromisoformat(value["date_to"]))


def engaged(op: str, value: dict, s, now: datetime) -> bool:
    since = now - timedelta(days=value["within_days"]) if "within_days" in value else None

    def recent(when) -> bool:
        return since is None or (when is not None and when >= since)

    wanted = value.get("campaign_id")
    received = [c for c, (status, when) in s["sent"].items()
                if status == "sent" and recent(when) and wanted in (None, c)]
    if op == "received_at_least":
        return len(received) >= value["count"]
    if op == "received_at_most":
        return len(received) <= value["count"]
    if op in ("received", "not_received"):
        return bool(received) == (op == "received")
    kind = "click" if op in ("clicked", "not_clicked") else "open"
    hit = any(k == kind and recent(when) and wanted in (None, c) for c, k, when in s["engaged"])
    return hit if op in ("opened", "clicked") else not hit


def matches(node, s, segment_tree, now) -> bool:
    if node["type"] == "group":
        results = [matches(child, s, segment_tree, now) for child in node["rules"]]
        return {"all": all(results), "any": any(results), "none": not any(results)}[node["match"]]
    field, op, value = node["field"], node["op"], node["value"]
    if field == "petitions":
        signed = {p for p, when in s["signed_at"].items() if in_window(when, value, now)}
        hit = {"any_of": bool(signed & set(value["petition_ids"])),
               "all_of": set(value["petition_ids"]) <= signed,
               "none_of": not signed & set(value["petition_ids"])}
        return hit[op]
    if field == "email_status":
        return s["email_status"] in value
    if field == "tags":
        return {"any_of": bool(s["tags"] & set(value)), "all_of": set(value) <= s["tags"],
                "none_of": not s["tags"] & set(value)}[op]
    if field == "country":
        return s["country"] in [c.upper() for c in value]
    if field == "postal_code":
        return any(s["postal_code"].upper().startswith(p.upper()) for p in value)
    if field == "created":
        return in_window(s["created_at"], value, now)
    if field == "source":
        return s["source"].startswith(value)
    if field == "segment":
        inside = matches(segment_tree, s, None, now)
        return inside if op == "member" else not inside
    if field == "engagement":
        return engaged(op, value, s, now)
    text = custom_text(s["custom"].get(value["key"]))
    if text is None:
        return False
    return text == value["value"] if op == "equals" else value["value"] in text


# -- Data -------------------------------------------------------------------------------------
def load(rows, segment_tree) -> list[dict]:
    """Empty the tables and bulk-insert this example's rows; return them as the evaluator sees them."""
    for table in (EngagementEvent.__table__, Message.__table__, Campaign.__table__, supporter_tag,
                  Signature.__table__, Segment.__table__, Supporter.__table__, Tag.__table__, Petition.__table__):
        db.session.execute(table.delete())
    now = utcnow()
    db.session.execute(Petition.__table__.insert(), [
        {"id": i, "slug": f"p{i}", "title": f"Petition {i}", "body": "", "addressed_to": "", "goal": 10,
         "consent_mode": "implied", "consent_wording": "w", "consent_wording_version": 1,
         "thank_you_message": "", "redirect_url": "", "status": "open", "created_at": now, "updated_at": now}
        for i in PETITIONS])
    db.session.execute(Tag.__table__.insert(), [{"id": i, "name": f"tag{i}", "created_at": now} for i in TAGS])
    db.session.execute(Campaign.__table__.insert(), [
        {"id": i, "name": f"Campaign {i}", "subject": "", "preheader": "", "reply_to": "", "mjml": "",
         "text_body": "", "track_opens": True, "track_clicks": True, "status": "sent", "version": 1,
         "status_reason": "", "total": 0, "sent_count": 0, "failed_count": 0, "unknown_count": 0,
         "suppressed_count": 0, "created_at": now, "updated_at": now} for i in CAMPAIGNS])
    db.session.execute(Segment.__table__.insert(), [{"id": 1, "name": "Stored", "description": "",
                                                     "rules": segment_tree, "created_at": now,
                                                     "updated_at": now}])
    people, signatures, tags, messages, events = [], [], [], [], []
    for n, row in enumerate(rows, start=1):
        created = datetime.combine(BASE_DAY + timedelta(days=row["created_day"]),
                                   datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
        people.append({"id": n, "email": f"s{n}@example.net", "first_name": "", "last_name": "",
                       "postal_code": row["postal_code"], "country": row["country"],
                       "email_status": row["email_status"], "source": row["source"],
                       "custom_fields": {k: v for k, v in row["custom"].items()}, "notes": "",
                       "erased_at": now if row["erased"] else None, "created_at": created, "updated_at": now})
        # Half-day offsets keep every signature well away from a "since N days" boundary.
        signed_at = {p: now - timedelta(days=ago, hours=12) for p, ago in row["signed"].items()}
        signatures += [{"petition_id": p, "supporter_id": n, "comment": "", "source": "", "created_at": when}
                       for p, when in signed_at.items()]
        tags += [{"supporter_id": n, "tag_id": t} for t in row["tags"]]
        # Queued and failed messages have no sent_at; the rest were sent `ago` days (and a half) ago.
        sent = {c: (status, None if status in ("queued", "failed") else now - timedelta(days=ago, hours=12))
                for c, (status, ago) in row["messages"].items()}
        engaged = [(c, kind, now - timedelta(days=ago, hours=12)) for c, kind, ago in row["events"] if c in sent]
        for c, (status, when) in sent.items():
            message_id = len(messages) + 1
            messages.append({"id": message_id, "campaign_id": c, "supporter_id": n, "email": f"s{n}@example.net",
                             "status": status, "attempts": 1, "error": "", "created_at": now, "sent_at": when})
            events += [{"message_id": message_id, "supporter_id": n, "campaign_id": c, "kind": kind, "url": "",
                        "created_at": when} for ec, kind, when in engaged if ec == c]
        row.update(id=n, created_at=created, signed_at=signed_at, sent=sent, engaged=engaged)
    if people:
        db.session.execute(Supporter.__table__.insert(), people)
    if signatures:
        db.session.execute(Signature.__table__.insert(), signatures)
    if tags:
        db.session.execute(supporter_tag.insert(), tags)
    if messages:
        db.session.execute(Message.__table__.insert(), messages)
    if events:
        db.session.execute(EngagementEvent.__table__.insert(), events)
    db.session.commit()
    return rows


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(rows=supporter_rows, segment_tree=trees(with_segment=False), tree=trees(with_segment=True))
def test_compiled_sql_matches_the_reference_evaluator(app, rows, segment_tree, tree):
    """For random supporters and rule trees, SQL and the Python evaluator agree on membership."""
    people = load(rows, segment_tree)
    now = utcnow()
    expected = {s["id"] for s in people if not s["erased"] and matches(tree, s, segment_tree, now)}
    assert set(db.session.scalars(compiler.segment_query(tree))) == expected
    assert compiler.count(tree) == len(expected)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(rows=crowded_supporter_rows, tree=trees(with_segment=False, only_engagement=True))
def test_engagement_conditions_match_the_reference_evaluator(app, rows, tree):
    """Trees of engagement conditions alone (denser in messages and events) agree with the evaluator."""
    people = load(rows, {"type": "group", "match": "all", "rules": []})
    now = utcnow()
    expected = {s["id"] for s in people if not s["erased"] and matches(tree, s, None, now)}
    assert set(db.session.scalars(compiler.segment_query(tree))) == expected
    assert compiler.count(tree) == len(expected)
