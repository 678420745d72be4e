"""Unsubscribing through a message's link (and undoing it): the rules behind /u/<token>.

One call is one transaction: the consent event, the engagement event and the cancelling of the
supporter's queued messages commit together or not at all. Every call is idempotent, because
mailbox providers retry one-click POSTs and people press buttons twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import exists, text

from crm.extensions import db
from crm.models import ConsentEvent, EngagementEvent, Message, Supporter
from crm.settings import org
from crm.supporters.consent import record_consent
from crm.supporters.suppression import is_suppressed

log = logging.getLogger(__name__)

SOURCES = ("unsubscribe_link", "one_click", "preference_page")
UNDO_SOURCE = "unsubscribe_undo"
# Statuses an unsubscribe withdraws consent from. A bouncing address may recover (mailbox full)
# and staff may resubscribe it, so the person's "stop" is recorded for them too. A complaint is
# already final, and never_subscribed has nothing to withdraw.
WITHDRAWABLE = ("subscribed", "bouncing")

# Outcome states.
SUBSCRIBED = "subscribed"                      # describe: the page offers the button
UNSUBSCRIBED = "unsubscribed"                  # this call unsubscribed them
NOT_SUBSCRIBED = "not_subscribed"              # already unsubscribed (or otherwise not mailed)
RESUBSCRIBED = "resubscribed"                  # the undo worked
ALREADY_SUBSCRIBED = "already_subscribed"      # the undo was already done
UNDO_REFUSED = "undo_refused"                  # something happened since: no undo
ERASED = "erased"                              # the supporter was erased; nothing to do
MISSING = "missing"                            # the message no longer exists


@dataclass(frozen=True)
class Outcome:
    """What an unsubscribe or undo found and did, in terms the page can show."""

    state: str
    address: str = ""  # masked; empty when unknown
    campaign_id: int | None = None
    can_undo: bool = False


def masked_address(email: str | None) -> str:
    """Show just enough of an address for its owner to recognise it: ja***@ex***.org."""
    local, at, domain = (email or "").rpartition("@")
    if not at or not local or not domain:
        return "***"
    name, dot, tld = domain.rpartition(".")
    if not dot:
        name, tld = domain, ""
    # At most two characters of each part, and never more than half of it.
    shown_local = local[:min(2, len(local) // 2)]
    shown_name = name[:min(2, len(name) // 2)]
    return f"{shown_local}***@{shown_name}***{dot}{tld}"


def unsubscribe_wording(address: str) -> str:
    """The confirmation button's text, also kept as the consent event's wording."""
    return f"Unsubscribe {address} from periodic email updates"


UNDO_BUTTON = "Undo: resubscribe me"


def undo_explanation() -> str:
    """The sentence under the undo button."""
    return f"You will receive periodic email updates from {org.current().name} again."


def undo_wording() -> str:
    """The undo button and the sentence under it, kept as the resubscribe event's wording."""
    return f"{UNDO_BUTTON}. {undo_explanation()}"


def describe_unsubscribe(message_id: int) -> Outcome:
    """Where the message's supporter stands, for the confirmation page; changes nothing."""
    message = db.session.get(Message, message_id)
    if message is None:
        return Outcome(MISSING)
    supporter = _supporter_of(message)
    if supporter is None:
        return Outcome(ERASED, campaign_id=message.campaign_id)
    address = masked_address(message.email or supporter.email)
    if supporter.email_status in WITHDRAWABLE:
        return Outcome(SUBSCRIBED, address, message.campaign_id)
    return Outcome(NOT_SUBSCRIBED, address, message.campaign_id, _undo_allowed(supporter, message.campaign_id))


def unsubscribe_by_message(message_id: int, source: str, *, ip: str | None = None,
                           user_agent: str | None = None) -> Outcome:
    """Unsubscribe the supporter a message went to, effective at once for every campaign."""
    if source not in SOURCES:
        raise ValueError(f"unknown unsubscribe source {source!r}")
    message = db.session.get(Message, message_id)
    if message is None:
        log.info("unsubscribe via %s: message %s no longer exists", source, message_id)
        return Outcome(MISSING)
    campaign_id = message.campaign_id
    supporter = _locked_supporter(message)
    if supporter is None:
        log.info("unsubscribe via %s: message %s belongs to an erased supporter", source, message_id)
        return Outcome(ERASED, campaign_id=campaign_id)
    supporter_id = supporter.id
    address = masked_address(message.email or supporter.email)
    changed = supporter.email_status in WITHDRAWABLE
    if changed:
        record_consent(
            supporter, "opt_out", source, campaign_id=campaign_id, ip=_clip(ip, 64),
            user_agent=user_agent, wording=unsubscribe_wording(address) if source != "one_click" else "",
        )
        already_counted = db.session.scalar(db.select(exists().where(
            EngagementEvent.message_id == message_id, EngagementEvent.kind == "unsubscribe")))
        if not already_counted:  # an undo and a second unsubscribe count once per message
            db.session.add(EngagementEvent(message_id=message_id, supporter_id=supporter_id,
                                           campaign_id=campaign_id, kind="unsubscribe"))
    # Effective immediately, also for a campaign sending right now: its batches claim only
    # `queued` rows, so these are skipped. Rows already claimed (`sending`) are caught by the
    # batch's consent re-check just before it sends. Run even when nothing else changed, so a
    # row queued by a race with an earlier unsubscribe is still cancelled.
    cancelled = db.session.execute(
        db.update(Message)
        .where(Message.supporter_id == supporter_id, Message.status == "queued")
        .values(status="suppressed")
        .execution_options(synchronize_session=False)
    ).rowcount
    can_undo = _undo_allowed(supporter, campaign_id)
    db.session.commit()
    log.info("unsubscribe via %s: message %s, supporter %s: %s; %s queued message(s) cancelled",
             source, message_id, supporter_id, "unsubscribed" if changed else "was not subscribed", cancelled)
    return Outcome(UNSUBSCRIBED if changed else NOT_SUBSCRIBED, address, campaign_id, can_undo)


