"""The suppression list: addresses that must never be mailed or resubscribed by staff or imports.

Every entry is found by the SHA-256 of the normalised address. Bounced, complained and
staff-added entries also keep the address so staff can read it; an erased supporter's entry
keeps the hash only. Why each entry is there (`reason`) decides what can lift it:

- bounced: staff may remove it (with a reason); the person signing a petition with an opt-in
  lifts it themselves (crm/petitions/signing.py);
- complained: never removed by staff or an import; only the person ticking a petition's consent
  box brings them back;
- staff: staff may remove it;
- erased: staff may remove it; a signature from the address is counted anonymously.

Checked at snapshot and at send time (campaigns/queries.py: mailable()), by imports, by staff
resubscribes and by the unsubscribe undo.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

from sqlalchemy import bindparam, case, exists, func, or_

from crm import audit
from crm.database import upsert_insert
from crm.emails import InvalidEmail, normalise_email
from crm.extensions import db
from crm.models import Supporter, Suppression, utcnow
from crm.supporters import withdrawn

REMOVABLE = ("bounced", "staff", "erased")
PAGE_SIZE = 50
UPLOAD_MAX_ROWS = 100_000


class SuppressionError(ValueError):
    """A rule refused the change; the message is meant for staff."""


def email_hash(normalised_email: str) -> str:
    """SHA-256 hex of the normalised address (the key the list is searched by)."""
    return hashlib.sha256(normalised_email.encode("utf-8")).hexdigest()


def is_suppressed(normalised_email: str) -> bool:
    return bool(db.session.scalar(
        db.select(exists().where(Suppression.email_hash == email_hash(normalised_email)))
    ))


def entry_for(normalised_email: str) -> Suppression | None:
    return db.session.scalar(db.select(Suppression).where(Suppression.email_hash == email_hash(normalised_email)))


_COLUMNS = ("email_hash", "reason", "email", "detail", "source", "campaign_id", "added_by_id", "created_at")


@functools.cache
def _upsert(dialect: str, reason: str):
    """The upsert for a reason (see suppress), built once per process: a bounce burst suppresses
    thousands of addresses, and building the statement each time was most of suppress()'s cost."""
    table = Suppression.__table__  # Core, not the ORM's bulk-insert path
    stmt = upsert_insert(dialect)(table).values({name: bindparam(name) for name in _COLUMNS})
    if reason == "complained":
        return stmt.on_conflict_do_update(
            index_elements=["email_hash"], where=table.c.reason != "complained",
            set_={"reason": stmt.excluded.reason, "detail": stmt.excluded.detail, "source": stmt.excluded.source,
                  "campaign_id": stmt.excluded.campaign_id})
    if reason == "erased":
        return stmt.on_conflict_do_update(index_elements=["email_hash"], set_={
            "email": None, "reason": case((table.c.reason == "complained", "complained"), else_="erased")})
    return stmt.on_conflict_do_nothing(index_elements=["email_hash"])


def suppress(normalised_email: str, reason: str = "erased", *, detail: str = "", source: str = "",
             campaign_id: int | None = None, added_by_id: int | None = None,
             supporter_ids: list[int] | None = None) -> None:
    """Put the address on the list (idempotent), in the caller's transaction; a sending campaign
    skips its supporter from the commit on (`supporter_ids` when the caller knows them).

    One upsert on the unique hash: an existing entry keeps its reason and date, except that a
    complaint outranks every other reason (it can never be removed), and erasure wipes the
    stored address (hash only)."""
    conflict = reason if reason in ("complained", "erased") else "other"
    db.session.execute(_upsert(db.engine.dialect.name, conflict), {
        "email_hash": email_hash(normalised_email), "reason": reason,
        "email": None if reason == "erased" else normalised_email, "detail": detail[:2000], "source": source[:120],
        "campaign_id": campaign_id, "added_by_id": added_by_id, "created_at": utcnow()})
    if supporter_ids is None:
        supporter_ids = list(db.session.scalars(db.select(Supporter.id).where(Supporter.email == normalised_email)))
    withdrawn.announce(db.session, supporter_ids)


def lift_for_fresh_opt_in(normalised_email: str, reasons: tuple[str, ...]) -> Suppression | None:
    """Remove the entry if its reason is one of `reasons`, because the person opted in afresh
    themselves; returns what was removed (the caller records the consent event)."""
    entry = entry_for(normalised_email)
    if entry is None or entry.reason not in reasons:
        return None
    db.session.delete(entry)
    return entry


# -- the staff page and CLI ------------------------------------------------------------------

