"""Segments: rule validation with paths, each condition kind, nesting, cycles, the pages and roles."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from crm.extensions import db
from crm.models import AuditLog, Campaign, EngagementEvent, Segment, Tag, supporter_tag, utcnow
from crm.segments import compiler, service
from crm.segments.rules import RuleError, referenced_campaign_ids, referenced_segment_ids, validate
from crm.segments.summary import summarise
from tests import factories
from tests.factories import make_campaign, make_message, make_petition, make_signature, make_supporter


def group(*rules, match="all"):
    return {"type": "group", "match": match, "rules": list(rules)}


def cond(field, op, value):
    return {"type": "condition", "field": field, "op": op, "value": value}


def ids(rules) -> set[int]:
    return set(db.session.scalars(compiler.segment_query(rules)))


def make_tag(name: str) -> Tag:
    tag = Tag(name=name)
    db.session.add(tag)
    db.session.commit()
    return tag


def tag_supporter(supporter, *tags) -> None:
    db.session.execute(supporter_tag.insert(), [{"supporter_id": supporter.id, "tag_id": t.id} for t in tags])
    db.session.commit()


def days_ago(n: float):
    return utcnow() - timedelta(days=n)


def engage(message, kind: str, when=None) -> EngagementEvent:
    event = EngagementEvent(message_id=message.id, supporter_id=message.supporter_id,
                            campaign_id=message.campaign_id, kind=kind, created_at=when or utcnow())
    db.session.add(event)
    db.session.commit()
    return event


def make_segment(name: str, rules) -> Segment:
    segment = Segment(name=name, rules=rules)
    db.session.add(segment)
    db.session.commit()
    return segment


# -- Validation -------------------------------------------------------------------------------
def test_missing_petition_is_reported_with_its_path(app):
    """A petition id that does not exist is refused at the path of the condition that names it."""
    tree = group(cond("email_status", "in", ["subscribed"]),
                 group(cond("petitions", "any_of", {"petition_ids": [424242]}), match="any"))
    with pytest.raises(RuleError) as info:
        validate(tree)
    assert info.value.path == "rules[1].rules[0]"
    assert str(info.value) == "rules[1].rules[0]: petition 424242 does not exist"


@pytest.mark.parametrize("tree, path, words", [
    ({"type": "nope"}, "", "expected a group"),
    (group(match="some"), "", "match must be one of"),
    (group(cond("shoe_size", "in", [1])), "rules[0]", "unknown field 'shoe_size'"),
    (group(cond("tags", "near", [1])), "rules[0]", "tags does not support 'near'"),
    (group(cond("email_status", "in", ["happy"])), "rules[0]", "unknown email status"),
    (group(cond("country", "in", ["GBR"])), "rules[0]", "not a two-letter country code"),
    (group(cond("postal_code", "starts_with", ["SW1%"])), "rules[0]", "not a postal code prefix"),
    (group(cond("created", "between", {})), "rules[0]", "give a start date"),
    (group(cond("created", "between", {"date_from": "2024-13-01"})), "rules[0]", "must be a date"),
    (group(cond("source", "starts_with", "fax")), "rules[0]", "source must be one of"),
    (group(cond("tags", "any_of", [])), "rules[0]", "choose at least one tag"),
    (group(cond("custom_field", "equals", {"key": 'a"b', "value": "x"})), "rules[0]", "custom field name"),
    (group(cond("petitions", "any_of", {"petition_ids": ["x"]})), "rules[0]", "not a petition id"),
    (group("condition"), "rules[0]", "must be a group or a condition"),
])
def test_malformed_trees_are_refused_with_paths(app, tree, path, words):
    """Unknown fields and ops, bad values and bad shapes are RuleErrors naming the node at fault."""
    with pytest.raises(RuleError) as info:
        validate(tree)
    assert info.value.path == path
    assert words in info.value.message


def test_depth_and_size_limits(app):
    """Groups nest at most five deep and a tree holds at most fifty conditions."""
    deep = group()
    node = deep
    for _ in range(5):
        child = group()
        node["rules"].append(child)
        node = child
    with pytest.raises(RuleError) as info:
        validate(deep)
    assert info.value.path == "rules[0].rules[0].rules[0].rules[0].rules[0]"
    assert "at most 5 levels" in info.value.message
    wide = group(*[cond("source", "starts_with", "api")] * 51)
    with pytest.raises(RuleError) as info:
        validate(wide)
    assert info.value.path == "rules[50]"


@pytest.mark.parametrize("op, value, words", [
    ("opened", {"within_days": "soon"}, "within_days must be a whole number"),
    ("received", {"within_days": 0}, "within_days must be a whole number"),
    ("received", {"campaign_id": "spring"}, "'spring' is not a campaign id"),
    ("received_at_least", {"count": 0, "within_days": 30}, "count must be a whole number from 1"),
    ("received_at_most", {"within_days": 30}, "count must be a whole number from 0"),
    ("clicked", 30, "value must be an object"),
    ("bounced", {}, "engagement does not support 'bounced'"),
])
def test_engagement_conditions_are_validated(app, op, value, words):
    """Engagement values are checked for shape with the path of the condition at fault."""
    with pytest.raises(RuleError) as info:
        validate(group(cond("country", "in", ["GB"]), cond("engagement", op, value)))
    assert info.value.path == "rules[1]"
    assert words in info.value.message


def test_missing_campaign_is_reported_with_its_path(app):
    """A campaign id that does not exist is refused naming the condition, like a petition."""
    tree = group(group(cond("engagement", "opened", {"campaign_id": 4242, "within_days": 30}), match="none"))
    with pytest.raises(RuleError) as info:
        validate(tree)
    assert str(info.value) == "rules[0].rules[0]: campaign 4242 does not exist"


def test_engagement_values_are_normalised(app):
    """Ids and days given as text become ints; options that do not apply are dropped."""
    spring = make_campaign(name="Spring update", status="sent")
    tree = validate(group(cond("engagement", "received", {"campaign_id": str(spring.id), "within_days": "7"}),
                          cond("engagement", "never_opened", {"within_days": 5}),
                          cond("engagement", "received_at_most", {"count": "2", "campaign_id": spring.id})))
    assert [c["value"] for c in tree.tree["rules"]] == [
        {"campaign_id": spring.id, "within_days": 7}, {}, {"count": 2}]
    assert tree.campaigns == {spring.id: "Spring update"}


def test_referenced_ids_are_found_in_unvalidated_trees():
    """Segment and campaign ids are collected from any depth, ignoring junk."""
    tree = group(cond("segment", "member", "4"), group(cond("engagement", "opened", {"campaign_id": 9}),
                                                       cond("engagement", "received", {}),
                                                       cond("engagement", "never_opened", "junk"), "junk"))
    assert referenced_segment_ids(tree) == {4}
    assert referenced_campaign_ids(tree) == {9}


# -- Each condition kind ----------------------------------------------------------------------
@pytest.fixture
def mailed(app):
    """Supporters with a spread of messages: recent, old, only queued, bounced, never mailed."""
    spring, autumn = make_campaign(name="Spring", status="sent"), make_campaign(name="Autumn", status="sent")
    recent, old, queued, bounced, never = (make_supporter() for _ in range(5))
    make_message(spring, recent, sent_at=days_ago(40))
    make_message(autumn, recent, sent_at=days_ago(3))
    make_message(spring, old, sent_at=days_ago(40))
    make_message(autumn, queued, status="queued")
    make_message(autumn, bounced, status="bounced", sent_at=days_ago(3))
    return {"spring": spring.id, "autumn": autumn.id, "recent": recent.id, "old": old.id,
            "queued": queued.id, "bounced": bounced.id, "never": never.id}


def test_received_and_not_received(mailed):
    """Received means a message with status sent; any or one campaign, ever or within N days."""
    m = mailed
    everyone = {m[k] for k in ("recent", "old", "queued", "bounced", "never")}
    assert ids(group(cond("engagement", "received", {}))) == {m["recent"], m["old"]}
    assert ids(group(cond("engagement", "received", {"within_days": 14}))) == {m["recent"]}
    assert ids(group(cond("engagement", "received", {"campaign_id": m["spring"]}))) == {m["recent"], m["old"]}
    assert ids(group(cond("engagement", "received", {"campaign_id": m["autumn"]}))) == {m["recent"]}
    assert ids(group(cond("engagement", "received", {"campaign_id": m["spring"], "within_days": 14}))) == set()
    # "Not emailed in the last 14 days": the exact complement, including people never mailed.
    assert ids(group(cond("engagement", "not_received", {"within_days": 14}))) == everyone - {m["recent"]}
    assert ids(group(cond("engagement", "not_received", {}))) == {m["queued"], m["bounced"], m["never"]}
    assert ids(group(cond("engagement", "received", {"within_days": 14}), match="none")) == (
        everyone - {m["recent"]})


def test_received_at_least_and_at_most(mailed):
    """Correlated counts of sent messages; at most keeps the never-mailed (count 0)."""
    m = mailed
    assert ids(group(cond("engagement", "received_at_least", {"count": 2}))) == {m["recent"]}
    assert ids(group(cond("engagement", "received_at_least", {"count": 1}))) == {m["recent"], m["old"]}
    assert ids(group(cond("engagement", "received_at_least", {"count": 1, "within_days": 30}))) == {m["recent"]}
    assert ids(group(cond("engagement", "received_at_most", {"count": 1}))) == {
        m["old"], m["queued"], m["bounced"], m["never"]}
    assert ids(group(cond("engagement", "received_at_most", {"count": 0, "within_days": 30}))) == {
        m["old"], m["queued"], m["bounced"], m["never"]}
    assert compiler.count(group(cond("engagement", "received_at_least", {"count": 3}))) == 0


def test_opened_clicked_and_never_opened(app):
    """Engagement events of kind open / click, any campaign or one, ever or within N days."""
    spring, autumn = make_campaign(name="Spring", status="sent"), make_campaign(name="Autumn", status="sent")
    fresh, stale, clicker, silent, unmailed = (make_supporter() for _ in range(5))
    engage(make_message(spring, fresh, sent_at=days_ago(10)), "open", days_ago(9))
    engage(make_message(autumn, stale, sent_at=days_ago(200)), "open", days_ago(199))
    clicked = make_message(autumn, clicker, sent_at=days_ago(5))
    engage(clicked, "click", days_ago(4))
    engage(clicked, "unsubscribe", days_ago(4))
    make_message(spring, silent, sent_at=days_ago(5))
    assert ids(group(cond("engagement", "opened", {}))) == {fresh.id, stale.id}
    assert ids(group(cond("engagement", "opened", {"within_days": 90}))) == {fresh.id}
    assert ids(group(cond("engagement", "opened", {"campaign_id": autumn.id}))) == {stale.id}
    assert ids(group(cond("engagement", "not_opened", {"within_days": 90}))) == {
        stale.id, clicker.id, silent.id, unmailed.id}
    assert ids(group(cond("engagement", "never_opened", {}))) == {clicker.id, silent.id, unmailed.id}
    assert ids(group(cond("engagement", "clicked", {"within_days": 30}))) == {clicker.id}
    assert ids(group(cond("engagement", "clicked", {"campaign_id": spring.id}))) == set()
    assert ids(group(cond("engagement", "not_clicked", {"campaign_id": autumn.id}))) == {
        fresh.id, stale.id, silent.id, unmailed.id}


def test_people_only_leaves_machines_events_out(app):
    """An open only an image proxy made, and a click only a scanner made, count for "opened" and
    "clicked" unless the condition asks for people only; then those supporters are "not opened"."""
    spring = make_campaign(name="Spring", status="sent")
    proxied, reader, scanned = (make_supporter() for _ in range(3))
    machine_open = engage(make_message(spring, proxied, sent_at=days_ago(3)), "open", days_ago(3))
    machine_open.is_machine = True
    engage(make_message(spring, reader, sent_at=days_ago(3)), "open", days_ago(2))
    scanner_click = engage(make_message(spring, scanned, sent_at=days_ago(3)), "click", days_ago(3))
    scanner_click.is_machine = True
    db.session.commit()
    people = {"people_only": True}
    assert ids(group(cond("engagement", "opened", {}))) == {proxied.id, reader.id}
    assert ids(group(cond("engagement", "opened", people))) == {reader.id}
    assert ids(group(cond("engagement", "opened", {**people, "campaign_id": spring.id, "within_days": 7}))) == {
        reader.id}
    assert ids(group(cond("engagement", "not_opened", people))) == {proxied.id, scanned.id}
    assert ids(group(cond("engagement", "never_opened", people))) == {proxied.id, scanned.id}
    assert ids(group(cond("engagement", "clicked", {}))) == {scanned.id}
    assert ids(group(cond("engagement", "clicked", people))) == set()
    assert summarise(group(cond("engagement", "opened", {**people, "within_days": 30}))) == (
        "Supporters who opened a campaign email in the last 30 days (people, not machines)")
    assert validate(group(cond("engagement", "never_opened", {"people_only": True, "within_days": 3}))).tree[
        "rules"][0]["value"] == {"people_only": True}
    assert validate(group(cond("engagement", "clicked", {"people_only": False}))).tree["rules"][0]["value"] == {}
    with pytest.raises(RuleError, match="people_only must be true or false"):
        validate(group(cond("engagement", "opened", {"people_only": "yes"})))
    # Only the tests that read what recipients did take it.
    assert validate(group(cond("engagement", "received", {"people_only": True}))).tree["rules"][0]["value"] == {}


def test_engagement_compiles_to_bound_exists_and_count_subqueries(app):
    """Engagement conditions are EXISTS / NOT EXISTS / correlated COUNT with bound values; only
    the event kind, the compiler's own constant, is written out (the partial indexes need it)."""
    spring = make_campaign(status="sent")
    tree = group(cond("engagement", "not_received", {"within_days": 14}),
                 cond("engagement", "opened", {"campaign_id": spring.id}),
                 cond("engagement", "received_at_most", {"count": 737, "within_days": 30}))
    compiled = compiler.segment_query(tree).compile(dialect=db.engine.dialect)
    sql = str(compiled)
    assert "NOT (EXISTS (SELECT" in sql and "FROM engagement_event" in sql
    assert "(SELECT count(*) AS count_1" in sql and "FROM message" in sql
    assert "737" not in sql and "'sent'" not in sql
    assert "engagement_event.kind = 'open'" in sql
    assert {737, spring.id, "sent"} <= set(compiled.params.values())


