"""Mailgun webhooks (the JSON format: {"signature": {...}, "event-data": {...}}).

Authentication (Mailgun "Securing webhooks"): signature.signature is the hex HMAC-SHA256 of
timestamp + token under the webhook signing key. The timestamp must be within
FEEDBACK_MAX_AGE_SECONDS, and a token is accepted only once (remembered in Redis for twice
that): a replay gets 406, which Mailgun takes as "do not retry".

event-data.event: failed (severity permanent = hard bounce, temporary = soft), complained,
unsubscribed, delivered. message.headers.message-id is the Message-ID we sent (no brackets).
"""

from __future__ import annotations

import hashlib
import hmac

from feedback.providers import (
    Incoming,
    Parsed,
    ProviderSettings,
    check_fresh,
    equal,
    from_unix,
    load_json,
    obj,
    text,
    unix_time,
)
from feedback.types import Feedback, Rejected, normalised_address, scrub


def verify(doc: dict, incoming: Incoming, settings: ProviderSettings) -> None:
    key = settings.secret
    if not key:
        raise Rejected(403, "no Mailgun webhook signing key is configured")
    signature = obj(doc, "signature")
    timestamp, token, given = text(signature, "timestamp", 40), text(signature, "token", 200), \
        text(signature, "signature", 200)
    if not timestamp or not token or not given:
        raise Rejected(401, "the request is not signed")
    check_fresh(unix_time(timestamp), incoming)
    expected = hmac.new(key.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256).hexdigest()
    if not equal(expected, given.lower()):
        raise Rejected(403, "the signature does not verify")
    if incoming.remember_nonce is not None and not incoming.remember_nonce(
            "mailgun", token, int(2 * incoming.max_age)):
        raise Rejected(406, "this token was used before")


def parse(incoming: Incoming, settings: ProviderSettings) -> Parsed:
    doc = load_json(incoming.body)
    if not isinstance(doc, dict):
        raise Rejected(400, "a Mailgun webhook is one JSON object")
    verify(doc, incoming, settings)
    data = obj(doc, "event-data")
    event, event_id = text(data, "event"), text(data, "id", 200)
    address = normalised_address(text(data, "recipient"))
    if not event_id or address is None:
        raise Rejected(400, "event-data has no id or recipient")
    headers = obj(obj(data, "message"), "headers")
    variables = obj(data, "user-variables")
    base = {"provider": "mailgun", "event_id": event_id, "address": address,
            "message_id": text(headers, "message-id", 250) or None,
            "message_ref": text(variables, "message_ref", 60) or None,
            "occurred_at": from_unix(data.get("timestamp"))}
    if event == "failed":
        status = obj(data, "delivery-status")
        severity = text(data, "severity")
        detail = text(status, "description") or text(status, "message") or text(data, "reason")
        code = text(status, "enhanced-code", 20) or text(status, "code", 20)
        return Parsed([Feedback(**base, kind="bounce", hard=severity == "permanent", status=code,
                                detail=scrub(f"{severity} ({text(data, 'reason')}): {detail}"))])
    if event == "complained":
        return Parsed([Feedback(**base, kind="complaint", detail="complained")])
    if event == "unsubscribed":
        return Parsed([Feedback(**base, kind="unsubscribe", detail="unsubscribed through Mailgun")])
    if event == "delivered":
        return Parsed([Feedback(**base, kind="delivery")])
    return Parsed(note=f"{event or 'this'} events are not feedback")
