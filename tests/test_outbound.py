"""Outbound webhooks: emitted after commit, signed, delivered to a real receiver, retried, logged, replayed."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from crm import events
from crm.extensions import db
from crm.models import ConsentWording, OutboundEvent, WebhookDelivery, WebhookEndpoint
from crm.petitions.service import find_public
from crm.petitions.signing import record_signature
from crm.redis_conn import get_redis
from outbound import dispatch, hosts, service
from tests import factories

README = Path(__file__).resolve().parent.parent / "README.md"


def documented_verify():
    """The verification snippet exactly as the README shows it, made callable."""
    text = README.read_text()
    code = re.search(r"```python\n(import base64, hashlib, hmac, time\n.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 (our own documentation)
    return namespace["verify"]


class Receiver:
    """A real HTTP server on 127.0.0.1 that answers `script` in turn (the last one repeats)."""

    def __init__(self, script: list[int]):
        self.script, self.requests = list(script), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.script.pop(0) if len(receiver.script) > 1 else receiver.script[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/crm"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def start(script):
        made.append(Receiver(script))
        return made[-1]

    yield start
    for r in made:
        r.close()


@pytest.fixture
def hook_app(make_app):
    """An app whose failed deliveries are retried at once, three times (the real waits are minutes to hours)."""
    app = make_app(WEBHOOK_RETRY_SECONDS="0,0,0")
    with app.app_context():
        yield app


def register(url: str, events_: list[str], allow_private: bool = True) -> tuple[WebhookEndpoint, str]:
    service.save_settings(allow_private, None)
    return service.create_endpoint({"url": url, "events": events_}, None)


def sign(petition, email: str):
    return record_signature(find_public(petition.slug), {"email": email, "first_name": "Ana"}, None, None)


def open_petition():
    petition = factories.make_petition()
    db.session.add(ConsentWording(petition_id=petition.id, version=1, mode="implied", text=petition.consent_wording))
    db.session.commit()
    return petition


def test_signature_reaches_a_real_receiver_signed_and_retried_after_two_failures(hook_app, receiver):
    """Receiver fails twice then accepts: three attempts, one webhook-id, each verified by the README's snippet."""
    target = receiver([500, 503, 204])
    endpoint, secret = register(target.url, ["signature.created"])
    result = sign(open_petition(), "signer@example.net")
    factories.drain(hook_app)
    assert len(target.requests) == 3
    verify = documented_verify()
    bodies = {}
    for headers, body in target.requests:
        assert verify(secret, headers, body)
        assert not verify(secret, headers, body + b" ")
        bodies.setdefault(headers["webhook-id"], []).append(body)
    signature_bodies = [b for b in bodies.values() if b"signature.created" in b[0]][0]
    assert len(signature_bodies) == 3 and len(set(signature_bodies)) == 1
    assert f'"signature_id":{result.signature_id}'.encode() in signature_bodies[0]
    delivery = db.session.scalar(db.select(WebhookDelivery).where(WebhookDelivery.event_type == "signature.created"))
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 3, 204)


def test_a_receiver_that_never_accepts_ends_failed(hook_app, receiver):
    """After the last retry the delivery is failed, with the last answer recorded."""
    target = receiver([500])
    register(target.url, ["signature.created"])
    sign(open_petition(), "x@example.net")
    factories.drain(hook_app)
    delivery = db.session.scalar(db.select(WebhookDelivery))
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 4, 500)
    assert len(target.requests) == 4


def test_replay_sends_the_same_event_again(hook_app, receiver, client_as):
    """Staff replay a delivery from the log: same body and webhook-id, a new delivery row."""
    target = receiver([204])
    endpoint, _ = register(target.url, ["signature.created"])
    sign(open_petition(), "r@example.net")
    factories.drain(hook_app)
    first = db.session.scalar(db.select(WebhookDelivery))
    organizer = client_as("organizer")
    log_page = organizer.get(f"/settings/webhooks/{endpoint.id}/deliveries")
    assert log_page.status_code == 200 and "delivered" in log_page.text
    assert organizer.post(f"/settings/webhooks/deliveries/{first.id}/replay").status_code == 302
    factories.drain(hook_app)
    assert len(target.requests) == 2
    assert target.requests[0][1] == target.requests[1][1]
    assert target.requests[0][0]["webhook-id"] == target.requests[1][0]["webhook-id"]
    again = db.session.scalar(db.select(WebhookDelivery).where(WebhookDelivery.replay_of_id == first.id))
    assert again.status == "delivered"


