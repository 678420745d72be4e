"""Petition rules shared by the staff views, the public pages and the CLI.

Slug and redirect checks, Markdown rendering, consent-wording versions, status changes and
the petition report queries all live here, once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from urllib.parse import urlsplit

import nh3
from flask import current_app
from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlalchemy import case
from sqlalchemy.exc import IntegrityError

from crm.extensions import db
from crm.models import CONSENT_MODES, ConsentWording, Petition, Signature, Supporter, utcnow
from crm.urls import is_safe_next

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
SLUG_MAX = 120

DEFAULT_WORDING = ("By signing this petition you will receive periodic email updates from {org}. "
                   "You may unsubscribe at any time.")

# Editable fields, in the order the form shows them.
FIELDS = ("slug", "title", "body", "addressed_to", "goal", "thank_you_message", "redirect_url",
          "consent_wording", "consent_mode")

# Which statuses each staff action may start from, and where it leads.
TRANSITIONS = {
    "publish": ({"draft", "closed"}, "open"),
    "close": ({"open"}, "closed"),
    "archive": ({"draft", "open", "closed"}, "archived"),
}


class PetitionInvalid(ValueError):
    """The submitted petition data breaks a rule; `errors` maps field name to message."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def default_wording() -> str:
    return DEFAULT_WORDING.format(org=current_app.config["ORG_NAME"])


# ---- validation ---------------------------------------------------------------------------

def slug_problem(slug: str, petition_id: int | None = None) -> str | None:
    """Why `slug` cannot be used (format or already taken), or None."""
    if not slug:
        return "A slug is required."
    if len(slug) > SLUG_MAX or not SLUG_RE.match(slug):
        return ("Use lowercase letters, digits and single hyphens only (for example "
                "fair-asylum-2025), at most 120 characters.")
    taken = db.select(Petition.id).where(Petition.slug == slug)
    if petition_id is not None:
        taken = taken.where(Petition.id != petition_id)
    if db.session.scalar(taken) is not None:
        return "Another petition already uses this slug."
    return None


def redirect_hosts() -> set[str]:
    """The SIGN_REDIRECT_HOSTS allow-list, lower-cased."""
    raw = current_app.config.get("SIGN_REDIRECT_HOSTS") or ""
    return {h.strip().lower() for h in raw.split(",") if h.strip()}


def redirect_problem(url: str) -> str | None:
    """Why signers may not be sent to `url`, or None (empty means: show the thank-you page)."""
    if not url:
        return None
    if is_safe_next(url):
        return None
    parts = urlsplit(url)
    if "\\" in url or any(ord(ch) < 33 for ch in url):
        return "The address contains characters that are not allowed."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "Use a path on this site (starting with /) or a full https:// address."
    if parts.username or parts.password:
        return "The address must not contain a user name or password."
    if parts.hostname.lower() not in redirect_hosts():
        allowed = ", ".join(sorted(redirect_hosts())) or "none are configured"
        return (f"{parts.hostname} is not an allowed redirect host (SIGN_REDIRECT_HOSTS: {allowed}).")
    return None


def validate(data: dict, petition: Petition | None = None) -> dict[str, str]:
    """Every rule a petition's fields must satisfy; returns field -> message."""
    errors: dict[str, str] = {}
    if problem := slug_problem(data.get("slug") or "", petition.id if petition else None):
        errors["slug"] = problem
    if not (data.get("title") or "").strip():
        errors["title"] = "A title is required."
    goal = data.get("goal")
    if not isinstance(goal, int) or goal < 1:
        errors["goal"] = "The goal must be a whole number of at least 1."
    if problem := redirect_problem(data.get("redirect_url") or ""):
        errors["redirect_url"] = problem
    if not (data.get("consent_wording") or "").strip():
        errors["consent_wording"] = "The consent wording is required: it is what signers agree to."
    if data.get("consent_mode") not in CONSENT_MODES:
        errors["consent_mode"] = "Choose implied or checkbox."
    return errors


# ---- Markdown ---------------------------------------------------------------------------

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
ALLOWED_TAGS = {"p", "br", "strong", "em", "a", "ul", "ol", "li", "blockquote", "h2", "h3", "h4",
                "hr", "code", "pre", "table", "thead", "tbody", "tr", "th", "td"}


def render_markdown(text: str) -> Markup:
    """Markdown to HTML safe to put on a public page.

    Raw HTML is escaped by markdown-it (html=False) and the result still goes through nh3 with
    a small tag list and only http/https/mailto links, so no script, on* attribute or
    javascript: URL survives even if one of the two layers misses something.
    """
    html = _markdown.render(text or "")
    clean = nh3.clean(
        html, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}, "th": {"align"}, "td": {"align"}},
        url_schemes={"http", "https", "mailto"}, link_rel="noopener nofollow ugc",
    )
    return Markup(clean)


# ---- wording versions -----------------------------------------------------------------------

def current_wording(petition: Petition) -> ConsentWording:
    """The consent_wording row for the petition's current version, created if missing.

    Petitions made before versioning existed (or by demo data) have no row yet; the first
    signer or edit stores it. A concurrent creator is absorbed by the savepoint.
    """
    row = wording_row(petition, petition.consent_wording_version)
    if row is not None:
        return row
    try:
        with db.session.begin_nested():
            row = ConsentWording(petition_id=petition.id, version=petition.consent_wording_version,
                                 mode=petition.consent_mode, text=petition.consent_wording)
            db.session.add(row)
    except IntegrityError:
        row = wording_row(petition, petition.consent_wording_version)
    return row


def wording_row(petition: Petition, version: int | None) -> ConsentWording | None:
    if version is None:
        return None
    return db.session.scalar(db.select(ConsentWording).where(
        ConsentWording.petition_id == petition.id, ConsentWording.version == version))


