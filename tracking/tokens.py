"""Tracking tokens: one per message, signed like unsubscribe tokens (campaigns.tokens) with a salt of their own.

The payload is [message id, campaign id, campaign version]: the pixel needs nothing else, and the
redirect finds the link list of that version without reading the message. No address is inside,
and tokens never expire (people open year-old mail); SECRET_KEY_FALLBACKS keep old links working.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from campaigns.tokens import load_signed, signer

SALT = "tracking.message"


@dataclass(frozen=True)
class TrackedMessage:
    message_id: int
    campaign_id: int
    version: int


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31


def make_tracking_token(message_id: int, campaign_id: int, version: int) -> str:
    """Sign the message and its campaign version into a URL-safe token."""
    if not all(_is_id(v) for v in (message_id, campaign_id, version)):
        raise ValueError("not a message, campaign and version")
    return signer(SALT).dumps([message_id, campaign_id, version])


def read_tracking_token(token: object) -> TrackedMessage | None:
    """The message a token was made for, or None for anything tampered, truncated or foreign."""
    payload = load_signed(token, SALT)
    if not isinstance(payload, list) or len(payload) != 3 or not all(_is_id(v) for v in payload):
        return None
    return TrackedMessage(*payload)


def tracking_urls(token: str) -> dict[str, str]:
    """The pixel URL and the click base (append /<index>) for one message's token."""
    base = current_app.config["BASE_URL"].rstrip("/")
    return {"open_url": f"{base}/o/{token}", "click_base": f"{base}/c/{token}"}
