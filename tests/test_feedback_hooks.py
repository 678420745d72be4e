"""/hooks/<provider>: payloads in each provider's documented format change exactly what they
should; forged, replayed, stale, oversized or garbage ones change nothing and never answer 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from flask import current_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from crm.extensions import db
from crm.models import ConsentEvent, FeedbackEvent, FeedbackIntake, Message
from crm.supporters import suppression
from feedback.providers import generic, ses
from feedback.settings import forget_cache, save_provider
from tests import factories
from tests.feedback_fixtures import (
    SNSServer,
    ref,
    sendgrid_headers,
    sendgrid_keys,
    sent_message,
    ses_bounce,
    ses_complaint,
    ses_delivery,
    sns_notification,
    sns_timestamp,
)

MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
GENERIC_SECRET = "whsec_" + base64.b64encode(b"a test secret of thirty-two bytes").decode()


@pytest.fixture
def sns(tmp_path):
    server = SNSServer(tmp_path)
    ses.forget_certificates()
    yield server
    server.stop()
    ses.forget_certificates()


@pytest.fixture
def hooks_app(make_app, sns):
    app = make_app(SNS_ALLOWED_HOSTS=sns.host, SNS_CA_FILE=str(sns.ca_file))
    with app.app_context():
        forget_cache()
        admin = factories.make_staff("admin")
        key, public = sendgrid_keys()
        save_provider("ses", {"enabled": True, "auto_confirm": True}, admin.id)
        save_provider("postmark", {"enabled": True, "username": "postmark", "secret": "s3cret-pm"}, admin.id)
        save_provider("sendgrid", {"enabled": True, "public_key": public}, admin.id)
        save_provider("mailgun", {"enabled": True, "secret": MAILGUN_KEY}, admin.id)
        save_provider("generic", {"enabled": True, "secret": GENERIC_SECRET}, admin.id)
        app.sendgrid_key = key
        yield app
        forget_cache()


@pytest.fixture
def client(hooks_app):
    return hooks_app.test_client()


def apply_queued() -> None:
    """Run the worker's jobs, as a worker would within a second: the intake is applied."""
    factories.drain(current_app._get_current_object())


def snapshot() -> tuple:
    """Everything a piece of feedback could change, counted (the intake's waiting rows too)."""
    return tuple(db.session.scalar(select(func.count()).select_from(model)) for model in (
        ConsentEvent, FeedbackEvent, FeedbackIntake)) + (
        db.session.scalar(select(func.count()).select_from(suppression.Suppression)),
        db.session.scalar(select(func.count()).select_from(Message).where(
            (Message.bounced_at.is_not(None)) | (Message.complained_at.is_not(None))
            | (Message.delivered_at.is_not(None)))))


def post_sns(client, doc):
    return client.post("/hooks/ses", data=json.dumps(doc), headers={
        "Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": doc.get("Type", ""),
        "x-amz-sns-message-id": doc.get("MessageId", ""), "User-Agent": "Amazon Simple Notification Service Agent"})


def post_sendgrid(client, app, events):
    body = json.dumps(events).encode()
    return client.post("/hooks/sendgrid", data=body, headers=sendgrid_headers(app.sendgrid_key, body))


def count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


# -- Amazon SES through SNS -----------------------------------------------------------------

@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_permanent_bounce_signed_makes_the_address_bouncing(client, sns, version):
    """A signed Bounce notification (SignatureVersion 1 or 2): bouncing, suppressed, message marked."""
    person = factories.make_supporter()
    message = sent_message(person)
    doc = sns.sign(sns_notification(ses_bounce(message, person.email)), version)

    response = post_sns(client, doc)

    assert response.status_code == 200, response.json
    assert (response.json["received"], response.json["queued"], response.json["duplicates"]) == (1, 1, 0)
    apply_queued()
    assert person.email_status == "bouncing" and message.bounce_type == "hard"
    assert suppression.entry_for(person.email).source == "bounce:ses"
    assert sns.requests == ["/SimpleNotificationService-0123456789abcdef.pem"]
    post_sns(client, sns.sign(sns_notification(ses_bounce(message, person.email), "other-id")))
    assert len(sns.requests) == 1  # the certificate is cached


def test_ses_retry_of_the_same_notification_changes_nothing(client, sns):
    """SNS retries: the same notification again answers 200 and writes nothing."""
    person = factories.make_supporter()
    message = sent_message(person)
    doc = sns.sign(sns_notification(ses_bounce(message, person.email)))
    post_sns(client, doc)
    before = snapshot()
    again = post_sns(client, doc)
    assert again.status_code == 200 and (again.json["queued"], again.json["duplicates"]) == (0, 1)
    assert snapshot() == before


