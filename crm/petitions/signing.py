"""Recording a public signature: the supporter, the signature and the consent proof, together.

A new address on PostgreSQL -- most signers of a busy petition -- is recorded by one
statement (crm.petitions.queries.SIGN_NEW_SUPPORTER). Everything else goes through the ORM
below, in the same transaction: a known supporter (fill blanks, one signature per
petition, the resubscribe rules), a suppressed address, and every signature on SQLite.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from crm.database import is_postgres
from crm.emails import normalise_email
from crm.extensions import db
from crm.models import STATUS_AFTER, Signature, Supporter, utcnow
from crm.petitions import queries
from crm.petitions.service import PublicPetition, Wording, wording_for_form
from crm.supporters.consent import record_consent
from crm.supporters.suppression import email_hash, is_suppressed

log = logging.getLogger(__name__)

PROFILE_FIELDS = ("first_name", "last_name", "postal_code", "country")
FIELD_LIMITS = {"first_name": 100, "last_name": 100, "postal_code": 20, "country": 2}
# Column widths of supporter.source, consent_event.source, signature.source/comment and
# consent_event.user_agent: a long slug or header is cut, never a database error.
SUPPORTER_SOURCE_MAX, EVENT_SOURCE_MAX, SIGNATURE_SOURCE_MAX = 100, 120, 120
COMMENT_MAX, USER_AGENT_MAX = 5000, 400


@dataclass(frozen=True)
class SignResult:
    """What happened: `already_signed` when this supporter had signed before."""

    signature_id: int | None
    supporter_id: int | None
    already_signed: bool = False
    consent_event_id: int | None = None


def record_signature(petition: PublicPetition, form_data: dict, ip: str | None,
                     user_agent: str | None) -> SignResult:
    """Sign `petition` for the address in `form_data`, in one transaction; commit.

    form_data keys: email, first_name, last_name, postal_code, country, comment,
    consent (bool, checkbox mode), wording_version (the version the form showed, optional),
    source (web or embed). Raises crm.emails.InvalidEmail for a bad address. Signing twice
    records nothing new. A concurrent duplicate (same address, same moment) hits a unique
    constraint; we roll back and try once more, when the other request's rows are visible,
    so it is never a 500.
    """
    email = normalise_email(form_data.get("email", ""))
    wording = wording_for_form(petition, form_data.get("wording_version"))
    fast = is_postgres()
    for attempt in (1, 2):
        try:
            result = _sign_new_supporter(petition, email, wording, form_data, ip, user_agent) if fast else None
            if result is None:
                result = _sign(petition, email, wording, form_data, ip, user_agent)
            db.session.commit()
            return result
        except IntegrityError:
            db.session.rollback()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _wants_updates(wording: Wording, form_data: dict) -> bool:
    return wording.mode == "implied" or bool(form_data.get("consent"))


def _sign_new_supporter(petition: PublicPetition, email: str, wording: Wording, form_data: dict,
                        ip: str | None, user_agent: str | None) -> SignResult | None:
    """Record a new, unsuppressed address in one statement; None when the address is not new."""
    wants_updates = _wants_updates(wording, form_data)
    source = f"petition:{petition.slug}"
    row = db.session.connection().execute(queries.SIGN_NEW_SUPPORTER, {
        "email": email, "email_hash": email_hash(email), **_profile_values(form_data),
        "email_status": STATUS_AFTER["opt_in"] if wants_updates else "never_subscribed",
        "supporter_source": source[:SUPPORTER_SOURCE_MAX], "now": utcnow(),
        "petition_id": petition.id, "comment": _comment(form_data),
        "signature_source": _signature_source(form_data),
        "wants_updates": wants_updates, "event_source": source[:EVENT_SOURCE_MAX],
        "wording": wording.text, "wording_version": wording.version, "wording_id": wording.id,
        "ip": ip, "user_agent": (user_agent or "")[:USER_AGENT_MAX] or None,
    }).one()
    if row.supporter_id is None:
        return None  # known or suppressed: nothing was written
    return SignResult(signature_id=row.signature_id, supporter_id=row.supporter_id,
                      consent_event_id=row.consent_event_id)


def _sign(petition: PublicPetition, email: str, wording: Wording, form_data: dict, ip: str | None,
          user_agent: str | None) -> SignResult:
    source = f"petition:{petition.slug}"

    if is_suppressed(email):
        # The address asked to be forgotten: count the signature, store nothing about them.
        signature = Signature(petition_id=petition.id, supporter_id=None,
                              source=_signature_source(form_data))
        db.session.add(signature)
        db.session.flush()
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
                          comment=_comment(form_data), source=_signature_source(form_data))
    db.session.add(signature)

    event = None
    action = _consent_action(supporter.email_status) if _wants_updates(wording, form_data) else None
    if action:
        event = record_consent(supporter, action, source[:EVENT_SOURCE_MAX], wording=wording.text,
                               wording_version=wording.version, wording_id=wording.id,
                               ip=ip, user_agent=user_agent)
    db.session.flush()
    return SignResult(signature_id=signature.id, supporter_id=supporter.id,
                      consent_event_id=event.id if event is not None else None)


def _consent_action(email_status: str) -> str | None:
    """Which consent event a signer who agreed to updates gets, given their current status.

    A repeat opt-in by a subscribed supporter is still recorded: it proves consent to this
    petition's wording. Complained supporters are never resubscribed by a form (they told
    their mailbox provider we were spam); bouncing ones are, as they just typed the address.
    """
    return {
        "never_subscribed": "opt_in",
        "subscribed": "opt_in",
        "unsubscribed": "resubscribe",
        "bouncing": "resubscribe",
    }.get(email_status)


def _profile_values(form_data: dict) -> dict[str, str]:
    """The profile fields as stored: trimmed, cut to the column width, country upper-cased."""
    values = {}
    for name in PROFILE_FIELDS:
        value = (form_data.get(name) or "").strip()[: FIELD_LIMITS[name]]
        values[name] = value.upper() if name == "country" else value
    return values


def _comment(form_data: dict) -> str:
    return (form_data.get("comment") or "").strip()[:COMMENT_MAX]


def _signature_source(form_data: dict) -> str:
    return (form_data.get("source") or "web")[:SIGNATURE_SOURCE_MAX]


def _fill_empty_fields(supporter: Supporter, form_data: dict) -> None:
    """Fill blanks from the form; never overwrite what we know with nothing (or anything)."""
    for name, value in _profile_values(form_data).items():
        if value and not getattr(supporter, name):
            setattr(supporter, name, value)
