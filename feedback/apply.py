"""apply_feedback(): the one service that acts on a bounce, complaint, unsubscribe or delivery.

Whatever door a fact came in by (a relay's webhook, by way of the intake a worker applies in
batches: feedback/intake.py; the bounce mailbox; the send loop's own "user unknown" reply), it
arrives here as a Feedback value and is applied in one transaction:

1. It is matched to a message we sent: by our X-Message-Ref (also carried in VERP return paths),
   else by our Message-ID (checked against the one we recorded, whose random part cannot be
   guessed), else, for authenticated webhooks only, by the address's latest message. A report
   about an address we never mailed is recorded as `unmatched`, logged and ignored.
2. The feedback_event row is inserted with ON CONFLICT DO NOTHING on (provider, event id): if it
   was there already (a provider retrying, the mailbox read twice) nothing else happens.
3. The rules (README, "Bounces and complaints"):
   - a hard bounce makes the address `bouncing` (a consent event, source bounce:<provider>) and
     puts it on the suppression list; soft bounces are counted per address, and N of them within
     D days (feedback_rules: 3 in 30 by default) count as a hard bounce;
   - a complaint makes the supporter `complained` (source complaint:<provider>) whatever they
     were, and suppresses the address for good;
   - an unsubscribe reported by the relay is an opt-out (source unsubscribe:<provider>);
   - the message row records the bounce or complaint (bounced_at, bounce_type, complained_at),
     an engagement event is added, and the person's queued messages in every campaign are
     skipped; a campaign sending right now hears of it through record_consent's announcement.
4. After a complaint, a sending campaign whose own complaint rate passed COMPLAINT_PAUSE_RATE
   (0.3%) after COMPLAINT_PAUSE_MIN_DELIVERIES (1,000) is paused.

A delivery only stamps message.delivered_at (one UPDATE, idempotent by itself).
"""

from __future__ import annotations

import functools
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, func, insert, select, text, update

from crm import events
from crm.database import upsert_insert
from crm.emails import mask_email
from crm.extensions import db
from crm.models import EngagementEvent, FeedbackEvent, FeedbackRules, Message, Supporter, utcnow
from crm.supporters.consent import record_consent
from crm.supporters.suppression import email_hash, suppress
from feedback.types import Feedback

log = logging.getLogger(__name__)

SENT_STATUSES = ("sent", "bounced", "unknown")  # a message that may have reached someone
_REF = re.compile(r"^\s*(\d{1,18})\.(\d{1,18})\s*$")
# Our Message-IDs: <message id>.<campaign id>.<12 random hex>@<sending domain> (campaigns/mime.py).
_OUR_MESSAGE_ID = re.compile(r"^<?(\d{1,18})\.(\d{1,18})\.[0-9a-f]{12}@[^<>\s]+>?$")
ADDRESS_MATCH_DAYS = 90  # an address-only report is matched to its latest message this recent
RULES_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Applied:
    """What apply_feedback did: outcome is applied, duplicate, unmatched, ignored or delivered."""

    outcome: str
    message_id: int | None = None
    campaign_id: int | None = None
    status_changed: bool = False


@dataclass(frozen=True)
class _Match:
    message_id: int
    campaign_id: int
    supporter_id: int | None
    address: str | None  # the address the report is about (or the message went to)


def parse_ref(ref: str | None) -> tuple[int, int] | None:
    """(campaign id, message id) from an X-Message-Ref value, or None."""
    found = _REF.match(ref or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def _message_rows(condition) -> list:
    return db.session.execute(
        select(Message.id, Message.campaign_id, Message.supporter_id, Message.email, Message.status,
               Message.smtp_message_id).where(condition)).all()


@dataclass
class Batch:
    """What a worker's batch of feedback shares (feedback/intake.py), to spend fewer round trips
    without changing a rule: the messages its refs and Message-IDs name, read in one query, and
    its engagement events, inserted in one statement before the batch's commit. Both are safe to
    share: a message's matching columns (campaign, supporter, address, status for sent ones,
    Message-ID) do not change while feedback is applied, and nothing in the batch reads
    engagement_event back."""

    messages: dict[int, object] = field(default_factory=dict)
    looked_up: set[int] = field(default_factory=set)
    engagement: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, feedback: list[Feedback]) -> Batch:
        ids = set()
        for fb in feedback:
            ref = parse_ref(fb.message_ref)
            if ref is not None and ref[1] < 2**62:
                ids.add(ref[1])
            ours = _OUR_MESSAGE_ID.match((fb.message_id or "").strip())
            if ours and int(ours.group(1)) < 2**62:
                ids.add(int(ours.group(1)))
        batch = cls(looked_up=ids)
        if ids:
            batch.messages = {row.id: row for row in _message_rows(Message.id.in_(sorted(ids)))}
        return batch

    def rows(self, message_id: int) -> list:
        if message_id in self.looked_up:
            found = self.messages.get(message_id)
            return [found] if found is not None else []
        return _message_rows(Message.id == message_id)

    def write(self) -> None:
        """Insert the batch's engagement events (in the caller's transaction)."""
        if self.engagement:
            db.session.execute(insert(EngagementEvent.__table__), self.engagement)
            self.engagement = []


