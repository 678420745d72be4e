"""Double opt-in: a signer of a petition that asks for it is subscribed only once they click the emailed link.

At signing (crm.petitions.signing), a signer who is not subscribed yet and agreed to updates
gets a signature_confirmation row instead of their consent event: it keeps the consent action
the signature would have recorded and the wording version they saw. The signature itself is
recorded and counted at once. A worker sends the confirmation mail at once (MJML from the
template library, through the campaigns' SMTP transport and global send rate). Clicking the
link shows a page with one button; pressing it (POST) records the consent event, pointing at
that wording, and makes them `subscribed`. GET alone changes nothing, because link scanners
and mail previewers fetch every URL in a message, which would confirm for people who never
asked.

Rules: re-signing while pending sends the mail again only if the last one went more than an
hour ago (RESEND_AFTER), claimed with one conditional UPDATE so concurrent re-signs send one;
one reminder after SIGN_CONFIRM_REMINDER_HOURS; the request lapses after SIGN_CONFIRM_EXPIRY_DAYS
(the signature stays); confirming twice is harmless (the second finds it confirmed).

The same machinery asks a complainer (ask_after_complaint). Someone who reported our mail as
spam comes back only by a fresh explicit opt-in: implied consent does not bring them back, and
a consent box shown only to complainers would tell anyone typing an address that its owner
complained. So when a complainer signs an implied-consent petition (whatever its double
opt-in switch), the signature is recorded, they stay `complained`, the public pages answer as
for anyone, and the owner of the address gets one mail (a row with after_complaint) asking
whether they want updates again; only pressing its button resubscribes them, lifting the
complaint's suppression entry, with a consent event whose reason says so (AFTER_COMPLAINT_REASON).
At most one such request is pending per person (signing more petitions within the hour sends
nothing more; after it, the pending one is sent again), and no reminder follows it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from functools import lru_cache

from flask import current_app
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy import or_, update

from campaigns.compose import compile_mjml, html_to_text
from campaigns.tokens import load_signed, signer
from crm import ROOT
from crm.extensions import db
from crm.models import Petition, Signature, SignatureConfirmation, Supporter
from crm.queues import SEND_CONFIRMATION, queue
from crm.supporters.consent import record_consent
from crm.supporters.suppression import lift_for_fresh_opt_in

log = logging.getLogger(__name__)

SALT = "petitions.confirm-link"
TEMPLATE_PATH = ROOT / "templates" / "email" / "petition_confirmation.mjml"
RESEND_AFTER = timedelta(hours=1)
SOURCE_REASON = "confirmed by email (double opt-in)"
AFTER_COMPLAINT_REASON = ("fresh explicit opt-in, confirmed by email, after a spam complaint "
                          "(asked after signing an implied-consent petition)")

CONFIRMED, ALREADY, EXPIRED, MISSING, PENDING = "confirmed", "already_confirmed", "expired", "missing", "pending"

_env = SandboxedEnvironment(autoescape=True)
_text_env = SandboxedEnvironment(autoescape=False)


def _now() -> datetime:
    return datetime.now(UTC)


def make_confirm_token(confirmation_id: int) -> str:
    return signer(SALT).dumps(confirmation_id)


def read_confirm_token(token: str) -> int | None:
    """The confirmation id a token was made for, or None for anything tampered or foreign."""
    payload = load_signed(token, SALT)
    if isinstance(payload, bool) or not isinstance(payload, int) or not 0 < payload < 2**31:
        return None
    return payload


def confirm_url(confirmation_id: int) -> str:
    return current_app.config["BASE_URL"].rstrip("/") + "/confirm/" + make_confirm_token(confirmation_id)


# -- at signing ------------------------------------------------------------------------------

def defer_consent(signature: Signature, supporter: Supporter, action: str, reason: str, wording,
                  ip: str | None, user_agent: str | None, *, after_complaint: bool = False) -> SignatureConfirmation:
    """Keep the consent the signature would record until the signer confirms (in the caller's transaction)."""
    pending = SignatureConfirmation(
        signature_id=signature.id, petition_id=signature.petition_id, supporter_id=supporter.id,
        consent_action=action, reason=reason, wording_id=wording.id, wording_version=wording.version,
        wording=wording.text, ip=(ip or "")[:64] or None, user_agent=(user_agent or "")[:400] or None,
        created_at=_now(), sent_at=_now(), send_count=1, after_complaint=after_complaint)
    db.session.add(pending)
    return pending


def ask_after_complaint(signature: Signature, supporter: Supporter, wording, ip: str | None,
                        user_agent: str | None) -> int | None:
    """A complainer signed an implied-consent petition: the id of the confirmation to mail now, or None.

    In the caller's transaction. Their pending request, if any, is reused (mailed again only when
    the last mail went more than RESEND_AFTER ago, claimed by one conditional UPDATE); a lapsed
    one, or none, makes a new request for this signature."""
    now = _now()
    pending = db.session.scalars(db.select(SignatureConfirmation).where(
        SignatureConfirmation.supporter_id == supporter.id, SignatureConfirmation.after_complaint.is_(True),
        SignatureConfirmation.confirmed_at.is_(None), SignatureConfirmation.expired_at.is_(None))
        .order_by(SignatureConfirmation.id.desc()).limit(1)).first()
    if pending is not None and not _expired(pending.created_at):
        claimed = db.session.execute(
            update(SignatureConfirmation)
            .where(SignatureConfirmation.id == pending.id, SignatureConfirmation.confirmed_at.is_(None),
                   or_(SignatureConfirmation.sent_at.is_(None), SignatureConfirmation.sent_at < now - RESEND_AFTER))
            .values(sent_at=now, send_count=SignatureConfirmation.send_count + 1)
            .execution_options(synchronize_session=False)).rowcount
        return pending.id if claimed else None
    db.session.flush()  # the signature's id
    asked = defer_consent(signature, supporter, "resubscribe", AFTER_COMPLAINT_REASON, wording, ip, user_agent,
                          after_complaint=True)
    db.session.flush()
    return asked.id


def enqueue_mail(confirmation_id: int, reminder: bool = False) -> None:
    """Have a worker send the confirmation mail now (after the caller's commit)."""
    queue("mail").enqueue(SEND_CONFIRMATION, confirmation_id, reminder, result_ttl=3600, failure_ttl=7 * 24 * 3600)


def resend_on_resign(petition_id: int, supporter_id: int) -> bool:
    """A pending signer signed again: send the mail again unless one went within the hour; True if queued.

    A request that lapsed starts afresh (a new expiry, a reminder again), as its page promised.
    """
    now = _now()
    found = db.session.execute(db.select(SignatureConfirmation.id, SignatureConfirmation.expired_at).join(
        Signature, Signature.id == SignatureConfirmation.signature_id).where(
        Signature.petition_id == petition_id, Signature.supporter_id == supporter_id,
        SignatureConfirmation.confirmed_at.is_(None))).first()
    if found is None:
        return False
    pending_id = found.id
    if found.expired_at is not None or _expired(db.session.get(SignatureConfirmation, pending_id).created_at):
        claim = (update(SignatureConfirmation)
                 .where(SignatureConfirmation.id == pending_id, SignatureConfirmation.confirmed_at.is_(None))
                 .values(created_at=now, expired_at=None, reminded_at=None, sent_at=now,
                         send_count=SignatureConfirmation.send_count + 1))
    else:
        # Claimed by one conditional UPDATE: of two re-signs at the same moment, one sends.
        claim = (update(SignatureConfirmation)
                 .where(SignatureConfirmation.id == pending_id, SignatureConfirmation.confirmed_at.is_(None),
                        SignatureConfirmation.expired_at.is_(None),
                        or_(SignatureConfirmation.sent_at.is_(None),
                            SignatureConfirmation.sent_at < now - RESEND_AFTER))
                 .values(sent_at=now, send_count=SignatureConfirmation.send_count + 1))
    claimed = db.session.execute(claim.execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    if claimed:
        enqueue_mail(pending_id)
    return bool(claimed)


# -- the mail --------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _compiled(source: str) -> tuple:
    html = compile_mjml(source)
    return _env.from_string(html), _text_env.from_string(html_to_text(html))


def compose_mail(confirmation: SignatureConfirmation, reminder: bool = False) -> EmailMessage:
    """The confirmation mail for one pending signer, from templates/email/petition_confirmation.mjml."""
    from crm.settings import org

    settings = org.current()
    petition = db.session.get(Petition, confirmation.petition_id)
    supporter = db.session.get(Supporter, confirmation.supporter_id)
    html_template, text_template = _compiled(TEMPLATE_PATH.read_text(encoding="utf-8"))
    context = {"org": settings.as_context(), "petition": {"title": petition.title},
               "supporter": {"first_name": supporter.first_name}, "confirm_url": confirm_url(confirmation.id),
               "wording": confirmation.wording, "reminder": reminder, "after_complaint": confirmation.after_complaint,
               "expiry_days": int(current_app.config["SIGN_CONFIRM_EXPIRY_DAYS"])}
    msg = EmailMessage()
    msg["From"] = formataddr((settings.name, settings.mail_from))
    msg["To"] = supporter.email
    subject = (f"Would you like email updates from {settings.name} again?" if confirmation.after_complaint
               else f"Please confirm: email updates from {settings.name}")
    msg["Subject"] = f"Reminder: {subject[0].lower()}{subject[1:]}" if reminder else subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=settings.mail_from.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to this
    msg.set_content(text_template.render(context))
    msg.add_alternative(html_template.render(context), subtype="html")
    return msg


def send_mail(confirmation_id: int, reminder: bool = False) -> bool:
    """Send the mail if the confirmation is still pending; False when there is nothing to send."""
    from campaigns.throttle import SendRate
    from campaigns.transport import SMTPTransport
    from crm.redis_conn import get_redis
    from crm.settings import org

    confirmation = db.session.get(SignatureConfirmation, confirmation_id)
    if confirmation is None or confirmation.confirmed_at or confirmation.expired_at:
        return False
    supporter = db.session.get(Supporter, confirmation.supporter_id)
    if supporter is None or not supporter.email or supporter.erased_at is not None:
        return False
    msg = compose_mail(confirmation, reminder)
    db.session.commit()  # hold no transaction open while waiting for the rate or the relay
    app = current_app._get_current_object()
    # The campaigns' global rate: a burst of signers shares the relay's allowance with any campaign.
    SendRate(get_redis(), float(app.config["SEND_RATE_PER_SECOND"])).acquire(1)
    with SMTPTransport.for_app(app) as transport:
        transport.send(org.current().mail_from, [supporter.email], msg.as_string())
    log.info("double opt-in: %s for confirmation %s sent", "reminder" if reminder else "mail", confirmation_id)
    return True


# -- the click -------------------------------------------------------------------------------

@dataclass(frozen=True)
class State:
    state: str
    petition_title: str = ""
    after_complaint: bool = False  # the page asks whether they want updates again


def describe(confirmation_id: int) -> State:
    """Where a confirmation stands, for the page the link opens; changes nothing."""
    confirmation = db.session.get(SignatureConfirmation, confirmation_id)
    if confirmation is None:
        return State(MISSING)
    title = db.session.scalar(db.select(Petition.title).where(Petition.id == confirmation.petition_id)) or ""
    if confirmation.confirmed_at is not None:
        return State(ALREADY, title, confirmation.after_complaint)
    if confirmation.expired_at is not None or _expired(confirmation.created_at):
        return State(EXPIRED, title, confirmation.after_complaint)
    return State(PENDING, title, confirmation.after_complaint)


def confirm(confirmation_id: int, *, ip: str | None = None, user_agent: str | None = None) -> State:
    """Subscribe the signer with a consent event pointing at the signature's wording; idempotent."""
    confirmation = db.session.get(SignatureConfirmation, confirmation_id)
    if confirmation is None:
        return State(MISSING)
    title = db.session.scalar(db.select(Petition.title).where(Petition.id == confirmation.petition_id)) or ""
    if confirmation.expired_at is None and _expired(confirmation.created_at):
        return State(EXPIRED, title)
    now = _now()
    # The compare-and-set that makes a double press (or two tabs) confirm once.
    moved = db.session.execute(
        update(SignatureConfirmation)
        .where(SignatureConfirmation.id == confirmation_id, SignatureConfirmation.confirmed_at.is_(None),
               SignatureConfirmation.expired_at.is_(None))
        .values(confirmed_at=now).execution_options(synchronize_session=False)).rowcount
    if not moved:
        db.session.rollback()
        return describe(confirmation_id)
    supporter = db.session.get(Supporter, confirmation.supporter_id)
    if supporter is None or supporter.erased_at is not None or not supporter.email:
        db.session.rollback()
        return State(MISSING)
    slug = db.session.scalar(db.select(Petition.slug).where(Petition.id == confirmation.petition_id)) or ""
    reason = SOURCE_REASON
    if confirmation.after_complaint:
        # The person's own explicit answer: the one thing that lifts a complaint's entry.
        lift_for_fresh_opt_in(supporter.email, ("complained",))
        reason = AFTER_COMPLAINT_REASON
    # Their status may have changed since signing: whatever it is, this click is a fresh opt-in.
    action = "opt_in" if supporter.email_status in ("never_subscribed", "subscribed") else "resubscribe"
    record_consent(supporter, action, f"petition:{slug}"[:120], wording=confirmation.wording,
                   wording_version=confirmation.wording_version, wording_id=confirmation.wording_id,
                   reason=reason, ip=(ip or "")[:64] or None, user_agent=user_agent)
    db.session.commit()
    log.info("double opt-in: confirmation %s confirmed, supporter %s subscribed", confirmation_id, supporter.id)
    return State(CONFIRMED, title, confirmation.after_complaint)


def _expired(created_at: datetime) -> bool:
    created = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    return created < _now() - timedelta(days=int(current_app.config["SIGN_CONFIRM_EXPIRY_DAYS"]))


# -- reminders and expiry (periodic) -----------------------------------------------------------

def remind_and_expire(now: datetime | None = None) -> dict[str, int]:
    """Lapse requests older than the expiry; queue the one reminder for those due; returns the counts."""
    now = now or _now()
    config = current_app.config
    expiry = now - timedelta(days=int(config["SIGN_CONFIRM_EXPIRY_DAYS"]))
    pending = (SignatureConfirmation.confirmed_at.is_(None), SignatureConfirmation.expired_at.is_(None))
    expired = db.session.execute(
        update(SignatureConfirmation).where(*pending, SignatureConfirmation.created_at < expiry)
        .values(expired_at=now).execution_options(synchronize_session=False)).rowcount
    due_before = now - timedelta(hours=float(config["SIGN_CONFIRM_REMINDER_HOURS"]))
    # A complainer's question is asked once: no reminder.
    due = db.session.scalars(db.select(SignatureConfirmation.id).where(
        *pending, SignatureConfirmation.reminded_at.is_(None), SignatureConfirmation.created_at < due_before,
        SignatureConfirmation.after_complaint.is_(False))
        .order_by(SignatureConfirmation.id).limit(1000)).all()
    reminded = []
    for confirmation_id in due:
        # reminded_at is the guard: however many workers run this, one reminder each.
        if db.session.execute(
                update(SignatureConfirmation)
                .where(SignatureConfirmation.id == confirmation_id, SignatureConfirmation.reminded_at.is_(None),
                       *pending)
                .values(reminded_at=now, sent_at=now, send_count=SignatureConfirmation.send_count + 1)
                .execution_options(synchronize_session=False)).rowcount:
            reminded.append(confirmation_id)
    db.session.commit()
    for confirmation_id in reminded:
        enqueue_mail(confirmation_id, reminder=True)
    return {"expired": expired, "reminded": len(reminded)}


@dataclass(frozen=True)
class PendingSigner:
    supporter_id: int
    email: str
    signed_at: datetime
    sent_at: datetime | None
    reminded_at: datetime | None
    expires_at: datetime


def pending_signers(petition_id: int, limit: int = 100) -> tuple[list[PendingSigner], int]:
    """The newest unconfirmed signers of a petition (for its page) and how many there are."""
    days = timedelta(days=int(current_app.config["SIGN_CONFIRM_EXPIRY_DAYS"]))
    where = (SignatureConfirmation.petition_id == petition_id, SignatureConfirmation.confirmed_at.is_(None),
             SignatureConfirmation.expired_at.is_(None))
    total = db.session.scalar(db.select(db.func.count()).select_from(SignatureConfirmation).where(*where)) or 0
    rows = db.session.execute(
        db.select(SignatureConfirmation.supporter_id, Supporter.email, SignatureConfirmation.created_at,
                  SignatureConfirmation.sent_at, SignatureConfirmation.reminded_at)
        .join(Supporter, Supporter.id == SignatureConfirmation.supporter_id).where(*where)
        .order_by(SignatureConfirmation.created_at.desc()).limit(limit)).all()
    return [PendingSigner(r.supporter_id, r.email or "", r.created_at, r.sent_at, r.reminded_at,
                          r.created_at + days) for r in rows], total
