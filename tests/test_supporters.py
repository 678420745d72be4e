"""The supporter list (filters, sorting, keyset pages, bulk tags), the profile and privacy tools."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func

from crm.extensions import db
from crm.models import AuditLog, ConsentEvent, Message, Segment, Signature, Supporter, Suppression, Tag, utcnow
from crm.supporters import service
from crm.supporters.service import SupporterFilter
from crm.supporters.suppression import email_hash
from tests import factories


def ids(flt: SupporterFilter) -> set[int]:
    return set(db.session.scalars(service.filtered_query(flt).with_only_columns(Supporter.id)))


def tag(supporter: Supporter, name: str) -> Tag:
    return service.add_tag(supporter, name)


@pytest.fixture
def people(app):
    """A small population with petitions, tags, countries and dated signatures."""
    asylum = factories.make_petition(title="Safe routes")
    detention = factories.make_petition(title="End detention")
    ana = factories.make_supporter(email="ana@example.net", first_name="Ana", last_name="Silva",
                                   country="PT")
    ben = factories.make_supporter(email="ben@example.org", first_name="Ben", last_name="Okafor",
                                   country="GB")
    cy = factories.make_supporter(email="cy@example.org", first_name="Cy", last_name="Silva",
                                  country="GB", subscribed=False)
    factories.make_signature(asylum, ana, created_at=datetime(2026, 3, 1, 12, tzinfo=UTC))
    factories.make_signature(detention, ana, created_at=datetime(2026, 6, 1, 12, tzinfo=UTC))
    factories.make_signature(asylum, ben, created_at=datetime(2026, 5, 10, 23, 59, tzinfo=UTC))
    factories.make_signature(detention, cy, created_at=datetime(2026, 3, 5, 9, tzinfo=UTC))
    volunteer = tag(ben, "volunteer")
    tag(cy, "volunteer")
    return {"ana": ana.id, "ben": ben.id, "cy": cy.id, "asylum": asylum.id,
            "detention": detention.id, "volunteer": volunteer.id}


def test_search_takes_wildcards_literally(people):
    """% and _ in a search are characters to find, not LIKE wildcards."""
    odd = factories.make_supporter(email="under_score@example.net", first_name="Per%cent", last_name="X")
    assert ids(SupporterFilter(q="%")) == {odd.id}
    assert ids(SupporterFilter(q="_")) == {odd.id}
    assert ids(SupporterFilter(q="r_s")) == {odd.id}
    assert ids(SupporterFilter(q="rXs")) == set()


def test_search_uses_the_trigram_index_on_postgresql(people):
    """The list's search expression is the one revision 0008 indexed, to the letter, so PostgreSQL
    uses the index even in a generic plan (psycopg prepares a statement on its 6th run): a bound
    constant inside the expression would not match it."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the trigram index is PostgreSQL's")
    from psycopg import sql
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    statement = service.filtered_query(SupporterFilter(q="silva")).with_only_columns(func.count())
    compiled = statement.compile(dialect=PGDialect_psycopg(paramstyle="numeric_dollar"))
    with db.engine.connect() as connection:
        for setting in ("plan_cache_mode = force_generic_plan", "enable_seqscan = off"):
            connection.exec_driver_sql(f"SET LOCAL {setting}")
        connection.exec_driver_sql(f"PREPARE supporter_search AS {compiled}")
        raw = connection.connection.driver_connection
        values = ", ".join(sql.Literal(compiled.params[name]).as_string(raw) for name in compiled.positiontup)
        explain = f"EXPLAIN EXECUTE supporter_search({values})".replace("%", "%%")  # no placeholders here
        plan = "\n".join(row[0] for row in connection.exec_driver_sql(explain))
        connection.exec_driver_sql("DEALLOCATE supporter_search")
    assert "ix_supporter_search_trgm" in plan, plan


