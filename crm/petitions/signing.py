"""Recording a public signature: the supporter, the signature and the consent proof, together."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from crm.emails import normalise_email
from crm.extensions import db
from crm.models import ConsentEvent, Petition, Signature, Supporter
from crm.petitions.service import wording_shown
from crm.supporters.consent import record_consent
from crm.supporters.suppression import is_suppressed

log = logging.getLogger(__name__)

PROFILE_FIELDS = ("first_name", "last_name", "postal_code", "country")
FIELD_LIMITS = {"first_name": 100, "last_name": 100, "postal_code": 20, "country": 2}


@dataclass(frozen=True)
class SignResult:
    """What happened: `already_signed` when this supporter had signed before."""

    signature_id: int | None
    supporter_id: int | None
    already_signed: bool = False
    consent_event: ConsentEvent | None = None


def record_signature(petition: Petition, form_data: dict, ip: str | None,
                     user_agent: str | None) -> SignResult:
    """Sign `petition` for the address in `form_data`, in one transaction; commit.

    form_data keys: email, first_name, last_name, postal_code, country, comment,
    consent (bool, checkbox mode), wording_version (the version the form showed, optional).
    Raises crm.emails.InvalidEmail for a bad address. Signing twice records nothing new.
    A concurrent duplicate (same address, same moment) hits a unique constraint; we roll
    back and try once more, when the other request's rows are visible, so it is never a 500.
    """
    email = normalise_email(form_data.get("email", ""))
    for attempt in (1, 2):
        try:
            result = _sign(petition, email, form_data, ip, user_agent)
            db.session.commit()
            return result
        except IntegrityError:
            db.session.rollback()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _sign(petition: Petition, email: str, form_data: dict, ip: str | None,
          user_agent: str | None) -> SignResult:
    source = f"petition:{petition.slug}"
    comment = (form_data.get("comment") or "").strip()
    signature_source = (form_data.get("source") or "web")[:120]

    if is_suppressed(email):
        # The address asked to be forgotten: count the signature, store nothing about them.
        signature = Signature(petition_id=petition.id, supporter_id=None, source=signature_source)
        db.session.add(signature)
        db.session.flush()
        log.info("petition %s: signature from a suppressed address recorded anonymously", petition.slug)
        return SignResult(signature_id=signature.id, supporter_id=None)

    supporter = db.session.scalar(db.select(Supporter).where(Supporter.email == email))
    if supporter is None:
        supporter = Supporter(email=email, source=source, email_status="never_subscribed")
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
                          comment=comment[:5000], source=signature_source)
    db.session.add(signature)

    wording = wording_shown(petition, form_data.get("wording_version"))
    wants_updates = wording.mode == "implied" or bool(form_data.get("consent"))
    event = None
    action = _consent_action(supporter.email_status) if wants_updates else None
    if action:
        event = record_consent(supporter, action, source, wording=wording.text,
                               wording_version=wording.version, wording_id=wording.id,
                               ip=ip, user_agent=user_agent)
    db.session.flush()
    return SignResult(signature_id=signature.id, supporter_id=supporter.id, consent_event=event)


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


def _fill_empty_fields(supporter: Supporter, form_data: dict) -> None:
    """Fill blanks from the form; never overwrite what we know with nothing (or anything)."""
    for name in PROFILE_FIELDS:
        value = (form_data.get(name) or "").strip()[: FIELD_LIMITS[name]]
        if name == "country":
            value = value.upper()
        if value and not getattr(supporter, name):
            setattr(supporter, name, value)