def match_message(fb: Feedback, batch: Batch | None = None) -> _Match | None:
    """The message this feedback is about, or None (see the module docstring for the order)."""
    address = fb.address.lower() if fb.address else None
    rows_of = batch.rows if batch is not None else (lambda message_id: _message_rows(Message.id == message_id))

    def accept(row, needs_address: bool) -> _Match | None:
        if row.status not in SENT_STATUSES:
            return None  # never sent: nothing real can have bounced
        sent_to = (row.email or "").lower() or None
        if needs_address and (address is None or address != sent_to):
            return None
        return _Match(row.id, row.campaign_id, row.supporter_id, address or sent_to)

    ref = parse_ref(fb.message_ref)
    if ref is not None and ref[1] < 2**62:
        for row in rows_of(ref[1]):
            if row.campaign_id == ref[0]:
                found = accept(row, fb.ref_needs_address)
                if found:
                    return found
    if fb.message_id:
        ours = _OUR_MESSAGE_ID.match(fb.message_id.strip())
        if ours and int(ours.group(1)) < 2**62:
            wanted = fb.message_id.strip().strip("<>")
            for row in rows_of(int(ours.group(1))):
                if (row.smtp_message_id or "").strip("<>") == wanted:
                    found = accept(row, False)
                    if found:
                        return found
    if address and fb.provider != "mailbox":
        # Relays that rewrite our headers (SES without "include original headers", Postmark):
        # the address's most recent message, served by ix_message_supporter_status_sent.
        supporter_id = db.session.scalar(select(Supporter.id).where(Supporter.email == address))
        if supporter_id is not None:
            since = utcnow() - timedelta(days=ADDRESS_MATCH_DAYS)
            row = db.session.execute(
                select(Message.id, Message.campaign_id, Message.supporter_id, Message.email, Message.status,
                       Message.smtp_message_id)
                .where(Message.supporter_id == supporter_id, Message.status.in_(("sent", "unknown")),
                       Message.sent_at >= since)
                .order_by(Message.sent_at.desc()).limit(1)).first()
            if row is not None:
                return accept(row, False)
    return None


_EVENT_COLUMNS = ("provider", "event_id", "kind", "hard", "status", "detail", "outcome", "message_id", "campaign_id",
                  "supporter_id", "address_hash", "occurred_at", "created_at")


@functools.cache
def _record_event_statement(dialect: str):
    """The INSERT ... ON CONFLICT DO NOTHING RETURNING id, built once per process: building it per
    event (values, coercion, its cache key) was a fifth of a worker's time per event."""
    table = FeedbackEvent.__table__  # Core, not the ORM's bulk-insert path
    return (upsert_insert(dialect)(table).values({name: bindparam(name) for name in _EVENT_COLUMNS})
            .on_conflict_do_nothing(index_elements=["provider", "event_id"]).returning(table.c.id))


def _record_event(fb: Feedback, match: _Match | None, address: str | None) -> int | None:
    """Insert the feedback_event row; None if this (provider, event id) was recorded before."""
    return db.session.execute(_record_event_statement(db.engine.dialect.name), {
        "provider": fb.provider, "event_id": fb.event_id[:200], "kind": fb.kind, "hard": fb.hard,
        "status": fb.status[:20], "detail": fb.detail[:2000], "outcome": "applied" if match else "unmatched",
        "message_id": match.message_id if match else None, "campaign_id": match.campaign_id if match else None,
        "supporter_id": match.supporter_id if match else None,
        "address_hash": email_hash(address) if address else "", "occurred_at": fb.occurred_at,
        "created_at": utcnow()}).scalar()


