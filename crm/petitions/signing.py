"""Recording a public signature: the supporter, the signature and the consent proof, together.

A new address on PostgreSQL -- most signers of a busy petition -- is recorded by one
statement in autocommit (crm.petitions.queries.SIGN_NEW_SUPPORTER), which also checks that
the petition is open, reads the wording version the form showed and stores the outbound
events (the API runs it in its own transaction instead, to commit its audit row with it).
Everything else goes through the ORM below, in one transaction, on a petition read afresh: a
known supporter (fill blanks, one signature per petition, the resubscribe rules), a suppressed
address, a wording version with no stored row, and every signature on SQLite.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from crm import events
from crm.database import commit_retrying_once, is_postgres
from crm.emails import normalise_email
from crm.extensions import db
from crm.models import STATUS_AFTER, Signature, Supporter, utcnow
from crm.petitions import confirmation, queries
from crm.petitions.service import PublicPetition, Wording, find_public, form_version, wording_for_form
from crm.supporters.consent import record_consent
from crm.supporters.suppression import email_hash, entry_for, lift_for_fresh_opt_in

log = logging.getLogger(__name__)

PROFILE_FIELDS = ("first_name", "last_name", "postal_code", "country")
FIELD_LIMITS = {"first_name": 100, "last_name": 100, "postal_code": 20, "country": 2}
# Column widths of supporter.source, consent_event.source, signature.source/comment and
# consent_event.user_agent: a long slug or header is cut, never a database error.
SUPPORTER_SOURCE_MAX, EVENT_SOURCE_MAX, SIGNATURE_SOURCE_MAX = 100, 120, 120
COMMENT_MAX, USER_AGENT_MAX = 5000, 400


class PetitionNotOpen(Exception):
    """The petition is closed, archived, a draft or gone: nothing was recorded."""


@dataclass(frozen=True)
class SignResult:
    """What happened: `already_signed` when this supporter had signed before."""

    signature_id: int | None
    supporter_id: int | None
    already_signed: bool = False
    consent_event_id: int | None = None
    confirmation_id: int | None = None  # double opt-in: the consent waits for the emailed link


def record_signature(petition: PublicPetition, form_data: dict, ip: str | None,
                     user_agent: str | None, *, then: Callable[[SignResult], None] | None = None) -> SignResult:
    """Sign `petition` for the address in `form_data`, in one transaction; commit.

    form_data keys: email, first_name, last_name, postal_code, country, comment,
    consent (bool, checkbox mode), wording_version (the version the form showed, optional),
    source (web or embed), consent_source (the consent event's, default petition:<slug>).
    `then(result)`, if given, runs in the same transaction before its one commit (the API's
    tags and audit row). Raises crm.emails.InvalidEmail for a bad address, PetitionNotOpen
    when the petition no longer takes signatures (`petition` may be a cached copy: the database
    decides). Signing twice records nothing new. A concurrent duplicate (same address, same
    moment) hits a unique constraint; we roll back and try once more, when the other request's
    rows are visible, so it is never a 500.
    """
    email = normalise_email(form_data.get("email", ""))
    if is_postgres():  # a double opt-in petition always takes the ORM path (the statement checks)
        result = _sign_new_supporter(petition, email, form_data, ip, user_agent, in_session=then is not None)
        if result is not None:
            if then is not None:
                then(result)
                db.session.commit()
            return result
    fresh = find_public(petition.slug)
    if fresh is None or fresh.id != petition.id or fresh.status != "open":
        db.session.rollback()
        raise PetitionNotOpen(petition.slug)
    petition = fresh
    wording = wording_for_form(petition, form_data.get("wording_version"))

    def work() -> SignResult:
        signed = _sign(petition, email, wording, form_data, ip, user_agent)
        if then is not None:
            then(signed)
        return signed

    result = commit_retrying_once(work)
    if result.confirmation_id is not None:
        confirmation.enqueue_mail(result.confirmation_id)
    elif result.already_signed and result.supporter_id is not None and (
            petition.double_opt_in or petition.consent_mode == "implied"):
        # Implied consent too: a complainer's pending question (crm.petitions.confirmation).
        confirmation.resend_on_resign(petition.id, result.supporter_id)
    return result


def _emit_signed(petition: PublicPetition, signature: Signature, supporter: Supporter | None) -> None:
    """Store the new signature's event for outbound webhooks, in the signature's transaction."""
    events.emit("signature.created", {"signature_id": signature, "petition_id": petition.id,
                                      "petition_slug": petition.slug, "supporter_id": supporter})


def _sign_new_supporter(petition: PublicPetition, email: str, form_data: dict, ip: str | None,
                        user_agent: str | None, in_session: bool = False) -> SignResult | None:
    """Record a new, unsuppressed address in one statement; None when the ORM path must decide.

    None: the address is known or suppressed, or the form's version is not stored (a
    legacy petition's current one, say). A form without a usable version gets the current
    wording. Raises PetitionNotOpen when the database says the petition takes no signatures.
    `in_session`: run it in the session's transaction, for the caller to add to and commit.
    """
    source = f"petition:{petition.slug}"
    wanted = events.wanted_types()
    params = {
        "email": email, "email_hash": email_hash(email), **_profile_values(form_data),
        "consent_ticked": bool(form_data.get("consent")), "subscribed": STATUS_AFTER["opt_in"],
        "supporter_source": source[:SUPPORTER_SOURCE_MAX], "now": utcnow(),
        "petition_id": petition.id, "petition_slug": petition.slug, "comment": _comment(form_data),
        "signature_source": _signature_source(form_data), **origin(form_data),
        "event_source": _event_source(form_data, source),
        "wording_version": form_version(form_data.get("wording_version")),
        "ip": ip, "user_agent": (user_agent or "")[:USER_AGENT_MAX] or None,
        "event_signature": events.is_wanted("signature.created", wanted),
        "event_subscribed": events.is_wanted("supporter.subscribed", wanted),
    }
    if in_session:
        # In the caller's transaction, so what it adds commits with the signature: one commit.
        conn = db.session.connection()
        row = conn.exec_driver_sql(_driver_sql(conn.dialect), params).one()
    else:
        # Its own pooled connection in autocommit: the statement is atomic alone, and this
        # spares the BEGIN and COMMIT round trips of the request's session. Sent as the driver's
        # SQL, compiled once: about 30 us less per signature than executing the text() construct.
        with db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            row = conn.exec_driver_sql(_driver_sql(conn.dialect), params).one()
    if row.supporter_id is not None:
        if row.events_stored:
            if in_session:
                events.wake_after_commit()
            else:
                events.wake()
        return SignResult(signature_id=row.signature_id, supporter_id=row.supporter_id,
                          consent_event_id=row.consent_event_id)
    if not row.petition_open:
        if in_session:
            db.session.rollback()
        raise PetitionNotOpen(petition.slug)
    return None  # known, suppressed, or a version that is not stored: the ORM path decides


@lru_cache(maxsize=4)
def _driver_sql(dialect) -> str:
    return str(queries.SIGN_NEW_SUPPORTER.compile(dialect=dialect))


def _wants_updates(wording: Wording, form_data: dict) -> bool:
    return wording.mode == "implied" or bool(form_data.get("consent"))


def _sign(petition: PublicPetition, email: str, wording: Wording, form_data: dict, ip: str | None,
          user_agent: str | None) -> SignResult:
    source = f"petition:{petition.slug}"

    listed = entry_for(email)
    if listed is not None and listed.email is None:
        # The address asked to be forgotten: count the signature, store nothing about them.
        signature = Signature(petition_id=petition.id, supporter_id=None,
                              source=_signature_source(form_data), **origin(form_data))
        db.session.add(signature)
        db.session.flush()
        _emit_signed(petition, signature, None)
        log.info("petition %s: signature from a suppressed address recorded anonymously", petition.slug)
        return SignResult(signature_id=signature.id, supporter_id=None)

    supporter = db.session.scalar(db.select(Supporter).where(Supporter.email == email))
    if supporter is None:
        supporter = Supporter(email=email, source=source[:SUPPORTER_SOURCE_MAX],
                              email_status="never_subscribed")
        db.session.add(supporter)
    _fill_empty_fields(supporter, form_data)
    db.session.flush()  # a racing twin fails here on the unique email

    existing = db.session.scalar(db.select(Signature.id).where(
        Signature.petition_id == petition.id, Signature.supporter_id == supporter.id))
    if existing is not None:
        supporter_id = supporter.id
        db.session.rollback()  # signing twice changes nothing, not even empty fields
        return SignResult(signature_id=existing, supporter_id=supporter_id, already_signed=True)

    signature = Signature(petition_id=petition.id, supporter_id=supporter.id,
                          comment=_comment(form_data), source=_signature_source(form_data), **origin(form_data))
    db.session.add(signature)
    _emit_signed(petition, signature, supporter)

    event = None
    ticked = wording.mode == "checkbox" and bool(form_data.get("consent"))
    action = _consent_action(supporter.email_status, ticked) if _wants_updates(wording, form_data) else None
    reason = ""
    if action and listed is not None:
        action, reason = _lift_suppression(email, listed.reason, ticked)
    pending_id = None
    if action and petition.double_opt_in and supporter.email_status != "subscribed" and listed is None:
        db.session.flush()  # the signature's id
        pending = confirmation.defer_consent(signature, supporter, action, reason, wording, ip, user_agent)
        db.session.flush()
        pending_id = pending.id
    elif action:
        event = record_consent(supporter, action, _event_source(form_data, source), wording=wording.text,
                               wording_version=wording.version, wording_id=wording.id,
                               ip=ip, user_agent=user_agent, reason=reason)
    elif wording.mode == "implied" and _complained(supporter, listed):
        # Implied consent never brings a complainer back, and the page must not show that it
        # did not: the owner of the address is asked by mail instead (crm.petitions.confirmation).
        pending_id = confirmation.ask_after_complaint(signature, supporter, wording, ip, user_agent)
    db.session.flush()
    return SignResult(signature_id=signature.id, supporter_id=supporter.id,
                      consent_event_id=event.id if event is not None else None, confirmation_id=pending_id)


def _complained(supporter: Supporter, listed) -> bool:
    """Whether the address is held back by a spam complaint (its suppression entry says so, or
    with no entry, the supporter's status)."""
    return listed.reason == "complained" if listed is not None else supporter.email_status == "complained"


def _consent_action(email_status: str, ticked: bool) -> str | None:
    """Which consent event a signer who agreed to updates gets, given their current status.

    A repeat opt-in by a subscribed supporter is still recorded: it proves consent to this
    petition's wording. Bouncing supporters are resubscribed, as they just typed the address.
    Complained supporters told their mailbox provider we were spam: only a fresh, explicit
    opt-in brings them back, the consent box ticked on a checkbox-mode petition; implied
    consent never does.
    """
    if email_status == "complained":
        return "resubscribe" if ticked else None
    return {
        "never_subscribed": "opt_in",
        "subscribed": "opt_in",
        "unsubscribed": "resubscribe",
        "bouncing": "resubscribe",
    }.get(email_status)


def _lift_suppression(email: str, reason: str, ticked: bool) -> tuple[str | None, str]:
    """A signer on the suppression list who opted in afresh: (consent action, its reason).

    Their own fresh opt-in lifts a bounce entry, and a complaint entry only with the box
    ticked; an entry staff added stays, and the signature subscribes no one."""
    if reason == "bounced":
        lift_for_fresh_opt_in(email, ("bounced",))
        return "resubscribe", "opted in afresh on a petition after the address had bounced"
    if reason == "complained" and ticked:
        lift_for_fresh_opt_in(email, ("complained",))
        return "resubscribe", "fresh explicit opt-in (consent box ticked) after a spam complaint"
    return None, ""


def _profile_values(form_data: dict) -> dict[str, str]:
    """The profile fields as stored: trimmed, cut to the column width, country upper-cased."""
    values = {}
    for name in PROFILE_FIELDS:
        value = (form_data.get(name) or "").strip()[: FIELD_LIMITS[name]]
        values[name] = value.upper() if name == "country" else value
    return values


def _comment(form_data: dict) -> str:
    return (form_data.get("comment") or "").strip()[:COMMENT_MAX]


def _event_source(form_data: dict, source: str) -> str:
    """The consent event's source: `petition:<slug>`, or the door's own (`api:<key label>`)."""
    return (form_data.get("consent_source") or source)[:EVENT_SOURCE_MAX]


def _signature_source(form_data: dict) -> str:
    return (form_data.get("source") or "web")[:SIGNATURE_SOURCE_MAX]


UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign")


def origin(form_data: dict) -> dict[str, str]:
    """Where the signer came from, as the signature stores it: utm parameters and the referring host.

    form_data may carry them itself (`utm_source`, ..., `referrer_host`, as the view reads them
    from the page the form was posted from); each is trimmed and cut to its column's width."""
    values = {name: str(form_data.get(name) or "").strip()[:SIGNATURE_SOURCE_MAX] for name in UTM_FIELDS}
    values["referrer_host"] = str(form_data.get("referrer_host") or "").strip().lower()[:255]
    return values


def _fill_empty_fields(supporter: Supporter, form_data: dict) -> None:
    """Fill blanks from the form; never overwrite what we know with nothing (or anything)."""
    for name, value in _profile_values(form_data).items():
        if value and not getattr(supporter, name):
            setattr(supporter, name, value)