def test_ses_transient_bounce_is_soft_and_complaint_and_delivery_apply(client, sns):
    """Transient: soft (status unchanged); Complaint: complained; Delivery: delivered_at only."""
    person, other, third = (factories.make_supporter() for _ in range(3))
    soft, complained, delivered = sent_message(person), sent_message(other), sent_message(third)
    for n, ses_doc in enumerate([ses_bounce(soft, person.email, "Transient", "4.2.2"),
                                 ses_complaint(complained, other.email), ses_delivery(delivered, third.email)]):
        assert post_sns(client, sns.sign(sns_notification(ses_doc, f"id-{n}"))).status_code == 200
    apply_queued()
    assert (person.email_status, soft.bounce_type) == ("subscribed", "soft")
    assert other.email_status == "complained" and complained.complained_at is not None
    assert third.email_status == "subscribed" and delivered.delivered_at is not None


def test_ses_not_spam_feedback_changes_nothing(client, sns):
    """complaintFeedbackType not-spam withdraws nothing."""
    person = factories.make_supporter()
    message = sent_message(person)
    post_sns(client, sns.sign(sns_notification(ses_complaint(message, person.email, "not-spam"))))
    apply_queued()
    assert person.email_status == "subscribed"


def test_ses_forgeries_are_refused_and_change_nothing(client, sns):
    """A bad signature, a key of our own, a certificate off the SNS hosts or over http, a stale
    timestamp, a type mismatch or raw delivery: 4xx, nothing written."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    person = factories.make_supporter()
    message = sent_message(person)
    good = sns.sign(sns_notification(ses_bounce(message, person.email)))
    tampered = {**good, "Message": good["Message"].replace("Permanent", "Permanent ")}
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = [
        (tampered, 403),
        (sns.sign(sns_notification(ses_bounce(message, person.email)), key=other_key), 403),
        (sns.sign({**sns_notification(ses_bounce(message, person.email)),
                   "SigningCertURL": "https://sns.evil.example/cert.pem"}), 403),
        (sns.sign({**sns_notification(ses_bounce(message, person.email)),
                   "SigningCertURL": sns.cert_url.replace("https", "http")}), 403),
        (sns.sign(sns_notification(ses_bounce(message, person.email), Timestamp=sns_timestamp(-600))), 400),
        ({**good, "SignatureVersion": "3"}, 400),
        (json.loads(good["Message"]), 400),  # raw message delivery: no SNS envelope, no signature
    ]
    before = snapshot()
    for doc, status in cases:
        assert post_sns(client, doc).status_code == status, doc.get("SigningCertURL")
    response = client.post("/hooks/ses", data=json.dumps(good), headers={"x-amz-sns-message-type": "Notification "})
    assert response.status_code == 400
    assert snapshot() == before
    apply_queued()
    assert person.email_status == "subscribed"


def test_ses_subscription_is_confirmed_only_on_an_sns_host(client, sns):
    """SubscriptionConfirmation: the SubscribeURL is fetched when it is on an allowed host, else refused."""
    confirmation = {"Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
                    "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3b",
                    "TopicArn": "arn:aws:sns:us-west-2:123456789012:ses-feedback",
                    "Message": "You have chosen to subscribe to the topic arn:aws:sns:us-west-2:123456789012:"
                               "ses-feedback.\nTo confirm the subscription, visit the SubscribeURL included in "
                               "this message.",
                    "SubscribeURL": f"https://{sns.host}/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2"
                                    ":123456789012:ses-feedback&Token=2336412f37",
                    "Timestamp": sns_timestamp()}
    response = post_sns(client, sns.sign(confirmation))
    assert response.status_code == 200 and response.json["note"] == "subscription confirmed"
    assert any("ConfirmSubscription" in path for path in sns.requests)
    elsewhere = {**confirmation, "SubscribeURL": "https://attacker.example/?Action=ConfirmSubscription"}
    assert post_sns(client, sns.sign(elsewhere)).status_code == 403


def test_ses_topic_allow_list(client, sns, hooks_app):
    """With topic ARNs saved, another topic's notifications are refused."""
    save_provider("ses", {"enabled": True, "auto_confirm": True,
                          "topic_arns": "arn:aws:sns:eu-west-1:123456789012:only-this"},
                  factories.make_staff("admin").id)
    person = factories.make_supporter()
    message = sent_message(person)
    assert post_sns(client, sns.sign(sns_notification(ses_bounce(message, person.email)))).status_code == 403


# -- Postmark ---------------------------------------------------------------------------------

