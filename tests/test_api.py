"""The OSDI API: keys and scopes, paging and filters, the helpers' rules, bad input, statistics."""

from __future__ import annotations

import json

import pytest

from api.keys import hash_token
from crm.extensions import db
from crm.models import ApiKey, AuditLog, ConsentEvent, ConsentWording, Signature, Supporter, Tag
from tests import factories

HEADER = "OSDI-API-Token"


@pytest.fixture
def token(app):
    return factories.make_api_key("read_write")[1]


def call(client, method: str, url: str, token: str | None, body=None, **kwargs):
    headers = {HEADER: token} if token else {}
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if body is not None:
        kwargs.setdefault("content_type", "application/json")
    return client.open(url, method=method, headers=headers, data=body, **kwargs)


def open_petition(**overrides):
    petition = factories.make_petition(**overrides)
    db.session.add(ConsentWording(petition_id=petition.id, version=1, mode=petition.consent_mode,
                                  text=petition.consent_wording))
    db.session.commit()
    return petition


def person_body(email: str, **person) -> dict:
    return {"person": {"email_addresses": [{"address": email, "status": "subscribed"}], **person}}


# ---- keys --------------------------------------------------------------------------------------

def test_no_key_unknown_key_and_revoked_key_get_401_json(app, client):
    """Without a valid key every endpoint answers 401 as JSON; revoking a key refuses its next request."""
    key_id, token = factories.make_api_key("read")
    assert call(client, "GET", "/api/v1/people", None).status_code == 401
    wrong = call(client, "GET", "/api/v1/people", "crm_not-a-key")
    assert wrong.status_code == 401 and "OSDI-API-Token" in wrong.json["error"]
    assert call(client, "GET", "/api/v1/people", token).status_code == 200
    from api.keys import revoke_key

    revoke_key(db.session.get(ApiKey, key_id), None)
    assert call(client, "GET", "/api/v1/people", token).status_code == 401


def test_keys_are_stored_as_their_sha256_only(app):
    """The token itself is nowhere in the database: only its hash and a short prefix."""
    key_id, token = factories.make_api_key()
    key = db.session.get(ApiKey, key_id)
    assert key.token_hash == hash_token(token) and token not in (key.token_hash, key.token_prefix)


def test_read_only_key_cannot_write(app, client):
    """A read key writing gets 403 JSON and nothing is written."""
    petition = open_petition()
    _, token = factories.make_api_key("read")
    response = call(client, "POST", f"/api/v1/petitions/{petition.id}/signatures", token,
                    person_body("reader@example.net"))
    assert response.status_code == 403 and "read only" in response.json["error"]
    assert db.session.scalar(db.select(db.func.count()).select_from(Signature)) == 0


def test_rate_limit_answers_429_with_retry_after(make_app):
    """Past the per-key limit the answer is 429 with Retry-After in seconds."""
    app = make_app(API_RATE_LIMIT="3/minute")
    with app.app_context():
        _, token = factories.make_api_key("read")
        client = app.test_client()
        answers = [call(client, "GET", "/api/v1/tags", token).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        refused = call(client, "GET", "/api/v1/tags", token)
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 61
        _, other = factories.make_api_key("read")
        assert call(client, "GET", "/api/v1/tags", other).status_code == 200  # per key


def test_api_ignores_and_never_sets_cookies(app, client_as, token):
    """A staff session cookie authorises nothing on the API, and API answers set no cookie."""
    admin = client_as("admin")
    assert admin.get("/api/v1/people").status_code == 401
    answer = call(admin, "GET", "/api/v1/people", token)
    assert answer.status_code == 200 and "Set-Cookie" not in answer.headers
    signup = call(admin, "POST", "/api/v1/people", token, {**person_body("c@example.net"),
                                                            "consent_wording": "Yes please"})
    assert signup.status_code == 201 and "Set-Cookie" not in signup.headers
    entry = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "api.person_signup"))
    assert entry.staff_user_id is None and entry.details["api_key"].startswith("Test key")