def test_engagement_probes_use_the_partial_index_of_their_kind(app):
    """Opened / clicked conditions probe ix_engagement_event_{open,click}_supporter_created.

    The statement is explained as the app runs it, values bound. On a near-empty table
    PostgreSQL would rather scan, so scans are priced out for the check.
    """
    from sqlalchemy import event

    def explained(conn, cursor, sql, parameters, context, executemany):
        prefix = "EXPLAIN QUERY PLAN " if db.engine.dialect.name == "sqlite" else "EXPLAIN "
        return prefix + sql, parameters

    for op, index in (("not_opened", "ix_engagement_event_open_supporter_created"),
                      ("clicked", "ix_engagement_event_click_supporter_created")):
        with db.engine.connect() as connection:
            if db.engine.dialect.name == "postgresql":
                connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
                connection.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
            event.listen(connection, "before_cursor_execute", explained, retval=True)
            statement = compiler.segment_query(group(cond("engagement", op, {"within_days": 90})))
            plan = "\n".join(str(row[-1]) for row in connection.execute(statement).cursor.fetchall())
        assert index in plan, plan


def test_partial_index_serves_a_generic_plan_on_postgresql(app):
    """A prepared statement's generic plan still probes the open index: the kind is not a parameter.

    psycopg server-prepares a statement on its 6th run and PostgreSQL then plans it without its
    values; a bound kind could not be matched to the index predicate kind = 'open'.
    """
    if db.engine.dialect.name != "postgresql":
        pytest.skip("generic plans are PostgreSQL's")
    from psycopg import sql
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    statement = compiler.segment_query(group(cond("engagement", "not_opened", {"within_days": 90})))
    compiled = statement.compile(dialect=PGDialect_psycopg(paramstyle="numeric_dollar"),
                                 compile_kwargs={"render_postcompile": True})
    with db.engine.connect() as connection:
        for setting in ("plan_cache_mode = force_generic_plan", "enable_seqscan = off", "enable_bitmapscan = off"):
            connection.exec_driver_sql(f"SET LOCAL {setting}")
        connection.exec_driver_sql(f"PREPARE segment_probe AS {compiled}")
        raw = connection.connection.driver_connection
        values = ", ".join(sql.Literal(compiled.params[name]).as_string(raw) for name in compiled.positiontup)
        plan = "\n".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN EXECUTE segment_probe({values})"))
        connection.exec_driver_sql("DEALLOCATE segment_probe")
    assert "ix_engagement_event_open_supporter_created" in plan, plan