def postmark(client, doc, auth=("postmark", "s3cret-pm"), **kwargs):
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    return client.post("/hooks/postmark", data=json.dumps(doc), headers=headers, **kwargs)


def postmark_bounce(address, bounce_id=4323372036854775807, kind="HardBounce", record="Bounce"):
    """Postmark's Bounce webhook, field for field (its "Bounce webhook" example)."""
    return {"RecordType": record, "MessageStream": "outbound", "ID": bounce_id, "Type": kind,
            "TypeCode": {"HardBounce": 1, "SoftBounce": 4096, "SpamComplaint": 512}.get(kind, 1),
            "Name": "Hard bounce", "Tag": "update", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "Metadata": {"a_key": "a_value"}, "ServerID": 23,
            "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            "Email": address, "From": "updates@news.example.org", "BouncedAt": "2019-11-05T16:33:54.9070259Z",
            "DumpAvailable": True, "Inactive": True, "CanActivate": True, "Subject": "Our periodic update"}


def test_postmark_bounce_complaint_and_subscription_change(client):
    """Hard bounce -> bouncing; SpamComplaint -> complained; a recipient's ManualSuppression -> unsubscribed."""
    a, b, c = (factories.make_supporter() for _ in range(3))
    for person in (a, b, c):
        sent_message(person)
    assert postmark(client, postmark_bounce(a.email)).status_code == 200
    assert postmark(client, postmark_bounce(b.email, 42, "SpamComplaint", "SpamComplaint")).status_code == 200
    change = {"RecordType": "SubscriptionChange", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
              "ServerID": 123456, "MessageStream": "outbound", "ChangedAt": "2020-02-01T10:53:34.416071Z",
              "Recipient": c.email, "Origin": "Recipient", "SuppressSending": True,
              "SuppressionReason": "ManualSuppression", "Tag": "my-tag", "Metadata": {}}
    assert postmark(client, change).status_code == 200
    apply_queued()
    assert (a.email_status, b.email_status, c.email_status) == ("bouncing", "complained", "unsubscribed")


def test_postmark_needs_its_credentials_and_allowed_address(client, hooks_app):
    """No or wrong basic auth: 401; outside the IP allow-list: 403; nothing changes."""
    person = factories.make_supporter()
    sent_message(person)
    before = snapshot()
    assert postmark(client, postmark_bounce(person.email), auth=None).status_code == 401
    assert postmark(client, postmark_bounce(person.email), auth=("postmark", "guess")).status_code == 401
    save_provider("postmark", {"enabled": True, "username": "postmark",
                               "ip_allowlist": "3.134.147.250\n50.31.156.0/24"}, factories.make_staff("admin").id)
    assert postmark(client, postmark_bounce(person.email), environ_base={"REMOTE_ADDR": "203.0.113.9"}
                    ).status_code == 403
    assert snapshot() == before
    ok = postmark(client, postmark_bounce(person.email), environ_base={"REMOTE_ADDR": "50.31.156.6"})
    assert ok.status_code == 200


# -- SendGrid ---------------------------------------------------------------------------------