def test_each_filter_selects_the_right_supporters(people):
    """q, status, petition, tag, country and signed-between each narrow the list."""
    p = people
    assert ids(SupporterFilter(q="silva")) == {p["ana"], p["cy"]}
    assert ids(SupporterFilter(q="BEN@EXAMPLE")) == {p["ben"]}
    assert ids(SupporterFilter(q="ana silva")) == {p["ana"]}
    assert ids(SupporterFilter(email_status="never_subscribed")) == {p["cy"]}
    assert ids(SupporterFilter(petition=p["asylum"])) == {p["ana"], p["ben"]}
    assert ids(SupporterFilter(tag=p["volunteer"])) == {p["ben"], p["cy"]}
    assert ids(SupporterFilter(country="GB")) == {p["ben"], p["cy"]}
    between = SupporterFilter.from_args({"date_from": "2026-03-01", "date_to": "2026-03-31"})
    assert ids(between) == {p["ana"], p["cy"]}
    # date_to is inclusive of the whole day
    assert p["ben"] in ids(SupporterFilter.from_args({"date_to": "2026-05-10", "date_from": "2026-05-10"}))


def test_filters_combine_and_dates_apply_to_the_chosen_petition(people):
    """Combined filters AND together; with a petition, the dates are that petition's signature."""
    p = people
    assert ids(SupporterFilter(country="GB", tag=p["volunteer"], email_status="subscribed")) == {p["ben"]}
    march_asylum = SupporterFilter.from_args(
        {"petition": str(p["asylum"]), "date_from": "2026-03-01", "date_to": "2026-03-31"})
    assert ids(march_asylum) == {p["ana"]}
    june_asylum = SupporterFilter.from_args(
        {"petition": str(p["asylum"]), "date_from": "2026-06-01", "date_to": "2026-06-30"})
    assert ids(june_asylum) == set()  # Ana signed *another* petition in June
    assert service.count_supporters(SupporterFilter(q="silva", country="GB")) == 1


def test_invalid_filter_arguments_are_dropped_not_errors(app, client_as):
    """Garbage in filter args is ignored rather than answered with a 500."""
    flt = SupporterFilter.from_args({"petition": "abc", "tag": "-3", "country": "Britain",
                                     "date_from": "2026-13-45", "email_status": "nope"})
    assert flt == SupporterFilter()
    response = client_as("analyst").get("/supporters/?petition=x&date_to=yesterday&country=%3Cb%3E")
    assert response.status_code == 200


def test_erased_supporters_are_never_listed(people):
    """An erased supporter drops out of every filter."""
    erased = db.session.get(Supporter, people["ben"])
    service.erase_supporter(erased, factories.make_staff("admin").id)
    assert people["ben"] not in ids(SupporterFilter())
    assert people["ben"] not in ids(SupporterFilter(petition=people["asylum"]))


def test_list_page_shows_total_and_filter_bar_wrappers(people, client_as):
    """The list shows the match count and wraps each label with its control."""
    page = client_as("analyst").get("/supporters/?country=GB").text
    assert "<strong>2</strong> supporters match" in page
    assert re.search(r'<div class="filter">\s*<label for="country">', page)
    assert "/supporters/export?format=csv&amp;country=GB" in page


def walk(client, sort: str, **args) -> list[int]:
    """Follow Next page links to the end, collecting supporter ids in order."""
    seen = []
    url = "/supporters/?" + "&".join(f"{k}={v}" for k, v in {"sort": sort, **args}.items())
    for _ in range(20):
        page = client.get(url)
        assert page.status_code == 200
        seen += [int(i) for i in re.findall(r'href="/supporters/(\d+)"', page.text)]
        nxt = re.search(r'href="([^"]+)">Next page', page.text)
        if not nxt:
            return seen
        url = nxt.group(1).replace("&amp;", "&")
    raise AssertionError("pagination did not end")


@pytest.mark.parametrize("sort", ["newest", "oldest", "email", "email_desc", "last_name",
                                  "last_name_desc"])
