"""Postmark's Bounce, SpamComplaint, SubscriptionChange and Delivery webhooks.

Postmark signs nothing: its documentation has the webhook URL carry basic-auth credentials
(https://user:password@crm.example.org/hooks/postmark), and admins may add an allow-list of
the IP addresses Postmark publishes for webhooks. Both are checked here.

Postmark's MessageID is its own, not ours; with "include bounce content" the Content field
holds the bounce message, whose returned headers carry our X-Message-Ref and Message-ID.
Otherwise a report is matched by its address.
"""

from __future__ import annotations

import ipaddress

from feedback.providers import Incoming, Parsed, ProviderSettings, equal, iso_time, load_json, text
from feedback.types import Feedback, Rejected, enhanced_status, normalised_address, scrub

# Bounce Type values (Postmark's "Bounce types" reference) and what they are to us.
HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
SOFT = {"Transient", "SoftBounce", "DnsError", "Blocked", "SMTPApiError"}
COMPLAINT = {"SpamComplaint"}


def check_access(incoming: Incoming, settings: ProviderSettings) -> None:
    username, password = settings.options.get("username") or "", settings.secret or ""
    if not username or not password:
        raise Rejected(403, "Postmark credentials are not configured")
    given = incoming.basic_auth
    if given is None or not (equal(given[0], username) & equal(given[1], password)):
        raise Rejected(401, "wrong or missing credentials")
    allowed = settings.options.get("ip_allowlist") or []
    if allowed:
        try:
            client = ipaddress.ip_address(incoming.remote_addr or "")
        except ValueError:
            raise Rejected(403, "the client address is not allowed") from None
        if not any(client in ipaddress.ip_network(net, strict=False) for net in allowed):
            raise Rejected(403, "the client address is not allowed")


def parse(incoming: Incoming, settings: ProviderSettings) -> Parsed:
    check_access(incoming, settings)
    doc = load_json(incoming.body)
    if not isinstance(doc, dict):
        raise Rejected(400, "a Postmark webhook is one JSON object")
    record = text(doc, "RecordType")
    content = text(doc, "Content", limit=200_000)
    ref, message_id = _returned_headers(content)
    base = {"provider": "postmark", "message_ref": ref, "message_id": message_id}
    if record in ("Bounce", "SpamComplaint"):
        address = normalised_address(text(doc, "Email"))
        bounce_type = text(doc, "Type")
        if address is None or not text(doc, "ID"):
            raise Rejected(400, "the record has no Email or ID")
        when = iso_time(text(doc, "BouncedAt"))
        if record == "SpamComplaint" or bounce_type in COMPLAINT:
            return Parsed([Feedback(**base, kind="complaint", event_id=f"bounce:{text(doc, 'ID')}", address=address,
                                    detail=scrub(text(doc, "Details") or "spam complaint"), occurred_at=when)])
        if bounce_type not in HARD | SOFT:
            return Parsed(note=f"{bounce_type or 'unknown'} bounces change nothing")  # auto-replies and the like
        detail = text(doc, "Details") or text(doc, "Description")
        return Parsed([Feedback(**base, kind="bounce", event_id=f"bounce:{text(doc, 'ID')}", address=address,
                                hard=bounce_type in HARD, status=enhanced_status(detail, content),
                                detail=scrub(f"{bounce_type}: {detail}"), occurred_at=when)])
    if record == "SubscriptionChange":
        address = normalised_address(text(doc, "Recipient"))
        if address is None:
            raise Rejected(400, "the record has no Recipient")
        if doc.get("SuppressSending") is not True:
            return Parsed(note="a reactivation in Postmark does not resubscribe anyone here")
        reason, origin = text(doc, "SuppressionReason"), text(doc, "Origin")
        event_id = f"subscription:{text(doc, 'MessageID')}:{address}:{text(doc, 'ChangedAt')}"
        when = iso_time(text(doc, "ChangedAt"))
        if reason == "HardBounce":
            return Parsed([Feedback(**base, kind="bounce", event_id=event_id, address=address, hard=True,
                                    detail="Postmark suppressed the address after a hard bounce", occurred_at=when)])
        if reason == "SpamComplaint":
            return Parsed([Feedback(**base, kind="complaint", event_id=event_id, address=address,
                                    detail="Postmark suppressed the address after a spam complaint",
                                    occurred_at=when)])
        if reason == "ManualSuppression" and origin == "Recipient":
            return Parsed([Feedback(**base, kind="unsubscribe", event_id=event_id, address=address,
                                    detail="unsubscribed through Postmark", occurred_at=when)])
        return Parsed(note="a suppression made by staff in Postmark changes nothing here")
    if record == "Delivery":
        address = normalised_address(text(doc, "Recipient"))
        if address is None:
            raise Rejected(400, "the record has no Recipient")
        return Parsed([Feedback(**base, kind="delivery", event_id=f"delivery:{text(doc, 'MessageID')}:{address}",
                                address=address, occurred_at=iso_time(text(doc, "DeliveredAt")))])
    if record in ("Open", "Click"):
        return Parsed(note="opens and clicks are not feedback")
    raise Rejected(400, "unknown RecordType")


def _returned_headers(content: str) -> tuple[str | None, str | None]:
    """Our X-Message-Ref and Message-ID in a bounce dump, if Postmark included one."""
    if not content:
        return None, None
    from feedback.dsn import refs_in_text

    return refs_in_text(content)

