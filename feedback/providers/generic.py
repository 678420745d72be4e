"""The generic JSON format, for relays we have no module for (README, "Generic webhook").

Signed the Standard Webhooks way: headers webhook-id, webhook-timestamp (Unix seconds) and
webhook-signature, a space-separated list of "v1,<base64 HMAC-SHA256>" over
"<webhook-id>.<webhook-timestamp>.<raw body>" with the shared secret (a "whsec_" secret is
base64 after the prefix, any other is used as typed). The timestamp must be within
FEEDBACK_MAX_AGE_SECONDS and a webhook-id is accepted once (409 after).

Body: {"events": [{"id": "...", "type": "bounce" | "complaint" | "unsubscribe" | "delivery",
"email": "...", "bounce": "hard" | "soft", "status": "5.1.1", "detail": "...",
"message_ref": "<X-Message-Ref>", "message_id": "<Message-ID>", "timestamp": "ISO 8601"}]}.
Every event is checked before any is applied: one bad event refuses the whole request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from feedback.providers import (
    Incoming,
    Parsed,
    ProviderSettings,
    check_fresh,
    equal,
    iso_time,
    load_json,
    text,
    unix_time,
)
from feedback.types import Feedback, Rejected, normalised_address, scrub

TYPES = ("bounce", "complaint", "unsubscribe", "delivery")
MAX_EVENTS = 10_000


def secret_bytes(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_"):], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode("utf-8")


def sign(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The webhook-signature header value for a body (what a sender computes)."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()).decode()


def verify(incoming: Incoming, settings: ProviderSettings) -> None:
    if not settings.secret:
        raise Rejected(403, "no signing secret is configured")
    webhook_id = incoming.headers.get("webhook-id", "")[:200]
    timestamp = incoming.headers.get("webhook-timestamp", "")[:40]
    given = incoming.headers.get("webhook-signature", "")[:2000]
    if not webhook_id or not timestamp or not given:
        raise Rejected(401, "the request is not signed")
    check_fresh(unix_time(timestamp), incoming)
    expected = sign(settings.secret, webhook_id, timestamp, incoming.body)
    if not any(equal(expected, candidate) for candidate in given.split()):
        raise Rejected(403, "the signature does not verify")
    if incoming.remember_nonce is not None and not incoming.remember_nonce(
            "generic", webhook_id, int(2 * incoming.max_age)):
        raise Rejected(409, "this webhook-id was delivered before")


def parse(incoming: Incoming, settings: ProviderSettings) -> Parsed:
    verify(incoming, settings)
    doc = load_json(incoming.body)
    events = doc.get("events") if isinstance(doc, dict) else None
    if not isinstance(events, list):
        raise Rejected(400, 'the body is {"events": [...]}')
    if len(events) > MAX_EVENTS:
        raise Rejected(413, "too many events in one request")
    out = []
    for n, event in enumerate(events):
        if not isinstance(event, dict):
            raise Rejected(400, f"events[{n}] is not an object")
        kind, event_id = text(event, "type"), text(event, "id", 200)
        address = normalised_address(text(event, "email"))
        if kind not in TYPES:
            raise Rejected(400, f"events[{n}].type must be one of {', '.join(TYPES)}")
        if not event_id:
            raise Rejected(400, f"events[{n}].id is required")
        if address is None and not text(event, "message_ref") and not text(event, "message_id"):
            raise Rejected(400, f"events[{n}] needs email, message_ref or message_id")
        bounce = text(event, "bounce")
        if kind == "bounce" and bounce not in ("hard", "soft"):
            raise Rejected(400, f'events[{n}].bounce must be "hard" or "soft"')
        out.append(Feedback(provider="generic", kind=kind, event_id=event_id, address=address,
                            message_ref=text(event, "message_ref", 60) or None,
                            message_id=text(event, "message_id", 250) or None, hard=bounce == "hard",
                            status=text(event, "status", 20), detail=scrub(text(event, "detail")),
                            occurred_at=iso_time(text(event, "timestamp"))))
    return Parsed(out)