def test_segment_indexes_exist_after_migrating(app):
    """Migration 0007: one partial index per engagement kind; the postal expression index on PostgreSQL."""
    from sqlalchemy import inspect

    inspector = inspect(db.engine)
    events = {ix["name"] for ix in inspector.get_indexes("engagement_event")}
    assert {"ix_engagement_event_open_supporter_created", "ix_engagement_event_click_supporter_created"} <= events
    assert "ix_engagement_event_supporter_kind_created" not in events
    supporters = {ix["name"] for ix in inspector.get_indexes("supporter")}
    assert ("ix_supporter_postal_upper" in supporters) == (db.engine.dialect.name == "postgresql")


def test_engagement_summary_sentences(app):
    """Engagement conditions read as plain phrases, negated ones included."""
    spring = make_campaign(name="Spring update", status="sent")

    def say(op, value):
        return summarise(group(cond("engagement", op, value)))

    assert say("not_received", {"within_days": 14}) == "Supporters who have not been emailed in the last 14 days"
    assert say("received", {"within_days": 30}) == "Supporters who were emailed in the last 30 days"
    assert say("received", {}) == "Supporters who have been emailed"
    assert say("not_received", {}) == "Supporters who have never been emailed"
    assert say("received", {"campaign_id": spring.id}) == "Supporters who received “Spring update”"
    assert say("not_opened", {"campaign_id": spring.id}) == "Supporters who did not open “Spring update”"
    assert say("clicked", {"campaign_id": spring.id, "within_days": 7}) == (
        "Supporters who clicked a link in “Spring update” in the last 7 days")
    assert say("opened", {"within_days": 90}) == "Supporters who opened a campaign email in the last 90 days"
    assert say("not_opened", {"within_days": 90}) == (
        "Supporters who have not opened a campaign email in the last 90 days")
    assert say("never_opened", {}) == "Supporters who have never opened a campaign email"
    assert say("not_clicked", {}) == "Supporters who have never clicked a link in a campaign email"
    assert say("received_at_least", {"count": 3, "within_days": 30}) == (
        "Supporters who were emailed at least 3 times in the last 30 days")
    assert say("received_at_most", {"count": 1, "within_days": 7}) == (
        "Supporters who were emailed at most once in the last 7 days")
    assert say("received_at_most", {"count": 0, "within_days": 7}) == (
        "Supporters who have not been emailed in the last 7 days")