def test_admin_makes_a_key_shown_once_and_revokes_it(app, client_as):
    """Settings → API keys: the token is in the creation answer only; organizers may not enter."""
    admin = client_as("admin")
    made = admin.post("/settings/api-keys", data={"label": "Website form", "scope": "read_write"})
    assert made.status_code == 201
    key = db.session.scalar(db.select(ApiKey).where(ApiKey.label == "Website form"))
    token = made.text.split('id="new-token">')[1].split("<")[0]
    assert hash_token(token) == key.token_hash
    assert token not in admin.get("/settings/api-keys").text
    assert client_as("organizer").get("/settings/api-keys").status_code == 403
    assert admin.post(f"/settings/api-keys/{key.id}/revoke").status_code == 302
    assert call(app.test_client(), "GET", "/api/v1/", token).status_code == 401
    assert db.session.scalar(db.select(AuditLog.id).where(AuditLog.action == "api.key_revoke")) is not None


# ---- paging and filters --------------------------------------------------------------------------

def _ids(page: dict) -> list[int]:
    return [int(p["identifiers"][0].rsplit(":", 1)[1]) for p in page["_embedded"]["osdi:people"]]


def test_people_page_through_next_links_in_modified_order(app, client, token):
    """Following next visits everyone once, in (modified_date, id) order; a page asked cold is the same page."""
    made = [factories.make_supporter().id for _ in range(23)]
    url, seen, pages = "/api/v1/people?per_page=10", [], []
    while url:
        page = call(client, "GET", url, token).json
        pages.append(page)
        seen += _ids(page)
        url = page["_links"].get("next", {}).get("href")
    assert sorted(seen) == sorted(made) and len(seen) == 23
    assert [p["total_records"] for p in pages] == [23, 23, 23] and pages[0]["total_pages"] == 3
    assert "prev" in pages[1]["_links"] and "prev" not in pages[0]["_links"]
    from crm.redis_conn import get_redis

    for key in get_redis().scan_iter("crm:api:people:cursor:*"):
        get_redis().delete(key)
    assert _ids(call(client, "GET", "/api/v1/people?per_page=10&page=3", token).json) == _ids(pages[2])


def test_person_resource_has_osdi_fields(app, client, token):
    """identifiers, dates, email with status, postal address, custom fields and links."""
    supporter = factories.make_supporter(email="ana@example.net", postal_code="N1 1AA", country="GB",
                                         custom_fields={"volunteer": "yes"})
    body = call(client, "GET", f"/api/v1/people/{supporter.id}", token).json
    assert body["identifiers"] == [f"crm:person:{supporter.id}"]
    assert body["email_addresses"] == [{"primary": True, "address": "ana@example.net", "status": "subscribed"}]
    assert body["postal_addresses"][0] == {"primary": True, "postal_code": "N1 1AA", "country": "GB"}
    assert body["custom_fields"] == {"volunteer": "yes"} and body["modified_date"].endswith("Z")
    assert body["_links"]["self"]["href"].endswith(f"/api/v1/people/{supporter.id}")


def test_filters_on_email_and_modified_date(app, client, token):
    """email_address eq finds one person; modified_date gt/lt split by time; both with and."""
    from datetime import UTC, datetime, timedelta

    old = factories.make_supporter(email="old@example.net")
    old.updated_at = datetime(2020, 1, 1, tzinfo=UTC)
    db.session.commit()
    new = factories.make_supporter(email="new@example.net")
    cut = (datetime.now(UTC) - timedelta(days=1)).isoformat()

    def found(expression: str) -> list[int]:
        response = call(client, "GET", "/api/v1/people", token, query_string={"filter": expression})
        assert response.status_code == 200, response.json
        return _ids(response.json)

    assert found("email_address eq 'NEW@example.net'") == [new.id]
    assert found(f"modified_date gt '{cut}'") == [new.id]
    assert found(f"modified_date lt '{cut}'") == [old.id]
    assert found("modified_date gt '2019-01-01' and email_address eq 'old@example.net'") == [old.id]


@pytest.mark.parametrize("expression, named", [
    ("given_name eq 'Ana'", "given_name"), ("modified_date ge '2020-01-01'", "ge"),
    ("modified_date gt 'yesterday'", "yesterday"), ("email_address gt 'a@example.net'", "eq only"),
    ("modified_date gt '2020-01-01' or email_address eq 'a@b.org'", "or"), ("modified_date gt", "expected"),
    ("email_address eq 'not an email'", "email_address"), ("modified_date gt '2020", "quote"),
])
def test_unsupported_filters_are_400_naming_the_problem(app, client, token, expression, named):
    """A filter we cannot answer exactly is refused, never ignored."""
    response = call(client, "GET", "/api/v1/people", token, query_string={"filter": expression})
    assert response.status_code == 400 and response.json["field"] == "filter"
    assert named in response.json["error"]