def test_keyset_pages_never_skip_or_repeat_with_ties(app, client_as, monkeypatch, sort):
    """Paging through every sort (many sharing one last name) visits each supporter exactly once."""
    monkeypatch.setattr(service, "PAGE_SIZE", 7)
    for n in range(30):
        factories.make_supporter(last_name="Same" if n % 3 else f"Name|{n % 4}", subscribed=False)
    client = client_as("analyst")
    seen = walk(client, sort)
    everyone = db.session.scalars(db.select(Supporter).where(Supporter.erased_at.is_(None))).all()
    assert sorted(seen) == sorted(s.id for s in everyone) and len(seen) == 30
    column, descending = service.SORTS[sort]
    key = (lambda s: s.id) if column is None else (lambda s: (getattr(s, column), s.id))
    expected = [s.id for s in sorted(everyone, key=key, reverse=descending)]
    assert seen == expected


def test_pagination_keeps_the_filter(app, client_as, monkeypatch):
    """The Next page link carries the filter, so page two is still filtered."""
    monkeypatch.setattr(service, "PAGE_SIZE", 3)
    for _ in range(5):
        factories.make_supporter(country="DE", subscribed=False)
    for _ in range(5):
        factories.make_supporter(country="FR", subscribed=False)
    seen = walk(client_as("analyst"), "last_name", country="DE")
    countries = {db.session.get(Supporter, i).country for i in seen}
    assert len(seen) == 5 and countries == {"DE"}


@pytest.mark.parametrize("after", ["abc", "Smith", "|", "x|y", "-5", "1" * 40])
def test_bad_cursor_is_a_400_not_a_500(app, client_as, after):
    """A tampered `after` argument answers 400."""
    factories.make_supporter()
    client = client_as("analyst")
    sort = "newest" if after in ("abc", "-5") else "last_name"
    assert client.get(f"/supporters/?sort={sort}&after={after}").status_code == 400


def test_unknown_sort_falls_back_to_newest(app, client_as):
    """An unknown sort name shows the default order."""
    assert client_as("analyst").get("/supporters/?sort=drop-table").status_code == 200


def test_bulk_tag_and_untag_the_filtered_set(people, client_as):
    """Bulk add tags every match once (creating the tag); remove untags; both audit-logged."""
    client = client_as("organizer")
    response = client.post("/supporters/bulk-tag", data={"country": "GB", "tag": "gb-team",
                                                         "action": "add"})
    assert response.status_code == 302 and "country=GB" in response.headers["Location"]
    gb_team = db.session.scalar(db.select(Tag).where(Tag.name == "gb-team"))
    assert ids(SupporterFilter(tag=gb_team.id)) == {people["ben"], people["cy"]}
    page = client.get(response.headers["Location"]).text
    assert "Tagged 2 supporters" in page
    # adding again to everyone only touches the one without it
    again = client.post("/supporters/bulk-tag", data={"tag": "gb-team", "action": "add"},
                        follow_redirects=True)
    assert "Tagged 1 supporter " in again.text
    removed = client.post("/supporters/bulk-tag", data={"q": "silva", "tag": "gb-team",
                                                        "action": "remove"}, follow_redirects=True)
    assert "Removed the tag from 2 supporters" in removed.text
    assert ids(SupporterFilter(tag=gb_team.id)) == {people["ben"]}
    entries = db.session.scalars(db.select(AuditLog).where(AuditLog.action == "supporters.bulk_tag")
                                 .order_by(AuditLog.id)).all()
    assert [(e.details["change"], e.details["changed"]) for e in entries] == [
        ("add", 2), ("add", 1), ("remove", 2)]
    assert entries[0].details["filter"] == {"country": "GB"}
    assert entries[0].staff_user_id == client.user.id


def test_bulk_tag_refuses_bad_input_and_analysts(people, client_as):
    """No tag name is a flash error; removing an unknown tag is an error; analysts get 403."""
    client = client_as("organizer")
    empty = client.post("/supporters/bulk-tag", data={}, follow_redirects=True)
    assert "Enter a tag name" in empty.text
    unknown = client.post("/supporters/bulk-tag", data={"tag": "ghost", "action": "remove"},
                          follow_redirects=True)
    assert "no tag called" in unknown.text
    assert client_as("analyst").post("/supporters/bulk-tag", data={"tag": "x"}).status_code == 403