def sendgrid_event(message, event, **fields):
    """One Event Webhook event as SendGrid documents them."""
    return {"email": message.email, "timestamp": int(time.time()), "smtp-id": message.smtp_message_id,
            "event": event, "category": ["updates"], "sg_event_id": f"sg_{event}_{message.id}",
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0", **fields}


def test_sendgrid_batch_changes_exactly_what_it_should(client, hooks_app):
    """bounce -> bouncing; blocked -> soft; dropped (Bounced Address) -> bouncing; deferred -> nothing;
    spamreport -> complained; unsubscribe -> unsubscribed; delivered -> delivered_at."""
    people = [factories.make_supporter() for _ in range(7)]
    messages = [sent_message(p) for p in people]
    events = [
        sendgrid_event(messages[0], "bounce", reason="500 unknown recipient", status="5.0.0", type="bounce"),
        sendgrid_event(messages[1], "bounce", reason="550 blocked", status="5.7.1", type="blocked"),
        sendgrid_event(messages[2], "dropped", reason="Bounced Address", status="5.0.0"),
        sendgrid_event(messages[3], "deferred", response="400 try again later", attempt="5"),
        sendgrid_event(messages[4], "spamreport"),
        sendgrid_event(messages[5], "unsubscribe"),
        sendgrid_event(messages[6], "delivered", response="250 OK"),
        sendgrid_event(messages[6], "open", useragent="Mozilla/4.0", ip="255.255.255.255"),
    ]
    body = json.dumps(events).encode()
    response = client.post("/hooks/sendgrid", data=body, headers=sendgrid_headers(hooks_app.sendgrid_key, body))
    assert response.status_code == 200, response.json
    apply_queued()
    assert [p.email_status for p in people] == ["bouncing", "subscribed", "bouncing", "subscribed", "complained",
                                                "unsubscribed", "subscribed"]
    assert messages[1].bounce_type == "soft" and messages[3].bounced_at is None
    assert messages[6].delivered_at is not None
    before = snapshot()
    replay = client.post("/hooks/sendgrid", data=body, headers=sendgrid_headers(hooks_app.sendgrid_key, body))
    assert replay.status_code == 200 and snapshot() == before


def test_sendgrid_unsigned_forged_or_stale_is_refused(client, hooks_app):
    """No signature 401, another key or an edited body 403, a stale timestamp 400: nothing changes."""
    from tests.feedback_fixtures import sendgrid_keys as keys

    person = factories.make_supporter()
    message = sent_message(person)
    body = json.dumps([sendgrid_event(message, "spamreport")]).encode()
    other, _ = keys()
    before = snapshot()
    assert client.post("/hooks/sendgrid", data=body).status_code == 401
    assert client.post("/hooks/sendgrid", data=body, headers=sendgrid_headers(other, body)).status_code == 403
    signed = sendgrid_headers(hooks_app.sendgrid_key, body)
    assert client.post("/hooks/sendgrid", data=body.replace(b"spamreport", b"spamreporT"),
                       headers=signed).status_code == 403
    stale = sendgrid_headers(hooks_app.sendgrid_key, body, str(int(time.time()) - 400))
    assert client.post("/hooks/sendgrid", data=body, headers=stale).status_code == 400
    assert snapshot() == before


# -- Mailgun ----------------------------------------------------------------------------------

def mailgun_body(message, event, token="a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0", timestamp=None,
                 key=MAILGUN_KEY, **data):
    timestamp = timestamp or str(int(time.time()))
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    event_data = {"event": event, "id": f"G9Bn5sl1TC6dZQoekMAZ7A-{event}-{message.id}", "timestamp": time.time(),
                  "log-level": "error", "recipient": message.email,
                  "message": {"headers": {"to": message.email, "message-id": message.smtp_message_id.strip("<>"),
                                          "from": "Test Org <updates@news.example.org>",
                                          "subject": "Our periodic update"}, "attachments": [], "size": 111},
                  "flags": {"is-routed": False, "is-authenticated": True, "is-system-test": False,
                            "is-test-mode": False},
                  "envelope": {"transport": "smtp", "sender": "bounces@news.example.org", "targets": message.email},
                  "tags": [], "campaigns": [], "user-variables": {}, **data}
    return json.dumps({"signature": {"timestamp": timestamp, "token": token, "signature": signature},
                       "event-data": event_data})


def test_mailgun_failed_and_complained(client):
    """failed/permanent -> bouncing; failed/temporary -> soft; complained -> complained."""
    a, b, c = (factories.make_supporter() for _ in range(3))
    ma, mb, mc = sent_message(a), sent_message(b), sent_message(c)
    status = {"attempt-no": 1, "message": "", "code": 550, "enhanced-code": "5.1.1",
              "description": "No such user", "session-seconds": 0.4}
    assert client.post("/hooks/mailgun", data=mailgun_body(ma, "failed", token="t1", severity="permanent",
                       reason="bounce", **{"delivery-status": status}),
                       content_type="application/json").status_code == 200
    assert client.post("/hooks/mailgun", data=mailgun_body(mb, "failed", token="t2", severity="temporary",
                       reason="generic", **{"delivery-status": {**status, "code": 452, "enhanced-code": "4.2.2"}}),
                       content_type="application/json").status_code == 200
    assert client.post("/hooks/mailgun", data=mailgun_body(mc, "complained", token="t3"),
                       content_type="application/json").status_code == 200
    apply_queued()
    assert (a.email_status, b.email_status, c.email_status) == ("bouncing", "subscribed", "complained")
    assert mb.bounce_type == "soft"


def test_mailgun_tokens_are_not_accepted_twice_and_bad_signatures_fail(client):
    """A reused token: 406; a wrong key: 403; a stale timestamp: 400; nothing changes."""
    person = factories.make_supporter()
    message = sent_message(person)
    first = mailgun_body(message, "delivered", token="once")
    assert client.post("/hooks/mailgun", data=first, content_type="application/json").status_code == 200
    before = snapshot()
    complaint = mailgun_body(message, "complained", token="once")
    assert client.post("/hooks/mailgun", data=complaint, content_type="application/json").status_code == 406
    forged = mailgun_body(message, "complained", token="new", key="key-guessed")
    assert client.post("/hooks/mailgun", data=forged, content_type="application/json").status_code == 403
    stale = mailgun_body(message, "complained", token="old", timestamp=str(int(time.time()) - 3600))
    assert client.post("/hooks/mailgun", data=stale, content_type="application/json").status_code == 400
    assert snapshot() == before


# -- generic ----------------------------------------------------------------------------------

def generic_post(client, events, webhook_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", secret=GENERIC_SECRET,
                 timestamp=None):
    body = json.dumps({"events": events}).encode()
    timestamp = timestamp or str(int(time.time()))
    return client.post("/hooks/generic", data=body, headers={
        "Content-Type": "application/json", "webhook-id": webhook_id, "webhook-timestamp": timestamp,
        "webhook-signature": generic.sign(secret, webhook_id, timestamp, body)})


def test_generic_events_apply_and_are_authenticated(client):
    """Signed events apply; a wrong secret 403, a replayed webhook-id 409, one bad event 400 (none applied)."""
    a, b = factories.make_supporter(), factories.make_supporter()
    ma, mb = sent_message(a), sent_message(b)
    ok = generic_post(client, [
        {"id": "e1", "type": "bounce", "bounce": "hard", "email": a.email, "message_ref": ref(ma), "status": "5.1.1"},
        {"id": "e2", "type": "complaint", "email": b.email, "message_id": mb.smtp_message_id}])
    assert ok.status_code == 200 and ok.json["queued"] == 2
    apply_queued()
    assert (a.email_status, b.email_status) == ("bouncing", "complained")
    c = factories.make_supporter()
    mc = sent_message(c)
    before = snapshot()
    event = {"id": "e3", "type": "complaint", "email": c.email, "message_ref": ref(mc)}
    assert generic_post(client, [event], webhook_id="w2", secret="wrong").status_code == 403
    assert generic_post(client, [event]).status_code == 409  # the first request's webhook-id again
    assert generic_post(client, [event, {"id": "e4", "type": "explode"}], webhook_id="w3").status_code == 400
    assert generic_post(client, [event], webhook_id="w4", timestamp=str(int(time.time()) + 900)).status_code == 400
    assert snapshot() == before


# -- every endpoint -----------------------------------------------------------------------------

def test_disabled_unknown_and_oversized(client, hooks_app):
    """A provider that is off or unknown: 404; a body over FEEDBACK_MAX_BODY_BYTES: 413."""
    save_provider("mailgun", {"enabled": False}, factories.make_staff("admin").id)
    assert client.post("/hooks/mailgun", data="{}").status_code == 404
    assert client.post("/hooks/nonesuch", data="{}").status_code == 404
    hooks_app.config["FEEDBACK_MAX_BODY_BYTES"] = 1000
    assert client.post("/hooks/sendgrid", data=b"[" + b" " * 2000 + b"]").status_code == 413
    assert client.get("/hooks/ses").status_code == 405


def test_a_sent_message_for_an_address_never_mailed_is_ignored(client):
    """A valid, signed report about an address we never mailed: 200, unmatched, no change."""
    stranger = factories.make_supporter()
    body = generic_post(client, [{"id": "x1", "type": "complaint", "email": stranger.email}])
    assert body.status_code == 200 and body.json["queued"] == 1
    apply_queued()
    assert db.session.scalar(select(FeedbackEvent.outcome).where(FeedbackEvent.event_id == "x1")) == "unmatched"
    assert stranger.email_status == "subscribed"


JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                       lambda children: st.lists(children, max_size=4)
                       | st.dictionaries(st.text(max_size=12), children, max_size=5), max_leaves=20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(provider=st.sampled_from(["ses", "postmark", "sendgrid", "mailgun", "generic"]),
       body=st.one_of(st.binary(max_size=300), JSONISH.map(lambda v: json.dumps(v).encode())),
       headers=st.dictionaries(st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature",
                                                "X-Twilio-Email-Event-Webhook-Signature",
                                                "X-Twilio-Email-Event-Webhook-Timestamp", "x-amz-sns-message-type",
                                                "Authorization", "Content-Type"]),
                               st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
                               max_size=4))
def test_no_body_ever_answers_500_or_changes_anything(client, provider, body, headers):
    """Garbage in any shape at any endpoint: a 4xx, and nothing written."""
    before = snapshot()
    response = client.post(f"/hooks/{provider}", data=body, headers=headers)
    assert 400 <= response.status_code < 500, (response.status_code, response.data[:200])
    assert snapshot() == before