@pytest.mark.parametrize("query", ["page=0", "per_page=26", "page=x", "per_page=-1", "page=99999999999"])
def test_bad_paging_is_400(app, client, token, query):
    """page and per_page outside their ranges name themselves."""
    response = call(client, "GET", f"/api/v1/people?{query}", token)
    assert response.status_code == 400 and response.json["field"] in ("page", "per_page")


# ---- helpers -------------------------------------------------------------------------------------

def test_record_signature_helper_signs_as_the_public_form(app, client, token):
    """The supporter appears with an opt-in carrying the wording version and the key's label as source."""
    petition = open_petition()
    body = {**person_body("signer@example.net", given_name="Ana", family_name="Silva",
                          postal_addresses=[{"postal_code": "N1 1AA", "country": "GB"}]),
            "comments": "Because", "add_tags": ["website"]}
    response = call(client, "POST", f"/api/v1/petitions/{petition.id}/signatures", token, body)
    assert response.status_code == 201, response.json
    assert response.json["_embedded"]["osdi:person"]["email_addresses"][0]["status"] == "subscribed"
    supporter = db.session.scalar(db.select(Supporter).where(Supporter.email == "signer@example.net"))
    assert (supporter.first_name, supporter.postal_code, supporter.country) == ("Ana", "N1 1AA", "GB")
    event = db.session.scalar(db.select(ConsentEvent).where(ConsentEvent.supporter_id == supporter.id))
    label = db.session.scalar(db.select(ApiKey.label))
    assert (event.action, event.wording_version, event.source) == ("opt_in", 1, f"api:{label}")
    assert event.wording == petition.consent_wording
    assert [t.name for t in supporter.tags] == ["website"]
    signature = db.session.scalar(db.select(Signature).where(Signature.supporter_id == supporter.id))
    assert signature.source == f"api:{label}" and signature.comment == "Because"
    again = call(client, "POST", f"/api/v1/petitions/{petition.id}/signatures", token,
                 person_body("signer@example.net"))
    assert again.status_code == 200
    assert db.session.scalar(db.select(db.func.count()).select_from(Signature)) == 1
    assert db.session.scalar(db.select(AuditLog.details).where(AuditLog.action == "api.record_signature"))[
        "api_key"] == label


def test_signature_helper_never_blanks_fields_nor_resubscribes_a_complainer(app, client, token):
    """A known supporter keeps their name; a spam complainer on an implied-consent petition stays complained."""
    petition = open_petition()
    supporter = factories.make_supporter(email="known@example.net", first_name="Bea", subscribed=False)
    from crm.supporters.consent import record_consent

    record_consent(supporter, "complaint", "complaint:test")
    db.session.commit()
    response = call(client, "POST", f"/api/v1/petitions/{petition.id}/signatures", token,
                    person_body("known@example.net", given_name=""))
    assert response.status_code == 201
    db.session.expire_all()
    supporter = db.session.get(Supporter, supporter.id)
    assert supporter.first_name == "Bea" and supporter.email_status == "complained"


def test_signature_helper_refuses_a_closed_petition(app, client, token):
    """A closed petition is a 409 and nothing is recorded."""
    petition = open_petition(status="closed")
    response = call(client, "POST", f"/api/v1/petitions/{petition.id}/signatures", token, person_body("x@example.net"))
    assert response.status_code == 409
    assert db.session.scalar(db.select(db.func.count()).select_from(Supporter)) == 0


def test_person_signup_helper_dedupes_and_needs_wording_to_subscribe(app, client, token):
    """Subscribing needs the words agreed to; a second signup updates the same person."""
    refused = call(client, "POST", "/api/v1/people", token, person_body("bo@example.net"))
    assert refused.status_code == 400 and refused.json["field"] == "consent_wording"
    body = {**person_body("bo@example.net", given_name="Bo"), "consent_wording": "Updates please",
            "add_tags": ["volunteer"]}
    assert call(client, "POST", "/api/v1/people", token, body).status_code == 201
    second = call(client, "POST", "/api/v1/people", token,
                  {"person": {"family_name": "Lee", "email_addresses": [{"address": "BO@example.net"}]}})
    assert second.status_code == 200 and second.json["given_name"] == "Bo" and second.json["family_name"] == "Lee"
    event = db.session.scalar(db.select(ConsentEvent))
    assert (event.action, event.wording) == ("opt_in", "Updates please")
    assert db.session.scalar(db.select(Tag.name)) == "volunteer"