def test_profile_shows_everything_and_single_tag_add_remove(people, client_as):
    """Profile lists fields, tags, notes, signatures, consent with wording, and a Messages section."""
    client = client_as("organizer")
    sid = people["ana"]
    assert client.post(f"/supporters/{sid}/tags", data={"name": " Donor "}).status_code == 302
    assert client.post(f"/supporters/{sid}/notes", data={"notes": "Met at the vigil"}).status_code == 302
    page = client.get(f"/supporters/{sid}").text
    for text in ("Donor", "Met at the vigil", "Safe routes", "End detention", "Test wording",
                 "No campaign messages yet", "Download data (JSON)"):
        assert text in page
    donor = db.session.scalar(db.select(Tag).where(Tag.name == "Donor"))
    assert client.post(f"/supporters/{sid}/tags/{donor.id}/remove").status_code == 302
    db.session.expire_all()
    assert [t.name for t in db.session.get(Supporter, sid).tags] == []
    assert client.post(f"/supporters/{sid}/tags", data={"name": ""}).status_code == 400


def test_profile_edit_normalises_and_refuses_a_taken_email(people, client_as):
    """Edit saves normalised fields; another supporter's address is a form error, nothing saved."""
    client = client_as("organizer")
    sid = people["ana"]
    ok = client.post(f"/supporters/{sid}/edit", data={
        "email": "  Ana.Silva@Example.NET ", "first_name": "Ana", "last_name": "Silva-Costa",
        "postal_code": "n1 1aa", "country": "gb"})
    assert ok.status_code == 302
    db.session.expire_all()
    ana = db.session.get(Supporter, sid)
    assert (ana.email, ana.last_name, ana.postal_code, ana.country) == (
        "ana.silva@example.net", "Silva-Costa", "N1 1AA", "GB")
    taken = client.post(f"/supporters/{sid}/edit", data={"email": "BEN@example.org",
                                                         "last_name": "Changed"})
    assert taken.status_code == 400 and "Another supporter already has this email" in taken.text
    bad = client.post(f"/supporters/{sid}/edit", data={"email": "not an address"})
    assert bad.status_code == 400
    db.session.expire_all()
    assert db.session.get(Supporter, sid).last_name == "Silva-Costa"


def test_staff_unsubscribe_and_resubscribe_need_a_reason(people, client_as):
    """Both record a consent event from staff:<id> with the reason; an empty reason is an error."""
    client = client_as("organizer")
    sid = people["ana"]
    empty = client.post(f"/supporters/{sid}/unsubscribe", data={"reason": "  "})
    assert empty.status_code == 400 and "Give a reason" in empty.text
    assert client.post(f"/supporters/{sid}/unsubscribe", data={"reason": "Asked by phone"}).status_code == 302
    assert client.post(f"/supporters/{sid}/resubscribe", data={"reason": "Asked to rejoin"}).status_code == 302
    events = db.session.scalars(db.select(ConsentEvent).where(ConsentEvent.supporter_id == sid)
                                .order_by(ConsentEvent.id)).all()
    assert [(e.action, e.source, e.reason) for e in events[-2:]] == [
        ("opt_out", f"staff:{client.user.id}", "Asked by phone"),
        ("resubscribe", f"staff:{client.user.id}", "Asked to rejoin")]
    db.session.expire_all()
    assert db.session.get(Supporter, sid).email_status == "subscribed"


def test_resubscribe_is_refused_for_complaints_and_never_subscribed(people, client_as):
    """Staff cannot resubscribe a complainer or someone who never consented."""
    client = client_as("organizer")
    complained = factories.make_supporter(email_status="complained", subscribed=False)
    refused = client.post(f"/supporters/{complained.id}/resubscribe", data={"reason": "please"})
    assert refused.status_code == 400 and "only unsubscribed or bouncing" in refused.text
    never = client.post(f"/supporters/{people['cy']}/resubscribe", data={"reason": "please"})
    assert never.status_code == 400
    assert db.session.scalar(db.select(db.func.count()).select_from(ConsentEvent)
                             .where(ConsentEvent.action == "resubscribe")) == 0