_rules_cache: tuple[float, int, int] | None = None


def soft_bounce_rule() -> tuple[int, int]:
    """(limit, days): this many soft bounces within that many days make an address bouncing."""
    global _rules_cache
    now = time.monotonic()
    if _rules_cache is None or now - _rules_cache[0] > RULES_CACHE_SECONDS:
        rules = db.session.get(FeedbackRules, 1)
        _rules_cache = (now, rules.soft_bounce_limit if rules else 3, rules.soft_bounce_days if rules else 30)
    return _rules_cache[1], _rules_cache[2]


def forget_cached_rules() -> None:
    global _rules_cache
    _rules_cache = None


def _soft_bounces(address: str, days: int) -> int:
    """Distinct messages to this address that soft-bounced within `days` (this one included):
    a relay reporting the same deferral twice does not count twice."""
    return db.session.scalar(
        select(func.count(func.distinct(FeedbackEvent.message_id)))
        .where(FeedbackEvent.address_hash == email_hash(address), FeedbackEvent.kind == "bounce",
               FeedbackEvent.hard.is_(False), FeedbackEvent.outcome == "applied",
               FeedbackEvent.created_at >= utcnow() - timedelta(days=days))) or 0


def _locked_supporter(supporter_id: int | None) -> Supporter | None:
    """The supporter, read afresh and row-locked until commit (a no-op UPDATE, as in
    campaigns/optout.py), so two reports about one person apply one after the other."""
    if supporter_id is None:
        return None
    if db.engine.dialect.name == "postgresql":  # one statement: SELECT ... FOR UPDATE
        supporter = db.session.get(Supporter, supporter_id, with_for_update=True, populate_existing=True)
    else:  # SQLite ignores FOR UPDATE; a write takes its database lock
        locked = db.session.execute(text("UPDATE supporter SET email_status = email_status WHERE id = :id"),
                                    {"id": supporter_id}).rowcount
        supporter = db.session.get(Supporter, supporter_id, populate_existing=True) if locked else None
    return supporter if supporter is not None and supporter.erased_at is None else None


def _skip_queued(supporter_id: int | None) -> None:
    """Their queued messages in every campaign are skipped (as an unsubscribe does); served by
    ix_message_supporter_status_sent."""
    if supporter_id is not None:
        db.session.execute(update(Message).where(Message.supporter_id == supporter_id, Message.status == "queued")
                           .values(status="suppressed", error="address bounced or complained")
                           .execution_options(synchronize_session=False))


def apply_feedback(fb: Feedback, *, commit: bool = True, batch: Batch | None = None) -> Applied:
    """Apply one piece of feedback (see the module docstring); commits unless `commit` is False.

    Within a worker's batch (`batch`, with `commit` False), the caller calls batch.write() before its commit."""
    if fb.kind == "delivery":
        return _record_delivery(fb, commit)
    if fb.kind == "delay":
        return Applied("ignored")
    match = match_message(fb, batch)
    address = (match.address if match else None) or fb.address
    if _record_event(fb, match, address) is None:
        if commit:
            db.session.commit()
        return Applied("duplicate", match.message_id if match else None, match.campaign_id if match else None)
    if match is None:
        log.info("feedback %s %s from %s matches no message we sent (%s); ignored", fb.kind, fb.event_id[:60],
                 fb.provider, mask_email(address or ""))
        if commit:
            db.session.commit()
        return Applied("unmatched")
    changed = _apply_effects(fb, match, address, batch)
    if commit:
        db.session.commit()
        if fb.kind == "complaint":
            check_complaint_rate(match.campaign_id)
    return Applied("applied", match.message_id, match.campaign_id, changed)


