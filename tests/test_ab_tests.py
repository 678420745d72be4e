"""A/B tests: the split at snapshot, Wilson intervals, the winner picked through a real worker and scheduler."""

from __future__ import annotations

import email
import email.policy
import re
from collections import Counter

import pytest

from campaigns import lifecycle, variants
from crm.extensions import db
from crm.models import AbTest, AuditLog, EngagementEvent, Message, Segment
from tests import factories

EVERYONE = {"type": "group", "match": "all", "rules": []}


@pytest.fixture
def ab_app(make_app, smtp_server):
    # The scheduler looks for due tests on every pass of the worker (a 1 ms interval).
    app = make_app(SMTP_URL=smtp_server.url, SEND_RATE_PER_SECOND=1000, SEND_CHUNK_SIZE=5, SEND_FLUSH_EVERY=5,
                   AB_CHECK_SECONDS=0.001)
    with app.app_context():
        yield app


def campaign_with_test(n: int, *, fraction=0.5, wait_minutes=60, metric="opens", others=None):
    segment = Segment(name="Everyone", rules=EVERYONE)
    db.session.add(segment)
    db.session.commit()
    people = [factories.make_supporter() for _ in range(n)]
    campaign = factories.make_campaign(segment=segment, subject="Subject A", track_opens=True)
    variants.save_test(campaign, fraction=fraction, wait_minutes=wait_minutes, metric=metric,
                       others=others or [{"subject": "Subject B", "from_name": "Asylum team"}])
    return campaign, people


def wait_is_over(campaign) -> None:
    """Move the test's start back past its wait, as if the wait had passed."""
    from datetime import timedelta

    test = db.session.get(AbTest, campaign.id)
    test.tested_at = test.tested_at - timedelta(minutes=test.wait_minutes + 1)
    db.session.commit()


def subjects(smtp_server) -> Counter:
    found = Counter()
    for envelope in smtp_server.handler.envelopes:
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        found[str(message["Subject"])] += 1
    return found


def test_wilson_interval_matches_the_formula():
    """5 of 10 gives about 23.7%-76.3%; nothing sent gives the whole range; all gives an upper bound of 1."""
    low, high = variants.wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert variants.wilson(0, 0) == (0.0, 1.0)
    assert variants.wilson(20, 20)[1] == 1.0 and variants.wilson(20, 20)[0] == pytest.approx(0.8389, abs=1e-4)


def test_the_test_share_is_split_evenly_at_random_and_the_rest_held(ab_app):
    """Of 21 messages at 50%: 11 (rounded) queued, dealt 6/5 between A and B; 10 held with no variant."""
    campaign, _ = campaign_with_test(21)
    lifecycle.send_now(campaign)
    from campaigns import pipeline

    assert pipeline.start_campaign(campaign.id) == 21
    rows = db.session.execute(db.select(Message.status, Message.variant_id).where(
        Message.campaign_id == campaign.id)).all()
    by_status = Counter(status for status, _ in rows)
    assert by_status == {"queued": 10, "held": 11} or by_status == {"queued": 11, "held": 10}
    dealt = Counter(v for status, v in rows if status == "queued")
    assert sorted(dealt.values()) in ([5, 5], [5, 6]) and None not in dealt
    assert all(v is None for status, v in rows if status == "held")
    assert db.session.get(AbTest, campaign.id).status == "testing"


def test_the_winner_is_picked_by_the_scheduler_and_only_it_reaches_the_rest(ab_app, smtp_server, client_as):
    """Through a real worker: the test goes out, B's opens clearly win, the rest get B; one message each."""
    campaign, people = campaign_with_test(24)
    lifecycle.send_now(campaign)
    factories.drain(ab_app)  # starts the campaign and sends the test group; the rest wait
    assert sum(subjects(smtp_server).values()) == 12
    db.session.expire_all()
    test = db.session.get(AbTest, campaign.id)
    assert test.status == "testing"
    (a, b) = variants.variants_of(campaign.id)
    for message in db.session.scalars(db.select(Message).where(Message.variant_id == b.id)):
        db.session.add(EngagementEvent(message_id=message.id, supporter_id=message.supporter_id,
                                       campaign_id=campaign.id, kind="open"))
    one_a = db.session.scalars(db.select(Message).where(Message.variant_id == a.id)).first()
    db.session.add(EngagementEvent(message_id=one_a.id, supporter_id=one_a.supporter_id, campaign_id=campaign.id,
                                   kind="open", is_machine=True))  # an image proxy: not a person
    db.session.commit()
    wait_is_over(campaign)
    factories.drain(ab_app)  # the scheduler picks B and the rest are sent
    db.session.expire_all()
    test = db.session.get(AbTest, campaign.id)
    assert (test.status, test.winner_id, test.decided_by) == ("decided", b.id, "scheduler")
    assert "Variant B won" in test.decision
    assert subjects(smtp_server) == {"Subject A": 6, "Subject B": 18}
    recipients = smtp_server.handler.recipients()
    assert sorted(recipients) == sorted(p.email for p in people)  # everyone once, nobody twice
    assert db.session.get(type(campaign), campaign.id).status == "sent"
    parsed = [email.message_from_bytes(e.original_content, policy=email.policy.default)
              for e in smtp_server.handler.envelopes]
    senders = {m["From"].addresses[0].display_name for m in parsed}
    assert senders == {"Test Org", "Asylum team"}
    page = client_as("analyst").get(f"/reports/campaigns/{campaign.id}").text
    table = page[page.index('id="ab-variants"'):]
    assert "Subject B</td><td>6</td><td>6</td><td>100.0%</td>" in table
    assert "Decided" in page and "Send B to the rest" not in page