def test_issue_segment_reads_as_one_sentence(app):
    """The issue's example: petitions, subscribed, postal codes, not emailed, never opened."""
    asylum = make_petition(title="Asylum")
    detention = make_petition(title="Detention")
    tree = group(cond("petitions", "any_of", {"petition_ids": [asylum.id, detention.id]}),
                 cond("email_status", "in", ["subscribed"]),
                 cond("postal_code", "starts_with", ["SW1", "N1"]),
                 cond("engagement", "not_received", {"within_days": 14}),
                 cond("engagement", "not_opened", {"within_days": 90}))
    assert summarise(tree) == (
        "Subscribed supporters who signed any of “Asylum”, “Detention” and have postal code starting "
        "with SW1 or N1 and have not been emailed in the last 14 days and have not opened a campaign "
        "email in the last 90 days")


# -- Each condition kind ----------------------------------------------------------------------
def test_petition_conditions_any_all_none_and_time_window(app):
    """any_of / all_of / none_of signatures, optionally only those within N days or a date range."""
    a, b = make_petition(), make_petition()
    both, only_a, old_b, neither = (make_supporter() for _ in range(4))
    make_signature(a, both)
    make_signature(b, both)
    make_signature(a, only_a)
    make_signature(b, old_b, created_at=utcnow() - timedelta(days=90))
    assert ids(group(cond("petitions", "any_of", {"petition_ids": [a.id, b.id]}))) == {both.id, only_a.id, old_b.id}
    assert ids(group(cond("petitions", "all_of", {"petition_ids": [a.id, b.id]}))) == {both.id}
    assert ids(group(cond("petitions", "none_of", {"petition_ids": [a.id]}))) == {old_b.id, neither.id}
    assert ids(group(cond("petitions", "any_of", {"petition_ids": [b.id], "since_days": 30}))) == {both.id}
    old_day = (utcnow() - timedelta(days=90)).date().isoformat()
    assert ids(group(cond("petitions", "any_of", {"petition_ids": [b.id], "date_from": old_day,
                                                  "date_to": old_day}))) == {old_b.id}


