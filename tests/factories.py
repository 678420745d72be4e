"""Row factories with sequences for unique values: make_supporter(email=..., **overrides)."""

from __future__ import annotations

import itertools

from crm.extensions import db
from crm.models import Petition, Signature, StaffUser, Supporter
from crm.supporters.consent import record_consent

PASSWORD = "correct-horse-battery"
_seq = itertools.count(1)


def make_staff(role: str = "organizer", email: str | None = None, password: str = PASSWORD,
               **overrides) -> StaffUser:
    n = next(_seq)
    values = {"email": email or f"{role}{n}@staff.example.org", "name": f"{role.title()} {n}",
              "role": role, "active": True, **overrides}
    user = StaffUser(**values)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


def make_supporter(email: str | None = None, subscribed: bool = True, **overrides) -> Supporter:
    n = next(_seq)
    values = {"email": email or f"supporter{n}@example.net", "first_name": f"First{n}",
              "last_name": f"Last{n}", **overrides}
    supporter = Supporter(**values)
    db.session.add(supporter)
    if subscribed:
        record_consent(supporter, "opt_in", "test", wording="Test wording")
    db.session.commit()
    return supporter


def make_petition(**overrides) -> Petition:
    n = next(_seq)
    values = {"slug": f"petition-{n}", "title": f"Petition {n}", "status": "open",
              "consent_wording": "By signing this petition you will receive periodic email updates."}
    values.update(overrides)
    petition = Petition(**values)
    db.session.add(petition)
    db.session.commit()
    return petition


def make_signature(petition: Petition, supporter: Supporter, **overrides) -> Signature:
    signature = Signature(petition=petition, supporter=supporter, **overrides)
    db.session.add(signature)
    db.session.commit()
    return signature
