"""Open and click tracking: compiled links and pixel, the public endpoints, the flush, machine flags, counts.

Real parts throughout: campaigns sent by a real in-process worker to a real SMTP server, hits
recorded in real Redis, flushed into the real database.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaigns import lifecycle
from campaigns.tokens import make_unsubscribe_token
from crm.extensions import db
from crm.models import CampaignLink, EngagementEvent, Message, Segment
from crm.redis_conn import get_redis
from crm.segments import service as segments
from tests import factories
from tests.factories import drain
from tracking import flush as flushing
from tracking.machine import PROXY, SCANNER, classify_agent
from tracking.record import GROUP, STREAM, record_hit
from tracking.tokens import make_tracking_token, read_tracking_token

EVERYONE = {"type": "group", "match": "all", "rules": []}
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
LINKS_MJML = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Hello {{ supporter.first_name }},
read <a href="https://news.example.com/story?a=1&amp;b=2">the story</a>,
<a href="https://news.example.com/story?a=1&amp;b=2">again</a>,
<a href="http://act.example.org/sign">act</a>,
<a href="mailto:office@example.org">write to us</a>,
<a href="https://example.org/p/{{ supporter.first_name }}">yours</a>.</mj-text>
<mj-button href="https://donate.example.org/">Donate</mj-button>
</mj-column></mj-section></mj-body></mjml>"""
REAL_LINKS = ["https://news.example.com/story?a=1&b=2", "http://act.example.org/sign", "https://donate.example.org/"]


@pytest.fixture
def send_app(make_app, smtp_server):
    app = make_app(SMTP_URL=smtp_server.url, SEND_RATE_PER_SECOND=1000)
    with app.app_context():
        yield app


def segment() -> Segment:
    seg = Segment(name=f"Everyone {datetime.now(UTC).timestamp()}", rules=EVERYONE)
    db.session.add(seg)
    db.session.commit()
    return seg


def parsed(smtp_server) -> list:
    return [email.message_from_bytes(e.original_content, policy=email.policy.default)
            for e in smtp_server.handler.envelopes]


def send_campaign(app, smtp_server, n: int = 2, **campaign):
    for _ in range(n):
        factories.make_supporter()
    sent = factories.make_campaign(segment=segment(), mjml=LINKS_MJML, **campaign)
    lifecycle.send_now(sent)
    drain(app)
    db.session.refresh(sent)
    assert sent.status == "sent"
    return sent, parsed(smtp_server)


def hrefs(html: str) -> list[str]:
    return [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]*)"', html)]


def message_for(msg) -> Message:
    return db.session.scalars(db.select(Message).where(Message.email == msg["To"].addresses[0].addr_spec)).one()


def events(**where) -> list[EngagementEvent]:
    query = db.select(EngagementEvent).order_by(EngagementEvent.id)
    for name, value in where.items():
        query = query.where(getattr(EngagementEvent, name) == value)
    return list(db.session.scalars(query))


def stream_length(app) -> int:
    return get_redis(app).xlen(STREAM)


def tracked_paths(html: str) -> tuple[str, list[str]]:
    """The pixel path and the click paths of a message's HTML part."""
    pixel = re.search(r'src="https://crm\.example\.org(/o/[^"]+)"', html)
    clicks = [h.removeprefix("https://crm.example.org") for h in hrefs(html) if "/c/" in h]
    return (pixel.group(1) if pixel else ""), list(dict.fromkeys(clicks))  # by index, each once


# -- what the messages carry ---------------------------------------------------------------