def test_email_status_country_postal_code_created_and_source(app):
    """Column conditions: status list, countries, case-insensitive postal prefixes, dates, source."""
    gb = make_supporter(country="GB", postal_code="sw1a 1aa", source="petition:save-the-bees")
    fr = make_supporter(country="FR", postal_code="75001", source="import:3", subscribed=False,
                        created_at=datetime(2020, 5, 1, 12, tzinfo=UTC))
    n1 = make_supporter(country="GB", postal_code="N1 9GU", source="api")
    assert ids(group(cond("email_status", "in", ["never_subscribed"]))) == {fr.id}
    assert ids(group(cond("country", "in", ["gb"]))) == {gb.id, n1.id}
    assert ids(group(cond("postal_code", "starts_with", ["SW1", "n1 "]))) == {gb.id, n1.id}
    assert ids(group(cond("postal_code", "starts_with", ["N19"]))) == set()
    assert ids(group(cond("created", "between", {"date_to": "2020-05-01"}))) == {fr.id}
    assert ids(group(cond("created", "between", {"date_from": "2020-05-02"}))) == {gb.id, n1.id}
    assert ids(group(cond("source", "starts_with", "import"))) == {fr.id}
    assert ids(group(cond("source", "starts_with", "api"))) == {n1.id}


def test_tag_conditions(app):
    """Tags any_of / all_of / none_of."""
    red, blue = make_tag("red"), make_tag("blue")
    both, only_red, none = make_supporter(), make_supporter(), make_supporter()
    tag_supporter(both, red, blue)
    tag_supporter(only_red, red)
    assert ids(group(cond("tags", "any_of", [red.id, blue.id]))) == {both.id, only_red.id}
    assert ids(group(cond("tags", "all_of", [red.id, blue.id]))) == {both.id}
    assert ids(group(cond("tags", "none_of", [blue.id]))) == {only_red.id, none.id}