def test_tags_and_taggings(app, client, token):
    """Create a tag, tag a person by link, read it back, remove it."""
    supporter = factories.make_supporter()
    tag = call(client, "POST", "/api/v1/tags", token, {"name": "donor"}).json
    tag_id = int(tag["identifiers"][0].rsplit(":", 1)[1])
    href = f"http://localhost/api/v1/people/{supporter.id}"
    made = call(client, "POST", f"/api/v1/tags/{tag_id}/taggings", token, {"_links": {"osdi:person": {"href": href}}})
    assert made.status_code == 201
    listed = call(client, "GET", f"/api/v1/tags/{tag_id}/taggings", token).json
    assert listed["total_records"] == 1
    assert call(client, "GET", f"/api/v1/tags/{tag_id}/taggings/{supporter.id}", token).status_code == 200
    assert call(client, "DELETE", f"/api/v1/tags/{tag_id}/taggings/{supporter.id}", token).status_code == 200
    assert call(client, "GET", f"/api/v1/tags/{tag_id}/taggings/{supporter.id}", token).status_code == 404


# ---- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("body, field", [
    (b'{"person": ', "(body)"),
    ({"person": {"email_addresses": [{"address": 5}]}}, "person.email_addresses[0].address"),
    ({"person": {"email_addresses": [{"address": "a@example.net"}]}, "surprise": 1}, "surprise"),
    ({"person": {"email_addresses": [{"address": "not-an-email"}]}}, "person.email_addresses[0].address"),
    ({"person": {"email_addresses": []}}, "person.email_addresses"),
    ({"person": {"email_addresses": [{"address": "a@example.net"}], "given_name": ["x"]}}, "person.given_name"),
    ({"person": {"email_addresses": [{"address": "a@example.net"}],
                 "postal_addresses": [{"country": "XX"}]}}, "person.postal_addresses[0].country"),
    ({"person": {"email_addresses": [{"address": "a@example.net"}]}, "wording_version": True}, "wording_version"),
    ({"person": {"email_addresses": [{"address": "a@example.net"}]}, "comments": "x" * 70_000}, "(body)"),
])
def test_bad_bodies_are_400_naming_the_field_and_write_nothing(app, client, token, body, field):
    """Malformed JSON, wrong types, unknown fields, invalid emails, oversized bodies: 400, nothing written."""
    petition = open_petition()
    response = call(client, "POST", f"/api/v1/petitions/{petition.id}/signatures", token, body)
    assert response.status_code == 400 and response.json["field"] == field, response.json
    assert db.session.scalar(db.select(db.func.count()).select_from(Supporter)) == 0


def test_unknown_paths_and_methods_answer_json(app, client, token):
    """404 and 405 under /api/ are JSON, not the staff error page."""
    missing = call(client, "GET", "/api/v1/nothing-here", token)
    assert missing.status_code == 404 and missing.is_json
    assert call(client, "GET", "/api/v1/people/999999", token).json["error"] == "No such person."
    assert call(client, "PUT", "/api/v1/people", token).status_code == 405


# ---- messages, segments, openapi -----------------------------------------------------------------

def test_message_statistics_come_from_the_message_table(app, client, token):
    """sent, opened, clicked, unsubscribed, bounced and spam reports of a campaign."""
    from datetime import UTC, datetime

    from crm.supporters.consent import record_consent

    campaign = factories.make_campaign(status="sent")
    now = datetime.now(UTC)
    people = [factories.make_supporter() for _ in range(5)]
    factories.make_message(campaign, people[0], opened_at=now, clicked_at=now)
    factories.make_message(campaign, people[1], opened_at=now)
    factories.make_message(campaign, people[2], bounced_at=now, bounce_type="hard")
    factories.make_message(campaign, people[3], complained_at=now)
    factories.make_message(campaign, people[4], status="failed")
    record_consent(people[1], "opt_out", "unsubscribe_link", campaign_id=campaign.id)
    db.session.commit()
    body = call(client, "GET", f"/api/v1/messages/{campaign.id}", token).json
    assert body["statistics"] == {"sent": 4, "opened": 2, "clicked": 1, "unsubscribed": 1, "bounced": 1,
                                  "spam_reports": 1}
    assert body["subject"] == campaign.subject and body["status"] == "sent"
    listed = call(client, "GET", "/api/v1/messages", token).json
    assert listed["_embedded"]["osdi:messages"][0]["statistics"]["sent"] == 4