def test_analyst_cannot_change_subscriptions_or_edit(people, client_as):
    """Analysts read and export only."""
    client = client_as("analyst")
    sid = people["ana"]
    assert client.post(f"/supporters/{sid}/unsubscribe", data={"reason": "x"}).status_code == 403
    assert client.post(f"/supporters/{sid}/edit", data={"email": "x@example.org"}).status_code == 403
    assert client.get(f"/supporters/{sid}/erase").status_code == 403
    assert "Unsubscribe" not in client.get(f"/supporters/{sid}").text


def test_subject_access_export_contains_everything_and_is_logged(people, client_as):
    """The DSAR JSON holds fields, tags, notes, signatures and every consent event field."""
    sid = people["ben"]
    ben = db.session.get(Supporter, sid)
    service.save_notes(ben, "Prefers email")
    client = client_as("analyst")
    response = client.get(f"/supporters/{sid}/data.json")
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    data = json.loads(response.data)
    assert data["supporter"]["email"] == "ben@example.org"
    assert data["supporter"]["notes"] == "Prefers email"
    assert data["tags"] == ["volunteer"]
    assert [s["petition_title"] for s in data["signatures"]] == ["Safe routes"]
    event = data["consent_events"][0]
    assert {"action", "source", "wording", "wording_version", "ip", "user_agent",
            "created_at", "reason"} <= set(event)
    assert event["wording"] == "Test wording"
    entry = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "supporter.dsar_export"))
    assert entry.target == f"supporter:{sid}" and entry.staff_user_id == client.user.id


def test_erase_wipes_suppresses_and_keeps_counts(people, client_as):
    """Erase: personal fields gone, hash suppressed, signatures counted, 404 after, no address logged."""
    sid = people["ana"]
    before = db.session.scalar(db.select(db.func.count()).select_from(Signature)
                               .where(Signature.petition_id == people["asylum"]))
    db.session.execute(db.update(ConsentEvent).where(ConsentEvent.supporter_id == sid)
                       .values(ip="203.0.113.9", user_agent="Firefox"))
    db.session.commit()
    admin = client_as("admin")
    wrong = admin.post(f"/supporters/{sid}/erase", data={"confirm": "erase"})
    assert wrong.status_code == 400 and "Type ERASE" in wrong.text
    assert admin.post(f"/supporters/{sid}/erase", data={"confirm": "ERASE"}).status_code == 302
    db.session.expire_all()
    ana = db.session.get(Supporter, sid)
    assert ana.email is None and ana.first_name == ana.last_name == ana.country == ""
    assert ana.erased_at is not None and ana.tags == [] and ana.email_status == "unsubscribed"
    assert db.session.scalar(db.select(Suppression.reason).where(
        Suppression.email_hash == email_hash("ana@example.net"))) == "erased"
    after = db.session.scalar(db.select(db.func.count()).select_from(Signature)
                              .where(Signature.petition_id == people["asylum"]))
    assert after == before
    events = db.session.scalars(db.select(ConsentEvent).where(ConsentEvent.supporter_id == sid)).all()
    assert events and all(e.ip is None and e.user_agent is None for e in events)
    assert admin.get(f"/supporters/{sid}").status_code == 404
    entry = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "supporter.erase"))
    assert entry.staff_user_id == admin.user.id
    assert "ana@example.net" not in json.dumps(entry.details) + entry.target


def test_organizer_cannot_erase(people, client_as):
    """Erasure is admin-only."""
    assert client_as("organizer").post(f"/supporters/{people['ana']}/erase",
                                       data={"confirm": "ERASE"}).status_code == 403


def make_segment(name: str, *rules, match: str = "all") -> Segment:
    segment = Segment(name=name, rules={"type": "group", "match": match, "rules": list(rules)})
    db.session.add(segment)
    db.session.commit()
    return segment


def country_rule(*codes: str) -> dict:
    return {"type": "condition", "field": "country", "op": "in", "value": list(codes)}