def test_custom_field_equals_and_contains(app):
    """Custom fields compare as text; a missing key never matches, even under "none"."""
    leeds = make_supporter(custom_fields={"branch": "Leeds North", "members": 3, "active": True})
    york = make_supporter(custom_fields={"branch": "York"})
    bare = make_supporter(custom_fields={})
    assert ids(group(cond("custom_field", "equals", {"key": "branch", "value": "York"}))) == {york.id}
    assert ids(group(cond("custom_field", "contains", {"key": "branch", "value": "Leeds"}))) == {leeds.id}
    assert ids(group(cond("custom_field", "contains", {"key": "branch", "value": "leeds"}))) == set()
    assert ids(group(cond("custom_field", "equals", {"key": "members", "value": "3"}))) == {leeds.id}
    assert ids(group(cond("custom_field", "equals", {"key": "active", "value": "true"}))) == {leeds.id}
    assert ids(group(cond("custom_field", "equals", {"key": "branch", "value": "York"}), match="none")) == {
        leeds.id, bare.id}


def test_values_are_bound_parameters(app):
    """A value shaped like SQL injection is just text that matches nothing."""
    make_supporter(custom_fields={"branch": "York"})
    evil = "' OR 1=1 --"
    assert ids(group(cond("custom_field", "equals", {"key": evil, "value": evil}))) == set()
    assert ids(group(cond("custom_field", "contains", {"key": "branch", "value": evil}))) == set()
    sql = str(compiler.segment_query(group(cond("custom_field", "equals", {"key": "branch", "value": evil}))))
    assert evil not in sql


def test_erased_supporters_are_always_excluded(app):
    """Erased supporters never appear, even in an empty "all" segment (everyone)."""
    kept = make_supporter()
    make_supporter(erased_at=utcnow())
    assert ids(group()) == {kept.id}
    assert ids(group(match="any")) == set()
    assert compiler.count(group()) == 1


# -- Nesting and segments ---------------------------------------------------------------------
def test_nested_all_any_none(app):
    """all(subscribed, any(GB, tag red), none(source import)) selects exactly the right people."""
    red = make_tag("red")
    gb = make_supporter(country="GB", source="petition:x")
    tagged = make_supporter(country="FR", source="api")
    tag_supporter(tagged, red)
    make_supporter(country="GB", source="import:1")  # excluded by none
    make_supporter(country="GB", subscribed=False)  # not subscribed
    make_supporter(country="FR")  # neither GB nor red
    tree = group(cond("email_status", "in", ["subscribed"]),
                 group(cond("country", "in", ["GB"]), cond("tags", "any_of", [red.id]), match="any"),
                 group(cond("source", "starts_with", "import"), match="none"))
    assert ids(tree) == {gb.id, tagged.id}
    assert compiler.count(tree) == 2
    assert [row["id"] for row in compiler.sample(tree)] == [tagged.id, gb.id]


def test_segment_membership_inlines_the_referenced_tree(app):
    """member / not_member of another segment use that segment's current rules."""
    gb = make_supporter(country="GB")
    fr = make_supporter(country="FR")
    british = make_segment("British", group(cond("country", "in", ["GB"])))
    assert ids(group(cond("segment", "member", british.id))) == {gb.id}
    assert ids(group(cond("segment", "not_member", british.id))) == {fr.id}
    assert "are in segment “British”" in summarise(group(cond("segment", "member", british.id)))


def test_segment_cycles_are_refused_naming_the_segment(app):
    """A segment that (through another) includes itself is refused with the names in the loop."""
    a = make_segment("Alpha", group())
    b = make_segment("Beta", group(cond("segment", "member", a.id)))
    with pytest.raises(RuleError) as info:
        validate(group(cond("segment", "member", b.id)), segment_id=a.id)
    assert info.value.path == "rules[0]"
    assert "“Alpha”" in info.value.message and "“Beta”" in info.value.message
    with pytest.raises(RuleError) as info:
        validate(group(cond("segment", "not_member", a.id)), segment_id=a.id)
    assert "segments cannot include themselves" in info.value.message