def test_entry_point_segments_and_openapi(app, client, token):
    """The AEP links every collection; segments read; openapi.json lists the paths with their schemas."""
    from crm.models import Segment

    db.session.add(Segment(name="All", rules={"op": "all", "rules": []}))
    db.session.commit()
    links = call(client, "GET", "/api/v1/", token).json["_links"]
    assert {"osdi:people", "osdi:petitions", "osdi:tags", "osdi:messages", "crm:segments"} <= set(links)
    assert call(client, "GET", "/api/v1/segments", token).json["total_records"] == 1
    document = client.get("/api/v1/openapi.json").json
    assert "/api/v1/petitions/{petition_id}/signatures" in document["paths"]
    assert "SignatureHelperIn" in document["components"]["schemas"]


def test_staff_api_page_documents_with_curl(app, client_as):
    """The documentation page is for staff, with curl examples and the verification snippet."""
    page = client_as("analyst").get("/api-docs")
    assert page.status_code == 200 and "curl -H" in page.text and "webhook-signature" in page.text
    assert app.test_client().get("/api-docs").status_code == 302


def test_signature_helper_honours_the_suppression_list(app, client, token):
    """A staff-suppressed address signs but is not subscribed; an erased one is counted anonymously."""
    from crm.supporters.suppression import suppress

    petition = open_petition()
    suppress("listed@example.net", reason="staff")
    suppress("erased@example.net", reason="erased")
    db.session.commit()
    url = f"/api/v1/petitions/{petition.id}/signatures"
    listed = call(client, "POST", url, token, person_body("listed@example.net"))
    assert listed.status_code == 201
    assert listed.json["_embedded"]["osdi:person"]["email_addresses"][0]["status"] == "unsubscribed"
    erased = call(client, "POST", url, token, person_body("erased@example.net"))
    assert erased.status_code == 201 and "osdi:person" not in erased.json["_links"]
    assert db.session.scalar(db.select(Supporter.id).where(Supporter.email == "erased@example.net")) is None
    assert db.session.scalar(db.select(db.func.count()).select_from(ConsentEvent)) == 0


def test_a_stale_people_count_is_answered_while_a_job_counts_again(make_app):
    """Past its lifetime the cached total is still answered once, and the recount job brings it up to date."""
    from crm.redis_conn import get_redis

    app = make_app(API_COUNT_CACHE_SECONDS=1)
    with app.app_context():
        _, token = factories.make_api_key("read")
        client = app.test_client()
        factories.make_supporter()
        assert call(client, "GET", "/api/v1/people", token).json["total_records"] == 1
        factories.make_supporter()
        for key in get_redis().scan_iter("crm:api:people:count:*:fresh"):
            get_redis().delete(key)  # the lifetime has passed
        assert call(client, "GET", "/api/v1/people", token).json["total_records"] == 1
        factories.drain(app)
        assert call(client, "GET", "/api/v1/people", token).json["total_records"] == 2