def test_tracked_campaign_carries_rewritten_links_and_the_pixel(send_app, smtp_server):
    """Tracking on: http(s) links go through /c/, the pixel is last; mailto, personalised, unsubscribe and
    preference links and the plain-text part keep the real URLs."""
    campaign, messages = send_campaign(send_app, smtp_server, track_opens=True, track_clicks=True)
    assert len(messages) == 2
    for msg in messages:
        message = message_for(msg)
        html = msg.get_body(("html",)).get_content()
        text = msg.get_body(("plain",)).get_content()
        links = hrefs(html)
        token = make_tracking_token(message.id, campaign.id, campaign.version)
        assert f"https://crm.example.org/c/{token}/0" in links  # twice: the same URL is one link
        assert links.count(f"https://crm.example.org/c/{token}/0") == 2
        assert {f"https://crm.example.org/c/{token}/{i}" for i in (1, 2)} <= set(links)
        assert not any(url in links for url in REAL_LINKS)
        assert "mailto:office@example.org" in links
        assert any(h.startswith("https://example.org/p/First") for h in links)
        assert f"https://crm.example.org/u/{make_unsubscribe_token(message.id)}" in links
        assert any(h.startswith("https://crm.example.org/preferences/") for h in links)
        assert html.rindex(f"https://crm.example.org/o/{token}") > html.rindex("/preferences/")
        for url in REAL_LINKS:
            assert url in text
        assert "/c/" not in text and "/o/" not in text
    stored = db.session.scalars(db.select(CampaignLink.url).where(CampaignLink.campaign_id == campaign.id)
                                .order_by(CampaignLink.position)).all()
    assert stored == REAL_LINKS


def test_untracked_campaign_carries_neither(send_app, smtp_server):
    """Tracking off (the default): real links, no pixel, no stored link list."""
    campaign, messages = send_campaign(send_app, smtp_server, n=1)
    html = messages[0].get_body(("html",)).get_content()
    assert "/o/" not in html and "/c/" not in html
    assert set(REAL_LINKS) <= set(hrefs(html))
    assert db.session.scalar(db.select(db.func.count()).select_from(CampaignLink)) == 0


def test_opens_only_adds_the_pixel_and_leaves_links(send_app, smtp_server):
    """Each switch does only its own part."""
    _, messages = send_campaign(send_app, smtp_server, n=1, track_opens=True)
    html = messages[0].get_body(("html",)).get_content()
    assert "https://crm.example.org/o/" in html and "/c/" not in html


# -- the endpoints -------------------------------------------------------------------------

def test_open_and_click_recorded_flushed_and_counted(send_app, smtp_server):
    """A reader's open and click: GIF and 302 to the real URL, no DB write until the flush, then one
    event each, the first times on the message, and the campaign page's counts."""
    campaign, messages = send_campaign(send_app, smtp_server, n=1, track_opens=True, track_clicks=True)
    client = send_app.test_client()
    message = message_for(messages[0])
    pixel, clicks = tracked_paths(messages[0].get_body(("html",)).get_content())

    opened = client.get(pixel, headers={"User-Agent": BROWSER})
    assert opened.status_code == 200 and opened.mimetype == "image/gif" and opened.data.startswith(b"GIF89a")
    assert "no-store" in opened.headers["Cache-Control"]
    clicked = client.get(clicks[0], headers={"User-Agent": BROWSER})
    assert clicked.status_code == 302
    assert clicked.headers["Location"] == REAL_LINKS[0]
    assert "no-store" in clicked.headers["Cache-Control"]
    assert "Set-Cookie" not in clicked.headers and "Set-Cookie" not in opened.headers
    assert events() == []  # nothing written in the request
    assert stream_length(send_app) == 2

    result = flushing.flush()
    assert (result.read, result.written, result.machine) == (2, 2, 0)
    assert [(e.kind, e.url, e.is_machine, e.supporter_id) for e in events()] == [
        ("open", "", False, message.supporter_id), ("click", REAL_LINKS[0], False, message.supporter_id)]
    db.session.refresh(message)
    assert message.opened_at is not None and message.clicked_at >= message.opened_at
    assert stream_length(send_app) == 0

    staff = factories.signed_in_client(send_app, "analyst")
    page = staff.get(f"/campaigns/{campaign.id}").text
    opens = re.search(r'<tr id="engagement-opens">(.*?)</tr>', page, re.S).group(1)
    assert re.findall(r'data-e="(\w+)">(\d+)<', opens) == [
        ("unique_human", "1"), ("unique_all", "1"), ("total_human", "1"), ("total_all", "1")]
    assert 'id="engagement-clicks"' in page

    # Engagement reaches the segment conditions at once.
    rules = {"type": "group", "match": "all", "rules": [
        {"type": "condition", "field": "engagement", "op": "opened", "value": {"campaign_id": campaign.id}}]}
    assert segments.preview(rules).count == 1