def test_summary_sentence(app):
    """The summary reads as one sentence with the petition's title and the prefixes."""
    petition = make_petition(title="A fair and humane asylum system")
    tree = group(cond("email_status", "in", ["subscribed"]),
                 cond("petitions", "any_of", {"petition_ids": [petition.id]}),
                 cond("postal_code", "starts_with", ["SW1", "N1"]))
    assert summarise(tree) == ("Subscribed supporters who signed “A fair and humane asylum system” "
                               "and have postal code starting with SW1 or N1")
    assert summarise(group()) == "All supporters"
    assert summarise(group(match="any")) == "No supporters"
    assert summarise(group(cond("source", "starts_with", "api"), match="none")) == (
        "Supporters except those who came from the API")


# -- Pages ------------------------------------------------------------------------------------
def test_preview_returns_count_sample_and_summary(client_as):
    """POST /segments/preview answers {count, sample, summary} for a valid tree."""
    client = client_as("analyst")
    make_supporter(country="GB", email="gb@example.net")
    make_supporter(country="FR")
    response = client.post("/segments/preview", json={"rules": group(cond("country", "in", ["GB"]))})
    assert response.status_code == 200
    body = response.get_json()
    assert body["count"] == 1
    assert [s["email"] for s in body["sample"]] == ["gb@example.net"]
    assert body["summary"] == "Supporters who are in country GB"


def test_preview_refuses_bad_trees_with_path(client_as):
    """A bad tree is a 400 with the error and the path of the offending node."""
    client = client_as("organizer")
    response = client.post("/segments/preview", json={"rules": group(group(cond("tags", "any_of", [99999])))})
    assert response.status_code == 400
    assert response.get_json() == {"error": "rules[0].rules[0]: tag 99999 does not exist",
                                   "path": "rules[0].rules[0]"}
    response = client.post("/segments/preview", data="not json", content_type="application/json")
    assert response.status_code == 400 and "error" in response.get_json()


def test_save_refuses_invalid_rules_and_saves_nothing(client_as):
    """An invalid tree on save shows a form error (400) and writes no segment."""
    client = client_as("organizer")
    rules = json.dumps(group(cond("petitions", "any_of", {"petition_ids": [31337]})))
    response = client.post("/segments/new", data={"name": "Broken", "rules": rules})
    assert response.status_code == 400
    assert "rules[0]: petition 31337 does not exist" in response.text
    response = client.post("/segments/new", data={"name": "Also broken", "rules": "{nope"})
    assert response.status_code == 400 and "not valid JSON" in response.text
    assert db.session.scalar(db.select(db.func.count()).select_from(Segment)) == 0


def test_every_segment_error_shows_in_one_submit(client_as):
    """A missing name and broken rules are both reported at once, each message once."""
    client = client_as("organizer")
    rules = json.dumps(group(cond("petitions", "any_of", {"petition_ids": [31337]})))
    response = client.post("/segments/new", data={"name": "", "rules": rules})
    assert response.status_code == 400
    found = re.findall(r'<p class="error" id="([\w-]+)-err" role="alert">([^<]*)</p>', response.text)
    assert [name for name, _ in found] == ["name", "rules"]
    assert "rules[0]: petition 31337 does not exist" in found[1][1]


def test_save_edit_duplicate_and_delete(client_as):
    """Organizers create, edit, duplicate and delete segments; names stay unique."""
    client = client_as("organizer")
    rules = json.dumps(group(cond("country", "in", ["GB"])))
    response = client.post("/segments/new", data={"name": "British", "rules": rules})
    assert response.status_code == 302
    segment = db.session.scalar(db.select(Segment))
    assert segment.rules == group(cond("country", "in", ["GB"]))
    assert segment.created_by_id == client.user.id
    response = client.post("/segments/new", data={"name": "British", "rules": rules})
    assert response.status_code == 400 and "already has this name" in response.text
    response = client.post(f"/segments/{segment.id}/edit", data={"name": "UK", "rules": rules})
    assert response.status_code == 302
    assert client.get("/segments/").status_code == 200
    assert "Supporters who are in country GB" in client.get("/segments/").text
    assert client.post(f"/segments/{segment.id}/duplicate").status_code == 302
    assert set(db.session.scalars(db.select(Segment.name))) == {"UK", "Copy of UK"}
    assert client.post(f"/segments/{segment.id}/delete").status_code == 302
    assert set(db.session.scalars(db.select(Segment.name))) == {"Copy of UK"}