def test_segment_filter_narrows_the_list_and_combines(people, client_as):
    """?segment=<id> applies the saved segment's compiled rules, ANDed with the other filters."""
    p = people
    british = make_segment("British", country_rule("GB"))
    assert ids(SupporterFilter(segment=british.id)) == {p["ben"], p["cy"]}
    assert ids(SupporterFilter(segment=british.id, q="silva")) == {p["cy"]}
    assert SupporterFilter.from_args({"segment": str(british.id)}).as_args() == {"segment": str(british.id)}
    page = client_as("analyst").get(f"/supporters/?segment={british.id}").text
    assert "<strong>2</strong> supporters match" in page
    assert re.search(rf'<option value="{british.id}" selected>British</option>', page)
    assert f"/supporters/export?format=csv&amp;segment={british.id}" in page
    assert "ana@example.net" not in page and "ben@example.org" in page


def test_segment_filter_with_engagement_rule(people, client_as):
    """A segment built on engagement ("not emailed in 14 days") filters the list too."""
    p = people
    campaign = factories.make_campaign(status="sent")
    factories.make_message(campaign, db.session.get(Supporter, p["ana"]), sent_at=utcnow() - timedelta(days=2))
    quiet = make_segment("Quiet", {"type": "condition", "field": "engagement", "op": "not_received",
                                   "value": {"within_days": 14}})
    assert ids(SupporterFilter(segment=quiet.id)) == {p["ben"], p["cy"]}


def test_stale_or_missing_segment_matches_no_one_and_says_why(people, client_as):
    """A deleted segment, or one whose rules no longer hold, shows an error and lists no one."""
    client = client_as("analyst")
    broken = make_segment("Broken", {"type": "condition", "field": "tags", "op": "any_of", "value": [98765]})
    assert ids(SupporterFilter(segment=broken.id)) == set()
    page = client.get(f"/supporters/?segment={broken.id}").text
    assert "needs fixing" in page and "tag 98765 does not exist" in page and "No supporters match" in page
    assert "Export CSV" not in page
    gone = client.get("/supporters/?segment=424242").text
    assert "That segment no longer exists." in gone
    refused = client.get(f"/supporters/export?format=csv&segment={broken.id}", follow_redirects=True)
    assert "Nothing exported." in refused.text and refused.mimetype == "text/html"
    assert db.session.scalar(db.select(AuditLog).where(AuditLog.action == "supporters.export")) is None
    tagged = client_as("organizer").post("/supporters/bulk-tag", data={"segment": str(broken.id), "tag": "x"},
                                         follow_redirects=True)
    assert "Nothing tagged." in tagged.text


def test_profile_lists_messages_newest_first_with_engagement(people, client_as, app):
    """Messages show campaign, status and sent/opened/clicked times, newest first; the campaign
    links to its page only when campaigns.show exists."""
    ana = db.session.get(Supporter, people["ana"])
    spring = factories.make_campaign(name="Spring <update>", status="sent")
    summer = factories.make_campaign(name="Summer update", status="sending")
    base = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)
    factories.make_message(spring, ana, created_at=base, sent_at=base,
                           opened_at=base + timedelta(hours=2), clicked_at=base + timedelta(hours=3))
    factories.make_message(summer, ana, status="queued", created_at=base + timedelta(days=60))
    factories.make_message(spring, db.session.get(Supporter, people["ben"]), created_at=base)  # someone else's
    client = client_as("analyst")
    page = client.get(f"/supporters/{ana.id}").text
    section = page.split("<h2>Messages</h2>", 1)[1].split("<h2>", 1)[0]
    assert section.index("Summer update") < section.index("Spring &lt;update&gt;")
    assert "2026-04-01 09:30 UTC" in section and "2026-04-01 11:30 UTC" in section
    assert "2026-04-01 12:30 UTC" in section
    assert 'badge-queued">queued' in section and 'badge-sent">sent' in section
    assert section.count("<tr>") == 3  # header + two messages
    if "campaigns.show" in app.view_functions:
        assert f'href="/campaigns/{spring.id}"' in section
    app.view_functions.pop("campaigns.show", None)
    plain = client.get(f"/supporters/{ana.id}").text.split("<h2>Messages</h2>", 1)[1].split("<h2>", 1)[0]
    assert "<a href" not in plain and "Summer update" in plain