def outbox() -> list[OutboundEvent]:
    return list(db.session.scalars(db.select(OutboundEvent).order_by(OutboundEvent.id)))


def test_nothing_is_emitted_for_a_rolled_back_fact(hook_app, receiver):
    """An event emitted in a transaction that rolls back is never stored; one that commits is, with it."""
    register(receiver([204]).url, ["supporter.unsubscribed"])
    events.emit("supporter.unsubscribed", {"supporter_id": 1})
    db.session.rollback()
    assert outbox() == []
    events.emit("supporter.unsubscribed", {"supporter_id": 1})
    db.session.commit()
    assert [(e.event_type, e.data) for e in outbox()] == [("supporter.unsubscribed", {"supporter_id": 1})]


def test_a_savepoint_neither_stores_nor_drops_the_transactions_events(hook_app, receiver):
    """Events wait for the outermost commit: a savepoint released or rolled back inside leaves them pending."""
    register(receiver([204]).url, ["supporter.unsubscribed"])
    events.emit("supporter.unsubscribed", {"supporter_id": 1})
    with db.session.begin_nested():
        pass
    with pytest.raises(ValueError), db.session.begin_nested():
        raise ValueError
    assert outbox() == []
    db.session.commit()
    assert len(outbox()) == 1


def test_events_nobody_wants_are_not_even_stored(hook_app, receiver):
    """With no endpoint for signatures, signing stores no outbound event."""
    register(receiver([204]).url, ["campaign.sent"])
    sign(open_petition(), "quiet@example.net")
    assert outbox() == []


def test_unsubscribe_bounce_complaint_and_campaign_sent_are_emitted(hook_app, receiver):
    """The other facts: an opt-out, feedback's bounce and complaint, and a finished campaign."""
    from campaigns import pipeline
    from crm.supporters.consent import record_consent
    from feedback.apply import apply_feedback
    from feedback.types import Feedback

    target = receiver([204])
    register(target.url, ["supporter.unsubscribed", "supporter.bounced", "supporter.complained", "campaign.sent"])
    campaign = factories.make_campaign(status="sending")
    people = [factories.make_supporter() for _ in range(3)]
    messages = [factories.make_message(campaign, p) for p in people]
    record_consent(people[0], "opt_out", "unsubscribe_link", campaign_id=campaign.id)
    db.session.commit()
    for kind, message, person in (("bounce", messages[1], people[1]), ("complaint", messages[2], people[2])):
        apply_feedback(Feedback(kind=kind, provider="generic", event_id=f"e-{kind}", hard=True,
                                message_ref=f"{campaign.id}.{message.id}", address=person.email))
    pipeline.finish(campaign.id, {"sent": 3})
    factories.drain(hook_app)
    kinds = sorted(re.search(rb'"type":"([a-z.]+)"', body).group(1).decode() for _, body in target.requests)
    assert kinds == ["campaign.sent", "supporter.bounced", "supporter.complained", "supporter.unsubscribed"]


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://localhost/x", "http://10.1.2.3/x",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/x", "http://192.168.0.1/",
                                 "http://[::ffff:127.0.0.1]/x", "http://100.64.0.1/"])
def test_private_loopback_and_link_local_hosts_are_refused(app, url):
    """Unless the admin setting allows them, only public addresses may receive webhooks."""
    with pytest.raises(hosts.Refused):
        hosts.resolve(url, allow_private=False)
    hosts.resolve(url, allow_private=True)


@pytest.mark.parametrize("url", ["ftp://example.org/", "https://user:pw@example.org/", "example.org",
                                 "https://exa mple.org/", "https://example.org:99999/"])
