"""SendGrid's Event Webhook (a JSON array of events per POST), with its Signed Event Webhook.

Authentication (SendGrid "Getting started with the Event Webhook Security Features"): the
header X-Twilio-Email-Event-Webhook-Signature carries a base64 DER ECDSA signature, with
SHA-256 over the X-Twilio-Email-Event-Webhook-Timestamp header followed by the raw body, by
the P-256 key whose public half an admin pastes in (base64 DER, as SendGrid shows it). The
timestamp must be within FEEDBACK_MAX_AGE_SECONDS. Each event's sg_event_id is its id.

smtp-id is the Message-ID the message was sent with: ours, when we send through SendGrid's SMTP
relay. Events: delivered, bounce (type bounce = hard, blocked = soft), dropped (by reason),
deferred (a delay, no change), spamreport, unsubscribe and group_unsubscribe.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from feedback.providers import Incoming, Parsed, ProviderSettings, check_fresh, from_unix, load_json, text, unix_time
from feedback.types import Feedback, Rejected, enhanced_status, normalised_address, scrub

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_EVENTS = 10_000
DROPPED = {"Bounced Address": "bounce", "Spam Reporting Address": "complaint", "Unsubscribed Address": "unsubscribe"}


def load_public_key(value: str) -> ec.EllipticCurvePublicKey:
    """The key as SendGrid shows it (base64 DER), or PEM; ValueError when it is not a P-256 key."""
    value = (value or "").strip()
    try:
        if value.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(value.encode("ascii"))
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(value.split()), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm, UnicodeError):
        raise ValueError("not a public key: paste the verification key SendGrid shows (base64)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("SendGrid's verification key is an ECDSA P-256 key; this is another kind")
    return key


_keys: dict[str, ec.EllipticCurvePublicKey] = {}


def _key(value: str) -> ec.EllipticCurvePublicKey:
    key = _keys.get(value)
    if key is None:
        key = load_public_key(value)
        if len(_keys) > 8:
            _keys.clear()
        _keys[value] = key
    return key


def verify(incoming: Incoming, settings: ProviderSettings) -> None:
    public_key = settings.options.get("public_key") or ""
    if not public_key:
        raise Rejected(403, "no SendGrid verification key is configured")
    signature, timestamp = incoming.headers.get(SIGNATURE, ""), incoming.headers.get(TIMESTAMP, "")
    if not signature or not timestamp:
        raise Rejected(401, "the request is not signed")
    check_fresh(unix_time(timestamp), incoming)
    try:
        raw = base64.b64decode(signature, validate=True)
        _key(public_key).verify(raw, timestamp.encode("utf-8") + incoming.body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature, UnicodeError):
        raise Rejected(403, "the signature does not verify") from None


def parse(incoming: Incoming, settings: ProviderSettings) -> Parsed:
    verify(incoming, settings)
    events = load_json(incoming.body)
    if not isinstance(events, list):
        raise Rejected(400, "the Event Webhook posts a JSON array")
    if len(events) > MAX_EVENTS:
        raise Rejected(413, "too many events in one request")
    out = []
    for event in events:
        fb = _event(event)
        if fb is not None:
            out.append(fb)
    return Parsed(out)


def _event(event) -> Feedback | None:
    if not isinstance(event, dict):
        raise Rejected(400, "every event is a JSON object")
    kind = text(event, "event")
    address = normalised_address(text(event, "email"))
    if address is None:
        return None
    event_id = text(event, "sg_event_id", 200) or hashlib.sha256(
        json.dumps(event, sort_keys=True, default=str).encode()).hexdigest()
    base = {"provider": "sendgrid", "event_id": event_id, "address": address,
            "message_id": text(event, "smtp-id", 250) or None,
            "message_ref": text(event, "message_ref", 60) or None,  # if sent with it as a custom arg
            "occurred_at": from_unix(event.get("timestamp"))}
    reason = text(event, "reason") or text(event, "response")
    if kind == "delivered":
        return Feedback(**base, kind="delivery")
    if kind == "bounce":
        hard = text(event, "type") != "blocked"
        return Feedback(**base, kind="bounce", hard=hard,
                        status=(text(event, "status") or enhanced_status(reason))[:20],
                        detail=scrub(f"{text(event, 'type') or 'bounce'}: {reason}"))
    if kind == "dropped":
        effect = DROPPED.get(text(event, "reason"))
        if effect == "bounce":
            return Feedback(**base, kind="bounce", hard=True, status=text(event, "status")[:20],
                            detail="SendGrid dropped it: a previously bounced address")
        if effect:
            return Feedback(**base, kind=effect, detail=scrub(f"SendGrid dropped it: {reason}"))
        return None
    if kind == "deferred":
        return Feedback(**base, kind="delay", detail=scrub(reason))
    if kind == "spamreport":
        return Feedback(**base, kind="complaint", detail="spam report")
    if kind in ("unsubscribe", "group_unsubscribe"):
        return Feedback(**base, kind="unsubscribe", detail="unsubscribed through SendGrid")
    return None  # processed, open, click, group_resubscribe: not feedback
