"""Signing a person up without a petition (the API's person_signup_helper), by the public form's rules.

The rules are those of crm.petitions.signing, used from there rather than written again: the
address is deduplicated, blanks are filled and nothing known is overwritten, a complainer is
never resubscribed by implied consent, a bounce entry on the suppression list is lifted by a
fresh opt-in while a staff entry stays, and an erased address is not stored again.
"""

from __future__ import annotations

from dataclasses import dataclass

from crm.database import commit_retrying_once
from crm.emails import normalise_email
from crm.extensions import db
from crm.models import Supporter
from crm.petitions.signing import (
    EVENT_SOURCE_MAX,
    SUPPORTER_SOURCE_MAX,
    _consent_action,
    _fill_empty_fields,
    _lift_suppression,
)
from crm.supporters.consent import record_consent
from crm.supporters.suppression import entry_for


@dataclass(frozen=True)
class SignupResult:
    supporter_id: int | None  # None: the address asked to be forgotten, so nothing was stored
    created: bool
    consent_event_id: int | None


def sign_up(profile: dict, *, source: str, wants_updates: bool, wording: str = "", ip: str | None = None,
            user_agent: str | None = None) -> SignupResult:
    """Find or create the supporter for profile["email"], fill their blanks, record consent; commit.

    profile keys: email, first_name, last_name, postal_code, country. `wants_updates`: they
    agreed to email updates with `wording`, which is then recorded (as implied consent: a
    complainer stays complained). Raises crm.emails.InvalidEmail. A concurrent twin hits the
    unique address; we roll back and try once more, when its row is visible.
    """
    email = normalise_email(profile.get("email", ""))
    return commit_retrying_once(lambda: _sign_up(email, profile, source, wants_updates, wording, ip, user_agent))


def _sign_up(email: str, profile: dict, source: str, wants_updates: bool, wording: str, ip: str | None,
             user_agent: str | None) -> SignupResult:
    listed = entry_for(email)
    if listed is not None and listed.email is None:
        return SignupResult(None, False, None)  # erased on request: store nothing about them
    supporter = db.session.scalar(db.select(Supporter).where(Supporter.email == email))
    created = supporter is None
    if created:
        supporter = Supporter(email=email, source=source[:SUPPORTER_SOURCE_MAX], email_status="never_subscribed")
        db.session.add(supporter)
    _fill_empty_fields(supporter, profile)
    db.session.flush()
    event = None
    action = _consent_action(supporter.email_status, ticked=False) if wants_updates else None
    reason = ""
    if action and listed is not None:
        action, reason = _lift_suppression(email, listed.reason, ticked=False)
    if action:
        event = record_consent(supporter, action, source[:EVENT_SOURCE_MAX], wording=wording, ip=ip,
                               user_agent=user_agent, reason=reason)
        db.session.flush()
    return SignupResult(supporter.id, created, event.id if event is not None else None)