def test_malformed_urls_are_refused(app, url):
    """Only plain http(s) URLs with a host and no credentials."""
    with pytest.raises(hosts.Refused):
        hosts.parse(url)


def test_webhook_settings_are_admin_only_and_show_the_secret_once(app, client_as):
    """Admins register endpoints (refused for a loopback URL until allowed); organizers get 403."""
    assert client_as("organizer").get("/settings/webhooks/").status_code == 403
    admin = client_as("admin")
    data = {"url": "http://127.0.0.1:9/x", "events": ["signature.created"], "is_active": "y"}
    refused = admin.post("/settings/webhooks/", data=data)
    assert refused.status_code == 400 and "private" in refused.text
    assert admin.post("/settings/webhooks/settings", data={"allow_private_hosts": "y"}).status_code == 302
    made = admin.post("/settings/webhooks/", data=data)
    assert made.status_code == 201 and "whsec_" in made.text
    endpoint = db.session.scalar(db.select(WebhookEndpoint))
    assert "whsec_" not in endpoint.secret  # encrypted at rest
    assert "whsec_" not in admin.get(f"/settings/webhooks/{endpoint.id}").text


def test_signing_only_stores_the_event_and_contacts_no_receiver(hook_app, receiver):
    """The request that signs makes no delivery and no HTTP call: one event waits in the outbox for a worker."""
    target = receiver([204])
    register(target.url, ["signature.created"])
    result = sign(open_petition(), "fast@example.net")
    assert [(e.event_type, e.data["signature_id"]) for e in outbox()] == [("signature.created", result.signature_id)]
    assert get_redis().exists(dispatch.FLAG_KEY)  # a dispatch job is queued
    assert db.session.scalar(db.select(db.func.count()).select_from(WebhookDelivery)) == 0
    assert target.requests == []


def test_retry_schedule_setting_is_checked(make_app):
    """WEBHOOK_RETRY_SECONDS must be whole seconds; the app refuses to start otherwise, naming it."""
    from crm.config import ConfigError

    with pytest.raises(ConfigError, match="WEBHOOK_RETRY_SECONDS"):
        make_app(WEBHOOK_RETRY_SECONDS="60,soon")
    assert make_app(WEBHOOK_RETRY_SECONDS="5,10").config["WEBHOOK_RETRY_SECONDS"] == (5, 10)


@pytest.mark.parametrize("dies", ["before its commit", "after its commit, before queueing"])
def test_a_dispatch_job_that_dies_loses_no_event_and_doubles_none(hook_app, receiver, monkeypatch, dies):
    """The dispatch job fails midway; the next run delivers every event exactly once."""
    target = receiver([204])
    register(target.url, ["signature.created"])
    petition = open_petition()
    signed = {sign(petition, f"signer{i}@example.net").signature_id for i in range(3)}
    assert len(outbox()) == 3

    class Died(Exception):
        pass

    def die(*args, **kwargs):
        raise Died

    if dies == "before its commit":
        monkeypatch.setattr(dispatch, "new_webhook_id", die)
    else:
        monkeypatch.setattr(dispatch, "enqueue_delivery", die)
    with pytest.raises(Died):
        dispatch.dispatch()
    db.session.rollback()
    monkeypatch.undo()
    made = db.session.scalar(db.select(db.func.count()).select_from(WebhookDelivery))
    assert (len(outbox()), made) == ((3, 0) if dies == "before its commit" else (0, 3))
    monkeypatch.setattr(dispatch, "UNTRIED_SECONDS", 0.0)  # the lost jobs' deliveries are old enough now
    dispatch.dispatch()
    factories.drain(hook_app)
    delivered = [json.loads(body)["data"]["signature_id"] for _, body in target.requests]
    assert sorted(delivered) == sorted(signed)
    rows = db.session.scalars(db.select(WebhookDelivery)).all()
    assert len(rows) == 3 and {r.status for r in rows} == {"delivered"} and outbox() == []
    dispatch.dispatch()  # a later run finds nothing to do again
    factories.drain(hook_app)
    assert len(target.requests) == 3