def _apply_effects(fb: Feedback, match: _Match, address: str | None, batch: Batch | None) -> bool:
    now = utcnow()
    supporter = _locked_supporter(match.supporter_id)
    # Act on the person only while the address that bounced is still theirs.
    same_address = supporter is not None and address is not None and supporter.email == address
    changed = False
    if fb.kind == "bounce":
        db.session.execute(
            update(Message).where(Message.id == match.message_id)
            .values(bounced_at=func.coalesce(Message.bounced_at, now),
                    bounce_type="hard" if fb.hard else func.coalesce(Message.bounce_type, "soft"))
            .execution_options(synchronize_session=False))
        hard, reason = fb.hard, fb.detail
        if not hard and address:
            limit, days = soft_bounce_rule()
            if _soft_bounces(address, days) >= limit:
                hard, reason = True, f"{limit} soft bounces within {days} days; the last: {fb.detail}"[:2000]
        if hard:
            if same_address and supporter.email_status == "subscribed":
                record_consent(supporter, "bounce", f"bounce:{fb.provider}", reason=reason,
                               campaign_id=match.campaign_id)
                changed = True
            if address:
                suppress(address, "bounced", detail=reason, source=f"bounce:{fb.provider}",
                         campaign_id=match.campaign_id, supporter_ids=_ids(supporter, same_address))
            _skip_queued(match.supporter_id if same_address else None)
        _engagement(match, "bounce", batch)
        events.emit("supporter.bounced", {"supporter_id": match.supporter_id if same_address else None,
                                          "message_id": match.message_id, "campaign_id": match.campaign_id,
                                          "hard": hard, "provider": fb.provider})
    elif fb.kind == "complaint":
        db.session.execute(update(Message).where(Message.id == match.message_id)
                           .values(complained_at=func.coalesce(Message.complained_at, now))
                           .execution_options(synchronize_session=False))
        if same_address and supporter.email_status != "complained":
            record_consent(supporter, "complaint", f"complaint:{fb.provider}", reason=fb.detail,
                           campaign_id=match.campaign_id)
            changed = True
        if address:
            suppress(address, "complained", detail=fb.detail, source=f"complaint:{fb.provider}",
                     campaign_id=match.campaign_id, supporter_ids=_ids(supporter, same_address))
        _skip_queued(match.supporter_id if same_address else None)
        _engagement(match, "complaint", batch)
        events.emit("supporter.complained", {"supporter_id": match.supporter_id if same_address else None,
                                             "message_id": match.message_id, "campaign_id": match.campaign_id,
                                             "provider": fb.provider})
    elif fb.kind == "unsubscribe":
        if same_address and supporter.email_status in ("subscribed", "bouncing"):
            record_consent(supporter, "opt_out", f"unsubscribe:{fb.provider}", reason=fb.detail,
                           campaign_id=match.campaign_id)
            _engagement(match, "unsubscribe", batch)
            _skip_queued(match.supporter_id)
            changed = True
    return changed


def _ids(supporter: Supporter | None, same_address: bool) -> list[int] | None:
    """The supporter whose address it is, if we know them; None makes suppress() look it up."""
    return [supporter.id] if same_address else None


def _engagement(match: _Match, kind: str, batch: Batch | None) -> None:
    values = {"message_id": match.message_id, "supporter_id": match.supporter_id,
              "campaign_id": match.campaign_id, "kind": kind}
    if batch is None:
        db.session.add(EngagementEvent(**values))
    else:
        batch.engagement.append({**values, "created_at": utcnow()})