def test_a_second_open_keeps_the_first_time(send_app, smtp_server):
    """First-open time is the earliest, whatever order the flushes write in."""
    campaign, messages = send_campaign(send_app, smtp_server, n=1, track_opens=True)
    message = message_for(messages[0])
    redis = get_redis()
    record_hit(redis, "open", message.id, campaign.id, campaign.version, "")
    flushing.flush()
    db.session.refresh(message)
    first = message.opened_at
    # An entry with an earlier time, arriving later (another worker's batch).
    redis.xadd(STREAM, {"k": "open", "m": message.id, "c": campaign.id, "v": campaign.version,
                        "t": int(first.timestamp() * 1000) - 60_000, "a": ""})
    flushing.flush()
    db.session.refresh(message)
    assert message.opened_at < first and len(events(kind="open")) == 2


def test_garbage_tokens_record_nothing_and_never_fail(send_app, smtp_server):
    """Forged or garbage: the pixel still answers a GIF, the redirect a friendly 404; nothing recorded."""
    campaign, messages = send_campaign(send_app, smtp_server, n=1, track_opens=True, track_clicks=True)
    message = message_for(messages[0])
    client = send_app.test_client()
    unsubscribe = make_unsubscribe_token(message.id)  # signed, but for another purpose
    for token in ("x", "a" * 500, unsubscribe, "%00", "..", "W1sxLDIsM11d.forged", "\u00e9\u00e9"):
        pixel = client.get(f"/o/{token}")
        assert pixel.status_code == 200 and pixel.data.startswith(b"GIF89a"), token
        link = client.get(f"/c/{token}/0")
        # A control character in the URL is refused before any view (crm.input_guard): a 400 page.
        assert link.status_code == (400 if token == "%00" else 404) and "Location" not in link.headers, token
    good = make_tracking_token(message.id, campaign.id, campaign.version)
    for index in ("3", "-1", "99999999999999999999", "1.0", "x", "٣"):
        link = client.get(f"/c/{good}/{index}")
        assert link.status_code == 404 and "could not follow this link" in link.text, index
    assert stream_length(send_app) == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.one_of(st.text(min_size=1, max_size=120).filter(lambda t: "/" not in t),
                       st.builds(lambda m, c, v: (m, c, v), st.integers(-5, 2**40), st.integers(-5, 2**40),
                                 st.integers(-5, 2**40))),
       index=st.one_of(st.integers(-10, 10**12).map(str), st.text(min_size=1, max_size=12).filter(
           lambda t: "/" not in t and t not in (".", ".."))))
def test_no_token_or_index_redirects_anywhere_else(tracked_world, token, index):
    """Property: whatever the token (garbage, or validly signed for any ids) and the index, a redirect only
    ever goes to one of the links the campaign version contained."""
    app, client, allowed = tracked_world
    if isinstance(token, tuple):
        try:
            token = make_tracking_token(*token)
        except ValueError:
            token = "not-signed"
    response = client.get(f"/c/{token}/{index}")
    assert response.status_code != 500
    if response.status_code == 302:
        assert response.headers["Location"] in allowed
    else:
        assert "Location" not in response.headers


@pytest.fixture
def tracked_world(send_app, smtp_server):
    campaign, messages = send_campaign(send_app, smtp_server, n=1, track_clicks=True)
    # A second campaign's links: a token for one campaign must never reach another's by index.
    other = factories.make_campaign(status="sent")
    db.session.add(CampaignLink(campaign_id=other.id, version=other.version, position=0,
                                url="https://other.example.net/"))
    db.session.commit()
    return send_app, send_app.test_client(), set(REAL_LINKS) | {"https://other.example.net/"}


