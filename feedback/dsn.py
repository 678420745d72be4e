"""Reading bounce mail: delivery status notifications (RFC 3464) and complaint reports (ARF,
RFC 5965), into Feedback values for the bounce mailbox.

- A DSN is multipart/report with a message/delivery-status part (or message/global-delivery-
  status, RFC 6533): per-recipient blocks with Final-Recipient / Original-Recipient, Action,
  Status (an RFC 3463 code) and Diagnostic-Code. Action `failed` is a bounce, hard when the
  status is 5.x.x; `delayed` changes nothing; `delivered`, `relayed` and `expanded` neither.
- Bounces without that part (older Exchange NDRs, Gmail's and Postfix's plain-text notices,
  qmail, ...) are recognised by flufl.bounce's detectors (GNU Mailman's), which name the
  failed addresses and whether each failure is permanent, plus a few patterns of our own; the
  status code is read from the text.
- An ARF report (multipart/report; report-type=feedback-report) is a complaint unless its
  Feedback-Type is not-spam or auth-failure.

Matching (feedback/apply.py): a VERP return path (BOUNCE_ADDRESS with +<campaign>.<message>)
in the report's own headers, else our X-Message-Ref or Message-ID in the returned message or
headers. Anyone can send mail to a bounce mailbox, so a ref found here counts only together with
the address the message went to (Feedback.ref_needs_address); our Message-ID, whose random part
cannot be guessed, counts alone.
"""

from __future__ import annotations

import email
import hashlib
import re
from email import policy
from email.message import Message
from email.parser import HeaderParser

from feedback.types import Feedback, enhanced_status, normalised_address, scrub

_OUR_MESSAGE_ID = re.compile(r"<(\d{1,18}\.\d{1,18}\.[0-9a-f]{12}@[^<>\s]+)>")
_REF_LINE = re.compile(r"^\s*X-Message-Ref:\s*(\d{1,18}\.\d{1,18})\s*$", re.IGNORECASE | re.MULTILINE)
STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
HEADER_TYPES = ("message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers")
ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Return-Path")
NOT_COMPLAINTS = ("not-spam", "auth-failure")
# Plain-text NDRs flufl.bounce's detectors do not know (modern Exchange / Outlook wording).
_EXCHANGE_START = re.compile(r"(Delivery has failed to these recipients or groups|"
                             r"Your message (couldn't|could not|wasn't|was not) (be )?delivered to)", re.IGNORECASE)
_EXCHANGE_END = re.compile(r"Diagnostic information for administrators|Original message|^-{3,}",
                           re.IGNORECASE | re.MULTILINE)
_ANY_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+")


def refs_in_text(text: str) -> tuple[str | None, str | None]:
    """Our X-Message-Ref and our Message-ID (bracket-less) anywhere in a text, e.g. quoted headers."""
    ref = _REF_LINE.search(text or "")
    ours = _OUR_MESSAGE_ID.search(text or "")
    return (ref.group(1) if ref else None), (ours.group(1) if ours else None)


def parse_report(raw: bytes, verp: tuple[str, str] | None = None) -> list[Feedback] | None:
    """Feedback in one mail from the bounce mailbox; [] for a report that asks for nothing (a
    delay, a success), None for mail that is no report at all (left for a person).

    `verp` is (local part, domain) of BOUNCE_ADDRESS when VERP return paths are on."""
    msg = email.message_from_bytes(raw, policy=policy.compat32)
    report_id = (msg.get("Message-ID") or "").strip()[:150] or hashlib.sha256(raw).hexdigest()[:40]
    ref = _verp_ref(msg, verp)
    returned_ref, returned_id = _returned_refs(msg)
    base = {"provider": "mailbox", "message_ref": ref or returned_ref, "message_id": returned_id,
            "ref_needs_address": True}
    report_type = (msg.get_param("report-type") or "").lower() if msg.get_content_type() == "multipart/report" \
        else ""
    feedback_part = next((p for p in msg.walk() if p.get_content_type() == "message/feedback-report"), None)
    if report_type == "feedback-report" or feedback_part is not None:
        return _complaint(feedback_part, report_id, base)
    status_part = next((p for p in msg.walk() if p.get_content_type() in STATUS_TYPES), None)
    if status_part is not None:
        return _dsn(status_part, report_id, base)
    return _heuristic(msg, report_id, base)


def _verp_ref(msg: Message, verp: tuple[str, str] | None) -> str | None:
    if not verp:
        return None
    local, domain = verp
    pattern = re.compile(rf"{re.escape(local)}\+(\d{{1,18}}\.\d{{1,18}})@{re.escape(domain)}", re.IGNORECASE)
    for name in ENVELOPE_HEADERS:
        for value in msg.get_all(name) or []:
            found = pattern.search(str(value))
            if found:
                return found.group(1)
    return None


def _headers_of(part: Message) -> Message | None:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    if isinstance(payload, str):
        return HeaderParser().parsestr(_decoded(part))
    return None