def relaxed_commit() -> None:
    """Let this transaction's commit return before PostgreSQL flushes it to disk.

    Only for transactions that record deliveries alone: a server crash could lose the last
    fraction of a second of them, which changes no one's consent (the provider's report is
    a courtesy), and not waiting for the flush is most of a delivery's cost."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("SET LOCAL synchronous_commit TO OFF"))


def _record_delivery(fb: Feedback, commit: bool) -> Applied:
    """Stamp delivered_at once; by ref in one UPDATE, else after matching."""
    if commit:
        relaxed_commit()
    ref = parse_ref(fb.message_ref)
    moved = 0
    message_id = campaign_id = None
    if ref is not None and ref[1] < 2**62 and not fb.ref_needs_address:
        campaign_id, message_id = ref
        moved = db.session.execute(
            update(Message).where(Message.id == message_id, Message.campaign_id == campaign_id,
                                  Message.status.in_(SENT_STATUSES), Message.delivered_at.is_(None))
            .values(delivered_at=fb.occurred_at or utcnow()).execution_options(synchronize_session=False)).rowcount
    if not moved:
        match = match_message(fb)
        if match is None:
            if commit:
                db.session.commit()
            return Applied("unmatched")
        message_id, campaign_id = match.message_id, match.campaign_id
        moved = db.session.execute(
            update(Message).where(Message.id == message_id, Message.delivered_at.is_(None))
            .values(delivered_at=fb.occurred_at or utcnow()).execution_options(synchronize_session=False)).rowcount
    if commit:
        db.session.commit()
    return Applied("delivered" if moved else "duplicate", message_id, campaign_id)


# -- the automatic pause ---------------------------------------------------------------------

def complaint_counts(campaign_id: int) -> tuple[int, int]:
    """(complaints, messages accepted by the relay) for one campaign."""
    complaints = db.session.scalar(
        select(func.count(func.distinct(FeedbackEvent.message_id)))
        .where(FeedbackEvent.campaign_id == campaign_id, FeedbackEvent.kind == "complaint",
               FeedbackEvent.outcome == "applied")) or 0
    sent = db.session.scalar(select(func.count()).select_from(Message)
                             .where(Message.campaign_id == campaign_id, Message.status == "sent")) or 0
    return complaints, sent


def check_complaint_rate(campaign_id: int) -> bool:
    """Pause a sending campaign whose own complaint rate passed the limit; True if it paused."""
    from campaigns.pipeline import pause
    from crm.models import Campaign

    status = db.session.scalar(select(Campaign.status).where(Campaign.id == campaign_id))
    if status != "sending":
        return False
    config = current_app.config
    complaints, sent = complaint_counts(campaign_id)
    limit, minimum = float(config["COMPLAINT_PAUSE_RATE"]), int(config["COMPLAINT_PAUSE_MIN_DELIVERIES"])
    if sent < minimum or complaints <= limit * sent:
        return False
    return pause(campaign_id, (
        f"Paused automatically: {complaints} spam complaints for {sent:,} messages sent "
        f"({complaints / sent:.2%}), over the {limit:.1%} that Gmail and Yahoo enforce. Check the "
        "segment and the content before resuming."))


def split_deliveries(feedback: list[Feedback]) -> tuple[list[dict], list[Feedback]]:
    """(deliveries that name their message, for record_deliveries; everything else): most of what
    relays report is deliveries, which need no match and no durable commit."""
    deliveries, rest = [], []
    for fb in feedback:
        key = _delivery_key(fb) if fb.kind == "delivery" else None
        if key is None:
            rest.append(fb)
        else:
            deliveries.append(key)
    return deliveries, rest


def _delivery_key(fb: Feedback) -> dict | None:
    """How to find a delivery's message without a query: our ref, or our Message-ID."""
    at = fb.occurred_at or utcnow()
    ref = parse_ref(fb.message_ref)
    if ref is not None and ref[1] < 2**62 and not fb.ref_needs_address:
        return {"mid": ref[1], "cid": ref[0], "smtp": None, "at": at}
    ours = _OUR_MESSAGE_ID.match((fb.message_id or "").strip())
    if ours and int(ours.group(1)) < 2**62:
        return {"mid": int(ours.group(1)), "cid": None, "smtp": f"<{fb.message_id.strip().strip('<>')}>", "at": at}
    return None


_DELIVERED = """UPDATE message SET delivered_at = :at {relaxed_from}
WHERE message.id = :mid AND message.delivered_at IS NULL AND message.status IN ('sent', 'bounced', 'unknown')
  AND (CAST(:cid AS BIGINT) IS NULL OR message.campaign_id = CAST(:cid AS BIGINT))
  AND (CAST(:smtp AS TEXT) IS NULL OR message.smtp_message_id = CAST(:smtp AS TEXT))"""
# PostgreSQL: one autocommit statement per delivery (psycopg pipelines executemany), whose
# own transaction turns synchronous_commit off (set_config(..., is_local => true) in a CTE the
# UPDATE reads): the commit does not wait for the disk, and no BEGIN/COMMIT round trips. A
# server crash could lose the last fraction of a second of deliveries, which change no consent.
_DELIVERED_PG = text("WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true) AS s)\n"
                     + _DELIVERED.format(relaxed_from="FROM relaxed"))
_DELIVERED_SQLITE = text(_DELIVERED.format(relaxed_from=""))


def record_deliveries(keys: list[dict]) -> None:
    """Stamp delivered_at on these messages (those not stamped yet); idempotent."""
    if not keys:
        return
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(_DELIVERED_PG, keys)
    else:
        db.session.execute(_DELIVERED_SQLITE, keys)