def test_property_tokens_for_real_messages_reach_only_their_links(tracked_world):
    """Every signed token of the campaign, every index: its own links or a 404."""
    app, client, allowed = tracked_world
    message = db.session.scalars(db.select(Message)).first()
    campaign_id = message.campaign_id
    token = make_tracking_token(message.id, campaign_id, 1)
    seen = set()
    for index in range(-2, 8):
        response = client.get(f"/c/{token}/{index}")
        if response.status_code == 302:
            seen.add(response.headers["Location"])
    assert seen == set(REAL_LINKS)


def test_tokens_carry_no_address_and_survive_key_rotation(make_app):
    """No address inside; old keys in SECRET_KEY_FALLBACKS keep verifying."""
    old = make_app(SECRET_KEY="old-key")
    with old.app_context():
        token = make_tracking_token(5, 7, 2)
    new = make_app(SECRET_KEY="new-key", SECRET_KEY_FALLBACKS=["old-key"])
    with new.app_context():
        found = read_tracking_token(token)
        assert (found.message_id, found.campaign_id, found.version) == (5, 7, 2)
        assert read_tracking_token(token[:-2]) is None
    other = make_app(SECRET_KEY="another")
    with other.app_context():
        assert read_tracking_token(token) is None
    assert "@" not in token


# -- machines --------------------------------------------------------------------------------

def test_user_agents_are_classified():
    """The documented proxies and scanners, and browsers left alone."""
    assert classify_agent("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)") \
        == PROXY
    assert classify_agent("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html") == PROXY
    assert classify_agent("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)") \
        == PROXY
    assert classify_agent("Mozilla/5.0 (compatible; Barracuda Sentinel)") == SCANNER
    assert classify_agent("python-requests/2.31") == SCANNER
    assert classify_agent("") == SCANNER
    assert classify_agent(BROWSER) == ""
    assert classify_agent("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
                          "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1") == ""


def test_scanner_burst_is_flagged_not_dropped(send_app, smtp_server):
    """A click on every link within seconds (with a browser's agent), a proxy's prefetch, a burst of opens
    at delivery, and a scanner's agent: all stored with the flag; the human click is not flagged and only
    human events set the first times."""
    campaign, messages = send_campaign(send_app, smtp_server, n=4, track_opens=True, track_clicks=True)
    client = send_app.test_client()
    scanned, proxied, reader, quiet = (message_for(m) for m in messages)
    paths = {message_for(m).id: tracked_paths(m.get_body(("html",)).get_content()) for m in messages}

    for path in paths[scanned.id][1]:
        client.get(path, headers={"User-Agent": BROWSER})  # every link, at once
    client.get(paths[proxied.id][0], headers={"User-Agent": "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"})
    client.get(paths[reader.id][1][1], headers={"User-Agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"})
    client.get(paths[reader.id][1][2], headers={"User-Agent": BROWSER})
    flushing.flush()
    flags = {(e.message_id, e.kind, e.link_index): e.is_machine for e in events()}
    assert all(flags[(scanned.id, "click", i)] for i in (0, 1, 2))
    assert flags[(proxied.id, "open", None)]
    assert flags[(reader.id, "click", 1)] and not flags[(reader.id, "click", 2)]
    for message in (scanned, proxied, reader):
        db.session.refresh(message)
    assert scanned.clicked_at is None and proxied.opened_at is None and reader.clicked_at is not None
    assert scanned.clicked_by_machine and proxied.opened_by_machine and reader.clicked_by_machine
    assert not scanned.opened_by_machine and not reader.opened_by_machine

    # Opens within seconds of delivery for several messages at once: an image proxy's prefetch.
    redis = get_redis()
    for message in (scanned, reader, quiet):
        at = int(message.sent_at.replace(tzinfo=message.sent_at.tzinfo or UTC).timestamp() * 1000) + 1500
        redis.xadd(STREAM, {"k": "open", "m": message.id, "c": campaign.id, "v": campaign.version, "t": at,
                            "a": ""})
    flushing.flush()
    burst = events(kind="open")
    assert len(burst) == 4 and all(e.is_machine for e in burst)
    counts = {e.message_id for e in burst}
    assert counts == {proxied.id, scanned.id, reader.id, quiet.id}
    db.session.expire_all()
    assert all(db.session.get(Message, m.id).opened_by_machine for m in (scanned, reader, quiet))