def _returned_refs(msg: Message) -> tuple[str | None, str | None]:
    """Our ref and Message-ID from the returned message or headers; else from any text."""
    for part in msg.walk():
        if part.get_content_type() in HEADER_TYPES:
            headers = _headers_of(part)
            if headers is not None:
                ref = (headers.get("X-Message-Ref") or "").strip() or None
                found = _OUR_MESSAGE_ID.search(str(headers.get("Message-ID") or ""))
                if ref or found:
                    return ref, found.group(1) if found else None
    return refs_in_text(_all_text(msg))


def _decoded(part: Message) -> str:
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    return data.decode(part.get_content_charset() or "utf-8", "replace")


def _all_text(msg: Message) -> str:
    """Every text part (and quoted headers), decoded, for heuristics and the returned headers."""
    out = []
    for part in msg.walk():
        if part.get_content_maintype() == "text" or part.get_content_type() in STATUS_TYPES:
            out.append(_decoded(part) if part.get_content_maintype() == "text" else str(part))
    return "\n".join(out)[:500_000]


def _blocks(part: Message) -> list[Message]:
    """The per-message and per-recipient field blocks of a delivery-status part."""
    payload = part.get_payload()
    if isinstance(payload, list) and all(isinstance(p, Message) for p in payload):
        blocks = list(payload)
        if len(blocks) == 1:  # a global DSN parsed as one message: its "body" holds the rest
            first = blocks[0]
            rest = first.get_payload() if isinstance(first.get_payload(), str) else ""
            return [first, *_blocks_from_text(rest)]
        return blocks
    return _blocks_from_text(_decoded(part))


def _blocks_from_text(text: str) -> list[Message]:
    chunks = re.split(r"\r?\n\s*\r?\n", text.strip())
    return [HeaderParser().parsestr(chunk.strip() + "\n") for chunk in chunks if chunk.strip()]


def _dsn(part: Message, report_id: str, base: dict) -> list[Feedback]:
    out = []
    for block in _blocks(part)[1:] or _blocks(part):
        action = (block.get("Action") or "").strip().lower()
        final = normalised_address(str(block.get("Final-Recipient") or ""))
        original = normalised_address(str(block.get("Original-Recipient") or ""))
        address = original or final
        if address is None or action not in ("failed", "delayed"):
            continue
        diagnostic = " ".join(str(block.get("Diagnostic-Code") or "").split())
        status = enhanced_status(str(block.get("Status") or ""), diagnostic)
        event_id = f"{report_id}:{address}"
        if action == "delayed":
            out.append(Feedback(**base, kind="delay", event_id=event_id, address=address, status=status))
            continue
        out.append(Feedback(**base, kind="bounce", event_id=event_id, address=address,
                            hard=status[:1] != "4", status=status,
                            detail=scrub(diagnostic or f"failed with status {status or 'unknown'}")))
    return out


def _complaint(part: Message | None, report_id: str, base: dict) -> list[Feedback]:
    fields = _blocks(part)[0] if part is not None and _blocks(part) else Message()
    feedback_type = (fields.get("Feedback-Type") or "abuse").strip().lower()
    if feedback_type in NOT_COMPLAINTS:
        return []
    address = normalised_address(str(fields.get("Original-Rcpt-To") or ""))
    return [Feedback(**base, kind="complaint", event_id=f"{report_id}:{address or 'redacted'}",
                     address=address, detail=scrub(f"{feedback_type} report from "
                                                   f"{fields.get('User-Agent') or 'a mailbox provider'}"))]


def _heuristic(msg: Message, report_id: str, base: dict) -> list[Feedback] | None:
    from flufl.bounce import all_failures

    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # noqa: BLE001 - heuristic detectors on hostile mail: treat as not a bounce
        temporary, permanent = frozenset(), frozenset()
    text = _all_text(msg)
    failures = {a.decode("ascii", "replace").lower(): True for a in permanent}
    for address in temporary:
        failures.setdefault(address.decode("ascii", "replace").lower(), False)
    if not failures and _EXCHANGE_START.search(text):
        # The recipients are listed right after the opening sentence, before the diagnostic
        # section and the quoted original headers (which name other addresses).
        after = _EXCHANGE_END.split(text[_EXCHANGE_START.search(text).end():], maxsplit=1)[0][:2000]
        for found in _ANY_ADDRESS.findall(after)[:20]:
            failures.setdefault(found.lower(), True)
    out = []
    for raw_address, permanent_failure in failures.items():
        address = normalised_address(raw_address)
        if address is None:
            continue
        line = next((ln for ln in text.splitlines() if address in ln.lower() and enhanced_status(ln)), "")
        status = enhanced_status(line, text)
        hard = status[:1] == "5" if status[:1] in ("4", "5") else permanent_failure
        detail = line.strip() or next((ln.strip() for ln in text.splitlines() if enhanced_status(ln)), "")
        out.append(Feedback(**base, kind="bounce", event_id=f"{report_id}:{address}", address=address,
                            hard=hard, status=status, detail=scrub(detail or "bounce (plain-text notice)")))
    return out or None
