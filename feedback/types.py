"""The one value every source of feedback is parsed into, and the refusal every parser raises."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

KINDS = ("bounce", "complaint", "unsubscribe", "delivery", "delay")
# Enhanced status codes (RFC 3463): class.subject.detail; 2 success, 4 persistent transient, 5 permanent.
STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDRESS = re.compile(r"[^\s<>\"'(),;:\[\]]+@([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)")
DETAIL_MAX = 500


@dataclass(frozen=True)
class Feedback:
    """One fact about one message to one address, whatever door it came in by.

    provider: ses, postmark, sendgrid, mailgun, generic, mailbox or smtp (the send loop itself).
    event_id: the provider's own id for this fact, unique per recipient; the idempotency key.
    message_ref: our X-Message-Ref ("<campaign>.<message>"), from headers or a VERP address.
    message_id: our Message-ID header as reported back, with or without angle brackets.
    address: the recipient the report is about (normalised), when the report names one.
    hard: for a bounce, whether it is permanent (5.x.x, "Permanent", "HardBounce", ...).
    ref_needs_address: the ref came from unauthenticated mail (the bounce mailbox), so it only
        counts when the reported address is the one the message went to.
    """

    provider: str
    kind: str
    event_id: str
    address: str | None = None
    message_ref: str | None = None
    message_id: str | None = None
    hard: bool = False
    status: str = ""
    detail: str = ""
    occurred_at: datetime | None = None
    ref_needs_address: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown feedback kind {self.kind!r}")


class Rejected(Exception):
    """The request is refused with a 4xx and changes nothing; `reason` is safe to show and log."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def scrub(text: str | None, limit: int = DETAIL_MAX) -> str:
    """A diagnostic fit to store: addresses masked (they often quote the recipient), control
    characters collapsed, cut to `limit`."""
    if not text:
        return ""
    text = _ADDRESS.sub(lambda m: f"***@{m.group(1)}", str(text))
    return " ".join(text.split())[:limit]


def enhanced_status(*texts: str | None) -> str:
    """The first RFC 3463 enhanced status code in these texts, or ''."""
    for text in texts:
        if text:
            found = STATUS_CODE.search(str(text))
            if found:
                return found.group(0)
    return ""


def is_permanent(status: str, fallback: bool = False) -> bool:
    """5.x.x is a hard bounce, 4.x.x a soft one; without a code, `fallback` decides."""
    if status[:1] == "5":
        return True
    if status[:1] == "4":
        return False
    return fallback


def normalised_address(value) -> str | None:
    """A reported recipient, trimmed, unwrapped from <...> and "rfc822;" and lower-cased, or None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if ";" in value[:12]:
        value = value.split(";", 1)[1].strip()  # "rfc822; ana@example.org" (RFC 3464 2.3.2)
    value = value.strip("<> \t\"'")
    if "@" not in value or len(value) > 320 or any(c.isspace() for c in value):
        return None
    return value.lower()