def test_one_quick_reader_is_not_a_burst(send_app, smtp_server):
    """A single person opening right after delivery is a person."""
    campaign, messages = send_campaign(send_app, smtp_server, n=1, track_opens=True)
    message = message_for(messages[0])
    at = int(message.sent_at.replace(tzinfo=message.sent_at.tzinfo or UTC).timestamp() * 1000) + 1000
    get_redis().xadd(STREAM, {"k": "open", "m": message.id, "c": campaign.id, "v": campaign.version, "t": at,
                              "a": ""})
    flushing.flush()
    assert [e.is_machine for e in events()] == [False]


def _hit_at(campaign, message, kind: str, ms_after_delivery: int, link_index: int | None = None) -> None:
    """Put a hit with a browser's agent in the stream, timed relative to the message's delivery."""
    at = int(message.sent_at.replace(tzinfo=message.sent_at.tzinfo or UTC).timestamp() * 1000) + ms_after_delivery
    fields = {"k": kind, "m": message.id, "c": campaign.id, "v": campaign.version, "t": at, "a": ""}
    if link_index is not None:
        fields["i"] = link_index
    get_redis().xadd(STREAM, fields)


def test_a_scan_split_across_flushes_is_flagged_whole(send_app, smtp_server):
    """Two links clicked and flushed, the third within seconds in the next flush: all three are the
    scanner's, the first flush's human-looking clicks included, and the first-click time goes."""
    campaign, messages = send_campaign(send_app, smtp_server, n=1, track_clicks=True)
    message = message_for(messages[0])
    _hit_at(campaign, message, "click", 60_000, 0)
    _hit_at(campaign, message, "click", 61_000, 1)
    flushing.flush()
    db.session.refresh(message)
    assert message.clicked_at is not None and not any(e.is_machine for e in events())
    assert not message.clicked_by_machine
    _hit_at(campaign, message, "click", 62_500, 2)
    flushing.flush()
    db.session.expire_all()
    assert [e.is_machine for e in events()] == [True, True, True]
    message = db.session.get(Message, message.id)
    assert message.clicked_at is None and message.clicked_by_machine


def test_a_slow_sends_prefetches_are_flagged_once_they_make_a_burst(send_app, smtp_server):
    """A proxy prefetching each message as it arrives, one flush apart (a slow send): the first two
    look like quick readers, the third makes the burst and flags all three; after it, a lone open
    at delivery is a machine's at once, while an open an hour later stays a person's."""
    campaign, messages = send_campaign(send_app, smtp_server, n=5, track_opens=True)
    first, second, third, fourth, fifth = (message_for(m) for m in messages)
    for message in (first, second):
        _hit_at(campaign, message, "open", 2000)
        flushing.flush()
    db.session.expire_all()
    assert not any(e.is_machine for e in events())
    assert db.session.get(Message, first.id).opened_at is not None
    _hit_at(campaign, third, "open", 1500)
    flushing.flush()
    db.session.expire_all()
    assert [e.is_machine for e in events()] == [True, True, True]
    assert all(db.session.get(Message, m.id).opened_at is None for m in (first, second, third))
    assert all(db.session.get(Message, m.id).opened_by_machine for m in (first, second, third))
    _hit_at(campaign, fourth, "open", 3000)
    _hit_at(campaign, fifth, "open", 3_600_000)
    flushing.flush()
    db.session.expire_all()
    flags = {e.message_id: e.is_machine for e in events()}
    assert flags[fourth.id] and not flags[fifth.id]
    assert db.session.get(Message, fifth.id).opened_at is not None
    assert db.session.get(Message, fourth.id).opened_by_machine
    assert not db.session.get(Message, fifth.id).opened_by_machine


# -- the flush survives dying ----------------------------------------------------------------