def test_profile_shows_only_the_latest_messages(people, client_as, monkeypatch):
    """The Messages section is bounded (latest MESSAGES_SHOWN) and says so."""
    monkeypatch.setattr(service, "MESSAGES_SHOWN", 2)
    ana = db.session.get(Supporter, people["ana"])
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(3):
        factories.make_message(factories.make_campaign(name=f"Update {n}", status="sent"), ana,
                               created_at=base + timedelta(days=n), sent_at=base + timedelta(days=n))
    page = client_as("analyst").get(f"/supporters/{ana.id}").text
    assert "The latest 2 messages." in page
    assert "Update 2" in page and "Update 1" in page and "Update 0" not in page


def test_erase_wipes_message_addresses_but_keeps_the_rows(people, client_as):
    """Erasure empties message.email (and SMTP error text) for that supporter only; rows stay."""
    ana, ben = db.session.get(Supporter, people["ana"]), db.session.get(Supporter, people["ben"])
    campaign = factories.make_campaign(status="sent")
    factories.make_message(campaign, ana, sent_at=utcnow(), error="")
    factories.make_message(factories.make_campaign(status="sent"), ana, status="bounced",
                           error="550 5.1.1 <ana@example.net>: no such user")
    factories.make_message(campaign, ben, sent_at=utcnow())
    service.erase_supporter(ana, factories.make_staff("admin").id)
    rows = db.session.execute(db.select(Message.supporter_id, Message.email, Message.error, Message.status)
                              .order_by(Message.id)).all()
    assert [tuple(r) for r in rows] == [(people["ana"], None, "", "sent"), (people["ana"], None, "", "bounced"),
                                        (people["ben"], "ben@example.org", "", "sent")]


def test_the_supporter_list_leads_to_imports_for_those_who_may_import(client_as):
    assert 'href="/imports/new"' in client_as("organizer").get("/supporters/").text
    analyst_page = client_as("analyst").get("/supporters/").text
    assert 'href="/imports/new"' not in analyst_page and 'href="/imports/"' in analyst_page


def test_list_queries_are_planned_for_their_values_on_postgresql(people):
    """The list's COUNT and page run with custom plans, so a statement psycopg has prepared is
    still planned for this search (a generic plan walks the whole table for a rare term)."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("plan caching is PostgreSQL's")
    for _ in range(12):  # past psycopg's prepare threshold and PostgreSQL's generic-plan switch
        assert service.count_supporters(SupporterFilter(q="silva")) == 2
        assert len(service.page_of_supporters(SupporterFilter(q="silva"))[0]) == 2
        assert db.session.execute(db.text("SHOW plan_cache_mode")).scalar() == "force_custom_plan"
        db.session.commit()
    assert db.session.execute(db.text("SHOW plan_cache_mode")).scalar() == "auto"  # SET LOCAL: this transaction only


def test_profile_edit_reports_every_problem_and_never_cuts(app, client_as):
    """A taken address, an unknown country and an over-long name come back together; nothing is saved or cut."""
    factories.make_supporter(email="taken@example.org")
    person = factories.make_supporter(email="me@example.org", first_name="Me")
    response = client_as("organizer").post(f"/supporters/{person.id}/edit", data={
        "email": "taken@example.org", "first_name": "N" * 101, "last_name": "", "postal_code": "", "country": "XX"})
    assert response.status_code == 400
    page = response.text
    assert "Another supporter already has this email address." in page
    assert "First name longer than 100 characters." in page and "Choose a country from the list." in page
    db.session.expire_all()
    assert (person.email, person.first_name, person.country) == ("me@example.org", "Me", "")
    ok = client_as("organizer").post(f"/supporters/{person.id}/edit", data={
        "email": "me@example.org", "first_name": "Mé", "last_name": "", "postal_code": "", "country": "FR"})
    assert ok.status_code == 302
    db.session.expire_all()
    assert person.country == "FR"
    assert "<option selected value=\"FR\">France</option>" in client_as("organizer").get(
        f"/supporters/{person.id}/edit").text