def wording_shown(petition: Petition, version) -> ConsentWording:
    """The wording a sign form displayed: the version it carries, else the current one.

    The form carries the version so a signer who loaded the page before an edit is recorded
    with the words they actually read.
    """
    try:
        row = wording_row(petition, int(version))
    except (TypeError, ValueError):
        row = None
    return row or current_wording(petition)


def wording_history(petition: Petition) -> list[ConsentWording]:
    return list(db.session.scalars(db.select(ConsentWording)
                                   .where(ConsentWording.petition_id == petition.id)
                                   .order_by(ConsentWording.version.desc())))


# ---- create / edit / status ------------------------------------------------------------------

def save_petition(data: dict, petition: Petition | None = None) -> Petition:
    """Create or update a petition from `data` and commit; a wording change adds a version.

    Raises PetitionInvalid with field messages; nothing is written then.
    """
    data = {k: data[k] for k in FIELDS if k in data}
    for key in ("slug", "title", "addressed_to", "redirect_url", "consent_wording"):
        if isinstance(data.get(key), str):
            data[key] = data[key].strip()
    if errors := validate(data, petition):
        raise PetitionInvalid(errors)
    try:
        if petition is None:
            petition = Petition(status="draft", consent_wording_version=1, **data)
            db.session.add(petition)
            db.session.flush()
            db.session.add(ConsentWording(petition_id=petition.id, version=1,
                                          mode=petition.consent_mode, text=petition.consent_wording))
        else:
            wording_changed = (data["consent_wording"] != petition.consent_wording
                               or data["consent_mode"] != petition.consent_mode)
            if wording_changed:
                previous = current_wording(petition)  # keep the old text in the history
                for key, value in data.items():
                    setattr(petition, key, value)
                petition.consent_wording_version = previous.version + 1
                db.session.add(ConsentWording(petition_id=petition.id,
                                              version=petition.consent_wording_version,
                                              mode=petition.consent_mode, text=petition.consent_wording))
            else:
                for key, value in data.items():
                    setattr(petition, key, value)
        db.session.commit()
    except IntegrityError:
        # Two editors racing for the same slug (or the same new wording version).
        db.session.rollback()
        raise PetitionInvalid({"slug": "Another petition already uses this slug, or someone "
                                       "saved this petition at the same moment. Try again."}) from None
    return petition


def change_status(petition: Petition, action: str) -> None:
    """Publish, close or archive; raise ValueError when the petition's status forbids it."""
    if action not in TRANSITIONS:
        raise ValueError(f"Unknown action {action!r}.")
    sources, target = TRANSITIONS[action]
    if petition.status not in sources:
        raise ValueError(f"A petition that is {petition.status} cannot be {target}.")
    now = utcnow()
    if target == "open":
        petition.published_at = petition.published_at or now
        petition.closed_at = None
    elif target == "closed" or (target == "archived" and petition.status == "open"):
        petition.closed_at = now
    petition.status = target
    db.session.commit()


# ---- report ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PetitionStats:
    signatures: int
    subscribed_signers: int
    per_day: list[tuple[date, int]]

    @property
    def opt_in_rate(self) -> float | None:
        return self.subscribed_signers / self.signatures if self.signatures else None


def signature_counts() -> dict[int, int]:
    """Signature count per petition id, in one grouped query."""
    return dict(db.session.execute(
        db.select(Signature.petition_id, db.func.count()).group_by(Signature.petition_id)
    ).all())


def signature_count(petition: Petition) -> int:
    return db.session.scalar(db.select(db.func.count()).select_from(Signature)
                             .where(Signature.petition_id == petition.id)) or 0


def petition_stats(petition: Petition, days: int = 30) -> PetitionStats:
    """Counts for the staff page: totals in one aggregate, the daily series in one grouped query.

    Both use ix_signature_petition_created; no signature rows are loaded.
    """
    total, subscribed = db.session.execute(
        db.select(db.func.count(Signature.id),
                  db.func.coalesce(db.func.sum(case((Supporter.email_status == "subscribed", 1),
                                                    else_=0)), 0))
        .select_from(Signature).outerjoin(Supporter, Signature.supporter_id == Supporter.id)
        .where(Signature.petition_id == petition.id)
    ).one()
    today = utcnow().date()
    start = today - timedelta(days=days - 1)
    day = db.func.date(Signature.created_at)
    rows = db.session.execute(
        db.select(day, db.func.count()).where(
            Signature.petition_id == petition.id,
            Signature.created_at >= datetime(start.year, start.month, start.day, tzinfo=utcnow().tzinfo),
        ).group_by(day)
    ).all()
    # SQLite's date() gives text, PostgreSQL's a date: normalise to ISO strings.
    by_day = {str(d)[:10]: n for d, n in rows}
    series = [(start + timedelta(days=i), by_day.get((start + timedelta(days=i)).isoformat(), 0))
              for i in range(days)]
    return PetitionStats(signatures=int(total), subscribed_signers=int(subscribed), per_day=series)


def newest_signers(petition: Petition, limit: int = 20) -> list[tuple[Signature, Supporter | None]]:
    return db.session.execute(
        db.select(Signature, Supporter).outerjoin(Supporter, Signature.supporter_id == Supporter.id)
        .where(Signature.petition_id == petition.id)
        .order_by(Signature.created_at.desc(), Signature.id.desc()).limit(limit)
    ).all()


def find_public(slug: str) -> Petition | None:
    """The petition the public may see at /p/<slug>: anything but a draft."""
    return db.session.scalar(db.select(Petition).where(Petition.slug == slug,
                                                       Petition.status != "draft"))