def test_the_rank_index_counts_and_finds_cold_pages_as_count_and_offset_would(app, client, token, monkeypatch):
    """For `modified_date gt`, total_records and a page asked cold come from the rank index and agree with
    COUNT and OFFSET, for every since and page; people changed after the build are counted too."""
    from datetime import UTC, datetime, timedelta

    from api import queries
    from api.filters import parse_filter
    from crm.redis_conn import get_redis

    monkeypatch.setattr(queries, "RANK_STEP", 3)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    people = [factories.make_supporter() for _ in range(20)]
    for i, person in enumerate(people):
        person.updated_at = start + timedelta(minutes=i // 2)  # pairs share a time: id breaks the tie
    people[7].erased_at = start
    db.session.commit()
    ranks = queries.build_ranks()
    assert (ranks.step, ranks.total, len(ranks.keys)) == (3, 19, 6)
    times = {p.id: start + timedelta(minutes=i // 2) for i, p in enumerate(people) if i != 7}
    order = sorted(times, key=lambda person_id: (times[person_id], person_id))
    for minutes in range(-1, 10):
        since = start + timedelta(minutes=minutes, seconds=30 if minutes % 2 else 0)
        expected = [person_id for person_id in order if times[person_id] > since]
        text = f"modified_date gt '{since.isoformat()}'"
        assert queries.count_people(parse_filter(text, queries.PEOPLE_FILTERS)) == len(expected)
        for page in range(1, 6):
            for key in get_redis().scan_iter("crm:api:people:cursor:*"):
                get_redis().delete(key)
            body = call(client, "GET", "/api/v1/people", token, query_string={
                "filter": text, "per_page": 4, "page": page}).json
            assert _ids(body) == expected[(page - 1) * 4:page * 4], (minutes, page)
    newcomer = factories.make_supporter()
    since = start + timedelta(minutes=4)
    clauses = parse_filter(f"modified_date gt '{since.isoformat()}'", queries.PEOPLE_FILTERS)
    assert queries.count_people(clauses) == queries.exact_count(clauses) == 10 + 1
    assert newcomer.id in [p.id for p in queries.people_page(clauses, "x", 3, 5)[0]]


def test_a_warmed_process_compiles_nothing_for_a_syncs_first_pages(app, client, token):
    """warm_up (run by crm/wsgi.py as each gunicorn worker starts) compiles the statements of a sync's pages,
    a page asked cold and the count, so the first client of a process waits for none; it changes no row."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import event
    from sqlalchemy.engine.default import CACHE_MISS

    from api import queries
    from api.warm import warm_up
    from crm.models import utcnow

    for _ in range(30):
        factories.make_supporter()
    key = db.session.scalar(db.select(ApiKey))
    key.last_used_at = utcnow()  # its once-a-minute stamp is the key's, not the process's
    db.session.commit()
    queries.build_ranks()
    rows = {model: db.session.scalar(db.select(db.func.count()).select_from(model))
            for model in (Supporter, ApiKey, AuditLog)}
    db.session.remove()
    db.engine.clear_compiled_cache()
    assert warm_up(app) > 0
    assert {model: db.session.scalar(db.select(db.func.count()).select_from(model)) for model in rows} == rows
    compiled = []

    def note(conn, cursor, statement, parameters, context, executemany):
        if context.cache_hit is CACHE_MISS:
            compiled.append(statement)

    event.listen(db.engine, "after_cursor_execute", note)
    try:
        since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        for page in (1, 2, 5):
            response = call(client, "GET", "/api/v1/people", token, query_string={
                "filter": f"modified_date gt '{since}'", "per_page": 25 if page < 5 else 5, "page": page})
            assert response.status_code == 200
    finally:
        event.remove(db.engine, "after_cursor_execute", note)
    assert compiled == []


def test_the_signature_helper_commits_once_with_its_audit_row_and_outbound_events(app, client, token):
    """A new signer through the helper: supporter, signature, consent event, outbound events and the audit
    row are written in one transaction, one commit (the key's last-used time aside)."""
    from sqlalchemy import event

    from crm.models import OutboundEvent
    from outbound import service as outbound

    outbound.save_settings(True, None)
    outbound.create_endpoint({"url": "http://127.0.0.1:9/hook", "events": ["signature.created",
                                                                         "supporter.subscribed"]}, None)
    petition = open_petition()
    url = f"/api/v1/petitions/{petition.id}/signatures"
    assert call(client, "POST", url, token, person_body("first@example.net")).status_code == 201
    commits = []
    listener = lambda conn: commits.append(1)  # noqa: E731
    event.listen(db.engine, "commit", listener)
    try:
        answer = call(client, "POST", url, token, person_body("second@example.net"))
    finally:
        event.remove(db.engine, "commit", listener)
    assert answer.status_code == 201 and len(commits) == 1
    person_id = answer.json["_embedded"]["osdi:person"]["identifiers"][0].rpartition(":")[2]
    kinds = db.session.execute(db.select(OutboundEvent.event_type, OutboundEvent.data)
                               .order_by(OutboundEvent.id)).all()[-2:]
    assert sorted(kind for kind, _ in kinds) == ["signature.created", "supporter.subscribed"]
    assert all(data["supporter_id"] == int(person_id) for _, data in kinds)
    audit = db.session.scalar(db.select(AuditLog).where(AuditLog.action == "api.record_signature")
                              .order_by(AuditLog.id.desc()))
    assert audit.details["supporter_id"] == int(person_id)