def test_flush_killed_between_read_and_commit_loses_nothing(send_app, smtp_server, monkeypatch):
    """A flush that fails after reading and before committing leaves its entries pending; the next run
    writes every hit exactly once, and a batch written twice (crash after commit, before XACK) is
    not doubled."""
    campaign, messages = send_campaign(send_app, smtp_server, n=3, track_opens=True, track_clicks=True)
    redis = get_redis()
    ids = [message_for(m).id for m in messages]
    for mid in ids:
        for _ in range(4):
            record_hit(redis, "open", mid, campaign.id, campaign.version, "")
        record_hit(redis, "click", mid, campaign.id, campaign.version, "", 0)

    def crash(*_args, **_kwargs):
        raise RuntimeError("worker died")

    monkeypatch.setattr(flushing, "_engagement_on_messages", crash)
    with pytest.raises(RuntimeError):
        flushing.flush(batch=7)
    db.session.rollback()
    monkeypatch.undo()
    assert events() == []
    assert redis.xpending(STREAM, GROUP)["pending"] == 7

    # A batch committed but never acknowledged: read by a consumer that then died.
    entries = redis.xreadgroup(GROUP, "dead-worker", {STREAM: ">"}, count=5)[0][1]
    flushing.write_batch(entries, flushing.FlushResult())
    assert len(events()) == 5

    flushing.flush(batch=4)  # its own pending first, then new entries
    assert redis.xpending(STREAM, GROUP)["pending"] == 5  # the dead consumer's, not yet idle long enough
    result = flushing.flush(claim_idle_seconds=0)
    assert result.read == 5 and result.written == 5  # claimed and rewritten; ON CONFLICT kept them single
    assert redis.xpending(STREAM, GROUP)["pending"] == 0 and redis.xlen(STREAM) == 0
    recorded = events()
    assert len(recorded) == 15 and len({e.event_key for e in recorded}) == 15
    per_message = {mid: sum(1 for e in recorded if e.message_id == mid) for mid in ids}
    assert per_message == {mid: 5 for mid in ids}


def test_hits_for_vanished_messages_are_acknowledged_and_skipped(send_app):
    """A validly signed hit for a message that is not in the database is skipped, not retried forever."""
    campaign = factories.make_campaign(status="sent")
    redis = get_redis()
    record_hit(redis, "open", 987654, campaign.id, campaign.version, "")
    redis.xadd(STREAM, {"k": "open", "m": "not-a-number"})
    result = flushing.flush()
    assert (result.read, result.written, result.skipped) == (2, 0, 2)
    assert redis.xlen(STREAM) == 0 and events() == []


def test_flush_command(send_app, smtp_server):
    """`crm tracking flush` writes what is recorded and says how much."""
    campaign, messages = send_campaign(send_app, smtp_server, n=1, track_opens=True)
    record_hit(get_redis(), "open", message_for(messages[0]).id, campaign.id, campaign.version, "")
    out = send_app.test_cli_runner().invoke(args=["tracking", "flush"])
    assert out.exit_code == 0 and out.output.startswith("1 read, 1 written")


def test_periodic_task_flushes(send_app, smtp_server):
    """The workers' periodic flush task is declared and does the flush."""
    from workers.periodic import PERIODIC, run_due

    assert "flush-tracking" in {t.name for t in PERIODIC}
    campaign, messages = send_campaign(send_app, smtp_server, n=1, track_opens=True)
    record_hit(get_redis(), "open", message_for(messages[0]).id, campaign.id, campaign.version, "")
    get_redis().delete("crm:periodic:flush-tracking")
    ran = run_due(send_app, get_redis(), "test-worker", tuple(t for t in PERIODIC if t.name == "flush-tracking"))
    assert ran == ["flush-tracking"]
    assert len(events()) == 1


def test_untracked_switches_described_in_the_editor(send_app):
    """The editor says what each switch does and why it is off by default."""
    staff = factories.signed_in_client(send_app, "organizer")
    page = staff.get("/campaigns/new").text
    assert "invisible 1×1 image" in page and "Off by default" in page
    assert "link scanners click too" in page