def listing(q: str = "", reason: str = "", after_id: int | None = None, limit: int = PAGE_SIZE) -> list[Suppression]:
    """Newest first. `q` matches a substring of a stored address, or a full address by hash
    (so an erased address can still be looked up by someone who knows it)."""
    query = db.select(Suppression)
    q = (q or "").strip().lower()[:320]
    if q:
        conditions = [Suppression.email.contains(q, autoescape=True)]
        try:
            conditions.append(Suppression.email_hash == email_hash(normalise_email(q)))
        except InvalidEmail:
            pass
        if len(q) == 64 and all(c in "0123456789abcdef" for c in q):
            conditions.append(Suppression.email_hash == q)
        query = query.where(or_(*conditions))
    if reason:
        query = query.where(Suppression.reason == reason)
    if after_id:
        query = query.where(Suppression.id < after_id)
    return list(db.session.scalars(query.order_by(Suppression.id.desc()).limit(limit)))


def counts_by_reason() -> dict[str, int]:
    return dict(db.session.execute(
        db.select(Suppression.reason, func.count()).group_by(Suppression.reason)).all())


def add_by_staff(address: str, staff_id: int, note: str = "") -> Suppression:
    """Add one address by hand; raises SuppressionError for a bad address or one already listed."""
    try:
        normalised = normalise_email(address)
    except InvalidEmail as exc:
        raise SuppressionError(str(exc)) from None
    if is_suppressed(normalised):
        raise SuppressionError("This address is already on the suppression list.")
    suppress(normalised, "staff", detail=(note or "").strip(), source=f"staff:{staff_id}", added_by_id=staff_id)
    audit.record("suppression.add", f"suppression:{email_hash(normalised)[:12]}", actor_id=staff_id)
    db.session.commit()
    return entry_for(normalised)


@dataclass
class UploadResult:
    added: int = 0
    already: int = 0
    invalid: list[tuple[int, str, str]] = field(default_factory=list)  # (line, value, reason)


def add_many_by_staff(addresses: list[tuple[int, str]], staff_id: int, note: str = "",
                      source: str = "") -> UploadResult:
    """Add (line number, address) pairs from an upload in one transaction: bad rows are reported
    with their line, duplicates and listed addresses counted, nothing half-written."""
    result = UploadResult()
    wanted: dict[str, str] = {}
    for line, raw in addresses:
        if not (raw or "").strip():
            continue
        try:
            normalised = normalise_email(raw)
        except InvalidEmail as exc:
            result.invalid.append((line, raw[:320], str(exc)))
            continue
        wanted.setdefault(email_hash(normalised), normalised)
    hashes = list(wanted)
    listed: set[str] = set()
    for start in range(0, len(hashes), 1000):
        listed.update(db.session.scalars(db.select(Suppression.email_hash)
                                         .where(Suppression.email_hash.in_(hashes[start:start + 1000]))))
    new = [(h, a) for h, a in wanted.items() if h not in listed]
    result.already = len(wanted) - len(new)
    note = (note or "").strip()[:2000]
    if new:
        db.session.execute(db.insert(Suppression), [
            {"email_hash": h, "email": a, "reason": "staff", "detail": note,
             "source": (source or f"upload:{staff_id}")[:120], "added_by_id": staff_id} for h, a in new])
        emails = [a for _, a in new]
        for start in range(0, len(emails), 1000):
            withdrawn.announce(db.session, db.session.scalars(
                db.select(Supporter.id).where(Supporter.email.in_(emails[start:start + 1000]))))
    result.added = len(new)
    audit.record("suppression.upload", "suppression", actor_id=staff_id, added=result.added,
                 already=result.already, invalid=len(result.invalid))
    db.session.commit()
    return result


def remove_by_staff(entry_id: int, staff_id: int, reason: str) -> Suppression:
    """Take an entry off the list with a required reason (audit-logged); never a complaint.

    The address's supporter keeps their email status: a bounced one stays `bouncing` until they
    opt in again or staff resubscribe them at their request."""
    reason = (reason or "").strip()
    entry = db.session.get(Suppression, entry_id)
    if entry is None:
        raise SuppressionError("That entry is no longer on the suppression list.")
    if entry.reason == "complained":
        raise SuppressionError("A spam complaint cannot be removed: only the person can opt in again, "
                               "by ticking the consent box on a petition.")
    if not reason:
        raise SuppressionError("Give a reason for removing the address from the suppression list.")
    audit.record("suppression.remove", f"suppression:{entry.email_hash[:12]}", actor_id=staff_id,
                 reason=reason[:2000], was=entry.reason, since=entry.created_at.isoformat())
    db.session.delete(entry)
    db.session.commit()
    return entry