def test_no_significant_difference_sends_the_default(ab_app, smtp_server):
    """Equal opens: the intervals overlap, the decision says so, and A goes to the rest."""
    campaign, people = campaign_with_test(12)
    lifecycle.send_now(campaign)
    factories.drain(ab_app)
    for variant in variants.variants_of(campaign.id):
        first = db.session.scalars(db.select(Message).where(Message.variant_id == variant.id)).first()
        db.session.add(EngagementEvent(message_id=first.id, supporter_id=first.supporter_id, campaign_id=campaign.id,
                                       kind="open"))
    db.session.commit()
    wait_is_over(campaign)
    factories.drain(ab_app)
    db.session.expire_all()
    test = db.session.get(AbTest, campaign.id)
    assert test.winner_id == variants.variants_of(campaign.id)[0].id and "not significant" in test.decision
    assert subjects(smtp_server) == {"Subject A": 9, "Subject B": 3}


def test_staff_pick_a_winner_by_hand_before_the_wait_is_over(ab_app, smtp_server, client_as):
    """An organizer sends C to the rest from the report; analysts cannot; the choice is audit-logged."""
    campaign, people = campaign_with_test(9, fraction=1 / 3, wait_minutes=600,
                                          others=[{"subject": "Subject B"}, {"subject": "Subject C"}])
    lifecycle.send_now(campaign)
    factories.drain(ab_app)
    assert sum(subjects(smtp_server).values()) == 3
    c = variants.variants_of(campaign.id)[2]
    assert client_as("analyst").post(f"/campaigns/{campaign.id}/ab/pick", data={"variant_id": c.id}).status_code == 403
    organizer = client_as("organizer")
    page = organizer.get(f"/reports/campaigns/{campaign.id}").text
    assert "Send C to the rest" in page
    response = organizer.post(f"/campaigns/{campaign.id}/ab/pick", data={"variant_id": c.id})
    assert response.status_code == 302
    factories.drain(ab_app)
    assert subjects(smtp_server) == {"Subject A": 1, "Subject B": 1, "Subject C": 7}
    entry = db.session.scalars(db.select(AuditLog).where(AuditLog.action == "campaigns.ab_test_decide")).one()
    assert entry.details["winner"] == "C" and entry.details["decided_by"].startswith("staff:")
    assert organizer.post(f"/campaigns/{campaign.id}/ab/pick", data={"variant_id": c.id}).status_code == 302


def test_setup_form_checks_variants_and_refuses_a_sent_campaign(app, client_as):
    """Bad shares and a single variant are refused on the form; a sent campaign's test cannot change."""
    segment = Segment(name="All", rules=EVERYONE)
    db.session.add(segment)
    db.session.commit()
    campaign = factories.make_campaign(segment=segment)
    organizer = client_as("organizer")
    assert organizer.get(f"/campaigns/{campaign.id}/ab").status_code == 200
    response = organizer.post(f"/campaigns/{campaign.id}/ab", data={"percent": "20", "wait_minutes": "60",
                                                                    "metric": "opens"})
    assert response.status_code == 400 and "2 to 4 variants" in response.text
    response = organizer.post(f"/campaigns/{campaign.id}/ab", data={"percent": "20", "metric": "clicks",
                                                                    "subject_b": "{{ oops"})
    assert response.status_code == 400 and "Variant B" in response.text
    response = organizer.post(f"/campaigns/{campaign.id}/ab", data={"percent": "20", "metric": "clicks",
                                                                    "subject_b": "Hello {{ supporter.first_name }}"})
    assert response.status_code == 302
    assert [v.label for v in variants.variants_of(campaign.id)] == ["A", "B"]
    assert client_as("analyst").post(f"/campaigns/{campaign.id}/ab", data={"percent": "20"}).status_code == 403
    campaign.status = "sent"
    db.session.commit()
    response = organizer.post(f"/campaigns/{campaign.id}/ab", data={"percent": "20", "subject_b": "x"})
    assert response.status_code == 400 and "no longer" in response.text


def test_each_variants_tracked_links_redirect_to_its_own_urls(ab_app, smtp_server):
    """A variant whose body links elsewhere: its click redirects reach its URLs, never the default body's."""
    body_b = ("<mjml><mj-body><mj-section><mj-column><mj-text>Hello {{ supporter.first_name }}, "
              '<a href="https://example.org/only-in-b">read B</a> '
              '<a href="https://example.org/shared">shared</a></mj-text></mj-column></mj-section></mj-body></mjml>')
    campaign, people = campaign_with_test(4, fraction=1.0, others=[{"subject": "Subject B", "mjml": body_b}])
    campaign.mjml = campaign.mjml.replace("</mj-text>", ' <a href="https://example.org/shared">shared</a> '
                                          '<a href="https://example.org/only-in-a">read A</a></mj-text>', 1)
    campaign.track_clicks = True
    db.session.commit()
    lifecycle.send_now(campaign)
    factories.drain(ab_app)
    client = ab_app.test_client()
    landed = {}
    for envelope in smtp_server.handler.envelopes:
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        html = message.get_body(("html",)).get_content()
        targets = set()
        for path in re.findall(r'href="https://crm\.example\.org(/c/[^"]+)"', html):
            answer = client.get(path)
            assert answer.status_code == 302
            targets.add(answer.headers["Location"])
        landed.setdefault(str(message["Subject"]), set()).update(targets)
    assert landed["Subject B"] == {"https://example.org/only-in-b", "https://example.org/shared"}
    assert {"https://example.org/only-in-a", "https://example.org/shared"} <= landed["Subject A"]
    assert "https://example.org/only-in-b" not in landed["Subject A"]