def test_delete_refused_while_another_segment_refers_to_it(client_as):
    """A segment another segment includes cannot be deleted."""
    client = client_as("organizer")
    base = make_segment("Base", group())
    make_segment("User", group(cond("segment", "member", base.id)))
    response = client.post(f"/segments/{base.id}/delete", follow_redirects=True)
    assert "Other segments refer to this one: “User”" in response.text
    assert db.session.get(Segment, base.id) is not None


@pytest.mark.parametrize("status", ["scheduled", "sending", "paused"])
def test_delete_refused_while_an_active_campaign_uses_it(client_as, status):
    """A segment a scheduled, sending or paused campaign targets is in use and cannot be deleted."""
    client = client_as("organizer")
    segment = make_segment("Target", group())
    campaign = make_campaign(segment=segment, status=status)
    assert service.segment_in_use(segment)
    response = client.post(f"/segments/{segment.id}/delete", follow_redirects=True)
    assert "A scheduled, sending or paused campaign uses this segment." in response.text
    assert db.session.get(Segment, segment.id) is not None
    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).segment_id == segment.id


def test_delete_detaches_drafts_and_finished_campaigns(client_as):
    """Drafts and sent campaigns do not hold a segment: delete clears their link and says so."""
    client = client_as("organizer")
    segment = make_segment("Old list", group())
    other = make_segment("Other", group())
    draft = make_campaign(segment=segment, status="draft")
    sent = make_campaign(segment=segment, status="sent")
    elsewhere = make_campaign(segment=other, status="scheduled")
    assert not service.segment_in_use(segment)
    response = client.post(f"/segments/{segment.id}/delete", follow_redirects=True)
    assert "Deleted “Old list”. 1 draft campaign no longer has a segment" in response.text
    db.session.expire_all()
    assert db.session.get(Segment, segment.id) is None
    assert db.session.get(Campaign, draft.id).segment_id is None
    assert db.session.get(Campaign, sent.id).segment_id is None
    assert db.session.get(Campaign, elsewhere.id).segment_id == other.id


def test_builder_pages_render(client_as):
    """The builder page carries the petitions and tags as JSON and the rules textarea."""
    client = client_as("organizer")
    make_petition(title="Save </script> the bees")
    response = client.get("/segments/new")
    assert response.status_code == 200
    assert 'id="rules"' in response.text and "segments.js" in response.text
    assert "</script> the bees" not in response.text  # JSON data escaped inside <script>
    make_campaign(name="Spring <update>", status="sent")
    make_campaign(name="Unsent draft", status="draft")
    page = client.get("/segments/new").text
    assert "Spring \\u003cupdate\\u003e" in page and "Unsent draft" not in page
    segment = make_segment("Everyone", group())
    assert client.get(f"/segments/{segment.id}/edit").status_code == 200
    assert client.get(f"/segments/{segment.id}").status_code == 200


def test_analyst_can_preview_and_export_but_not_save(client_as):
    """Analysts may preview and export (audit-logged) but saving, duplicating or deleting is 403."""
    client = client_as("analyst")
    supporter = make_supporter(country="GB", email="=cmd@example.net")
    segment = make_segment("British", group(cond("country", "in", ["GB"])))
    assert client.post("/segments/preview", json={"rules": group()}).status_code == 200
    assert client.post("/segments/new", data={"name": "x", "rules": "{}"}).status_code == 403
    assert client.post(f"/segments/{segment.id}/delete").status_code == 403
    assert client.post(f"/segments/{segment.id}/duplicate").status_code == 403
    response = client.get(f"/segments/{segment.id}/export?format=csv")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.text.lstrip("\ufeff"))))
    assert rows[0][:2] == ["id", "email"] and rows[1][0] == str(supporter.id)
    entry = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "segments.export"))
    assert entry.staff_user_id == client.user.id and entry.details["rows"] == 1
    response = client.get(f"/segments/{segment.id}/export?format=xlsx")
    assert response.status_code == 200 and response.data[:2] == b"PK"
    assert client.get(f"/segments/{segment.id}/export?format=pdf").status_code == 400


def test_preview_is_csrf_protected_and_accepts_the_header_token(make_app):
    """With CSRF on, preview without a token is refused; the page's token in X-CSRFToken works."""
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        user = factories.make_staff("organizer")
        client = app.test_client()
        with client.session_transaction() as session:
            session["_user_id"] = str(user.id)
            session["_fresh"] = True
        page = client.get("/segments/new")
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
        assert client.post("/segments/preview", json={"rules": group()}).status_code == 400
        response = client.post("/segments/preview", json={"rules": group()}, headers={"X-CSRFToken": token})
        assert response.status_code == 200 and response.get_json()["summary"] == "All supporters"