def resubscribe_by_message(message_id: int, *, ip: str | None = None, user_agent: str | None = None) -> Outcome:
    """Undo an unsubscribe made through this message's link, if nothing has happened since."""
    message = db.session.get(Message, message_id)
    if message is None:
        return Outcome(MISSING)
    campaign_id = message.campaign_id
    supporter = _locked_supporter(message)
    if supporter is None:
        return Outcome(ERASED, campaign_id=campaign_id)
    address = masked_address(message.email or supporter.email)
    supporter_id, status = supporter.id, supporter.email_status
    if status == "subscribed":
        db.session.rollback()
        return Outcome(ALREADY_SUBSCRIBED, address, campaign_id)
    if not _undo_allowed(supporter, campaign_id):
        db.session.rollback()
        log.info("undo refused: message %s, supporter %s is %s", message_id, supporter_id, status)
        return Outcome(UNDO_REFUSED, address, campaign_id)
    record_consent(supporter, "resubscribe", UNDO_SOURCE, campaign_id=campaign_id, ip=_clip(ip, 64),
                   user_agent=user_agent, wording=undo_wording())
    db.session.commit()
    log.info("undo: message %s, supporter %s resubscribed", message_id, supporter_id)
    return Outcome(RESUBSCRIBED, address, campaign_id)


def _supporter_of(message: Message) -> Supporter | None:
    """The message's supporter, or None once they were erased (row anonymised or deleted)."""
    if message.supporter_id is None:
        return None
    supporter = db.session.get(Supporter, message.supporter_id)
    if supporter is None or supporter.erased_at is not None:
        return None
    return supporter


def _locked_supporter(message: Message) -> Supporter | None:
    """The message's supporter, freshly read and row-locked until commit; None (nothing locked) if erased.

    The lock makes concurrent unsubscribes of one person (a provider's retried one-click, a double
    press) run one after the other, so the second sees the first's result and adds no duplicate
    events. It is taken with a no-op UPDATE rather than SELECT ... FOR UPDATE because that works
    on both databases: PostgreSQL locks the row; SQLite ignores FOR UPDATE, but a write takes its
    database lock (waiting up to busy_timeout), and reads made after it see the latest commit.
    """
    if message.supporter_id is None:
        return None
    locked = db.session.execute(text("UPDATE supporter SET email_status = email_status WHERE id = :id"),
                                {"id": message.supporter_id}).rowcount
    supporter = db.session.get(Supporter, message.supporter_id, populate_existing=True) if locked else None
    if supporter is None or supporter.erased_at is not None:
        db.session.rollback()
        return None
    return supporter


def _undo_allowed(supporter: Supporter, campaign_id: int) -> bool:
    """Only undo this message's own opt-out, only if it left them unsubscribed and nothing came after.

    The latest consent event must be the opt-out made through this message (its campaign: a
    supporter has one message per campaign) and the one before it a subscription, so an undo
    cannot revive a bounced, complained, erased, suppressed or staff-unsubscribed address.
    """
    if supporter.email_status != "unsubscribed" or supporter.erased_at is not None or not supporter.email:
        return False
    latest = list(db.session.scalars(
        db.select(ConsentEvent).where(ConsentEvent.supporter_id == supporter.id)
        .order_by(ConsentEvent.id.desc()).limit(2)
    ))
    if len(latest) < 2:
        return False
    opt_out, before = latest
    if not (opt_out.action == "opt_out" and opt_out.source in SOURCES
            and opt_out.campaign_id == campaign_id):
        return False
    if before.action not in ("opt_in", "resubscribe"):
        return False
    return not is_suppressed(supporter.email)


def _clip(value: str | None, length: int) -> str | None:
    return value[:length] if value else None
