"""Petition rules shared by the staff views, the public pages and the CLI.

Slug and redirect checks, Markdown rendering, consent-wording versions, status changes and
the petition report queries all live here, once. So do the public pages' cheap reads: the
petition with its current wording in one statement, the cached signature count and the
cached Markdown (see "public pages" below).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from urllib.parse import urlsplit

import nh3
import redis
from blinker import Namespace
from flask import current_app
from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlalchemy import and_, case
from sqlalchemy.exc import IntegrityError

from crm.extensions import db
from crm.input_guard import positive_int
from crm.models import CONSENT_MODES, ConsentEvent, ConsentWording, Petition, Signature, Supporter, utcnow
from crm.redis_conn import get_redis
from crm.urls import is_safe_next

log = logging.getLogger(__name__)

SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
SLUG_MAX = 120

DEFAULT_WORDING = ("By signing this petition you will receive periodic email updates from {org}. "
                   "You may unsubscribe at any time.")

# Sent (with the app as sender) after a petition is saved or changes status, so whatever keeps
# a copy of it (crm.public.pages) can drop it at once.
petition_changed = Namespace().signal("petition-changed")

# Editable fields, in the order the form shows them.
FIELDS = ("slug", "title", "body", "addressed_to", "goal", "thank_you_message", "redirect_url",
          "consent_wording", "consent_mode", "double_opt_in")

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
    from crm.settings import org

    return DEFAULT_WORDING.format(org=org.current().name)


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


# Bodies up to this size are kept in the render cache; a longer one is rendered every time.
MARKDOWN_CACHE_MAX_CHARS = 64 * 1024


def render_markdown(text: str) -> Markup:
    """Markdown to HTML safe to put on a public page (cached: see _render_markdown_cached).

    Raw HTML is escaped by markdown-it (html=False) and the result still goes through nh3 with
    a small tag list and only http/https/mailto links, so no script, on* attribute or
    javascript: URL survives even if one of the two layers misses something.
    """
    text = text or ""
    if len(text) > MARKDOWN_CACHE_MAX_CHARS:
        return _render_markdown(text)
    return _render_markdown_cached(text)


def render_markdown_lead(text: str) -> tuple[Markup, Markup]:
    """The petition text as (its first paragraph, the rest): a phone shows the lead, then the
    form, with the rest behind "Read more". A text that does not open with a paragraph is all lead."""
    html = str(render_markdown(text))
    if html.startswith("<p>") and "</p>" in html:
        end = html.index("</p>") + len("</p>")
        return Markup(html[:end]), Markup(html[end:].strip())
    return Markup(html), Markup("")


@lru_cache(maxsize=128)
def _render_markdown_cached(text: str) -> Markup:
    """The render, memoised per process on the Markdown text itself.

    Rendering and sanitising a petition body costs about 0.5-1.5 ms, on every view of the
    public page. Keyed on the text (not petition id + updated_at) the cache can never serve
    a stale body: an edit is a different key, and two petitions with the same body share one
    entry. At most 128 entries of at most 64 KB of Markdown each (plus their HTML); the
    result is an immutable Markup, safe to share between threads.
    """
    return _render_markdown(text)


def _render_markdown(text: str) -> Markup:
    html = _markdown.render(text)
    clean = nh3.clean(
        html, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}, "th": {"align"}, "td": {"align"}},
        url_schemes={"http", "https", "mailto"}, link_rel="noopener nofollow ugc",
    )
    return Markup(clean)


# ---- wording versions -----------------------------------------------------------------------

def current_wording(petition: Petition | PublicPetition) -> ConsentWording:
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


def wording_row(petition: Petition | PublicPetition, version: int | None) -> ConsentWording | None:
    if version is None:
        return None
    return db.session.scalar(db.select(ConsentWording).where(
        ConsentWording.petition_id == petition.id, ConsentWording.version == version))


def wording_history(petition: Petition) -> list[ConsentWording]:
    return list(db.session.scalars(db.select(ConsentWording)
                                   .where(ConsentWording.petition_id == petition.id)
                                   .order_by(ConsentWording.version.desc())))


# ---- create / edit / status ------------------------------------------------------------------

def _normalised(data: dict) -> dict:
    data = {k: data[k] for k in FIELDS if k in data}
    if "double_opt_in" in data:
        data["double_opt_in"] = bool(data["double_opt_in"])
    for key in ("slug", "title", "addressed_to", "redirect_url", "consent_wording"):
        if isinstance(data.get(key), str):
            data[key] = data[key].strip()
    return data


def problems(data: dict, petition: Petition | None = None) -> dict[str, str]:
    """Every rule `data` breaks, as save_petition would judge it (nothing is written)."""
    return validate(_normalised(data), petition)


def save_petition(data: dict, petition: Petition | None = None) -> Petition:
    """Create or update a petition from `data` and commit; a wording change adds a version.

    Raises PetitionInvalid with field messages; nothing is written then.
    """
    data = _normalised(data)
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
    petition_changed.send(current_app._get_current_object(), petition_id=petition.id)
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
    petition_changed.send(current_app._get_current_object(), petition_id=petition.id)


# ---- report ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConsentFigures:
    """How a petition's signers stand on updates, two different questions:

    - opt_in_rate: of the signatures made on our forms (imports excluded: their signers never
      saw the form), the share that agreed to updates when signing -- a consent event with one
      of this petition's wording versions. It never falls afterwards.
    - subscribed_share: of all signers, the share subscribed now. It falls as people
      unsubscribe (or bounce), and rises when they join by another door.
    """

    signatures: int
    subscribed_now: int
    form_signatures: int
    opted_in_at_signing: int

    @property
    def opt_in_rate(self) -> float | None:
        return self.opted_in_at_signing / self.form_signatures if self.form_signatures else None

    @property
    def subscribed_share(self) -> float | None:
        return self.subscribed_now / self.signatures if self.signatures else None


def consent_figures(petition_ids: list[int] | None = None) -> dict[int, ConsentFigures]:
    """ConsentFigures per petition id (all petitions, or these), in one grouped query.

    "Agreed when signing" is an EXISTS per signature on consent_event's supporter index,
    joined to consent_wording for the petition: the signing path writes the wording id of
    the version the signer saw, and imports never do (crm.imports.queries).
    """
    agreed = agreed_when_signing()
    from_form = signed_on_form()
    query = (db.select(Signature.petition_id, db.func.count(Signature.id),
                       db.func.coalesce(db.func.sum(case((Supporter.email_status == "subscribed", 1), else_=0)), 0),
                       db.func.coalesce(db.func.sum(case((from_form, 1), else_=0)), 0),
                       db.func.coalesce(db.func.sum(case((db.and_(from_form, agreed), 1), else_=0)), 0))
             .outerjoin(Supporter, Signature.supporter_id == Supporter.id).group_by(Signature.petition_id))
    if petition_ids is not None:
        query = query.where(Signature.petition_id.in_(petition_ids))
    return {row[0]: ConsentFigures(*(int(v) for v in row[1:])) for row in db.session.execute(query)}


def agreed_when_signing():
    """SQL test: this signature's signer agreed to updates with one of its petition's wording versions."""
    return db.exists(db.select(1).select_from(ConsentEvent).join(ConsentWording, ConsentWording.id ==
                                                                 ConsentEvent.wording_id)
                     .where(ConsentEvent.supporter_id == Signature.supporter_id,
                            ConsentWording.petition_id == Signature.petition_id,
                            ConsentEvent.action.in_(("opt_in", "resubscribe"))))


def signed_on_form():
    """SQL test: this signature was made on one of our forms, not brought by an import."""
    return db.not_(Signature.source.startswith("import:"))


NO_SIGNATURES = ConsentFigures(0, 0, 0, 0)


@dataclass(frozen=True)
class PetitionStats:
    signatures: int
    figures: ConsentFigures
    per_day: list[tuple[date, int]]

    @property
    def subscribed_signers(self) -> int:
        return self.figures.subscribed_now


def signature_counts() -> dict[int, int]:
    """Signature count per petition id, in one grouped query."""
    return dict(db.session.execute(
        db.select(Signature.petition_id, db.func.count()).group_by(Signature.petition_id)
    ).all())


def signature_count(petition: Petition) -> int:
    """The exact number of signatures (one COUNT; the public pages use public_signature_count)."""
    return _count_signatures(petition.id)


def _count_signatures(petition_id: int) -> int:
    return db.session.scalar(db.select(db.func.count()).select_from(Signature)
                             .where(Signature.petition_id == petition_id)) or 0


def petition_stats(petition: Petition, days: int = 30) -> PetitionStats:
    """Counts for the staff page: consent_figures, and the daily series in one grouped query
    (on ix_signature_petition_created); no signature rows are loaded.
    """
    figures = consent_figures([petition.id]).get(petition.id, NO_SIGNATURES)
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
    return PetitionStats(signatures=figures.signatures, figures=figures, per_day=series)


def newest_signers(petition: Petition, limit: int = 20) -> list[tuple[Signature, Supporter | None]]:
    return db.session.execute(
        db.select(Signature, Supporter).outerjoin(Supporter, Signature.supporter_id == Supporter.id)
        .where(Signature.petition_id == petition.id)
        .order_by(Signature.created_at.desc(), Signature.id.desc()).limit(limit)
    ).all()


# ---- public pages ------------------------------------------------------------------------------
#
# /p/<slug> and its sign POST are the busiest pages by far, so they read a frozen snapshot
# of the petition and its current wording (one statement, no ORM identity map, nothing to
# expire and reload after the signing commit), a cached signature count and cached Markdown.


@dataclass(frozen=True, slots=True)
class Wording:
    """One consent_wording version, as shown on a sign form and copied into consent events."""

    id: int
    version: int
    mode: str
    text: str


@dataclass(frozen=True, slots=True)
class PublicPetition:
    """What the public pages need of a petition, read once per request."""

    id: int
    slug: str
    title: str
    body: str
    addressed_to: str
    goal: int
    consent_mode: str
    consent_wording: str
    consent_wording_version: int
    thank_you_message: str
    redirect_url: str
    double_opt_in: bool
    status: str
    wording: Wording | None  # the current version's row; None until a legacy petition stores it


_petition, _wording = Petition.__table__.c, ConsentWording.__table__.c
_PUBLIC_COLUMNS = (_petition.id, _petition.slug, _petition.title, _petition.body, _petition.addressed_to,
                   _petition.goal, _petition.consent_mode, _petition.consent_wording,
                   _petition.consent_wording_version, _petition.thank_you_message,
                   _petition.redirect_url, _petition.double_opt_in, _petition.status)
_WORDING_COLUMNS = (_wording.id, _wording.version, _wording.mode, _wording.text)
# The petition and its current wording version in one statement: the unique slug index, then
# the (petition_id, version) unique index of consent_wording. Plain Core on table columns,
# built once: every request hits SQLAlchemy's compiled-statement cache and skips the ORM's
# entity loading (these rows become frozen snapshots, not tracked objects).
_PUBLIC_PETITION = (
    db.select(*_PUBLIC_COLUMNS, *_WORDING_COLUMNS)
    .outerjoin(ConsentWording.__table__, and_(_wording.petition_id == _petition.id,
                                              _wording.version == _petition.consent_wording_version))
    .where(_petition.slug == db.bindparam("slug"), _petition.status != "draft")
)
_PETITION_BY_ID = (
    db.select(*_PUBLIC_COLUMNS, *_WORDING_COLUMNS)
    .outerjoin(ConsentWording.__table__, and_(_wording.petition_id == _petition.id,
                                              _wording.version == _petition.consent_wording_version))
    .where(_petition.id == db.bindparam("petition_id"))
)
_WORDING_VERSION = db.select(*_WORDING_COLUMNS).where(_wording.petition_id == db.bindparam("petition_id"),
                                                      _wording.version == db.bindparam("version"))


def _snapshot(statement, params: dict) -> PublicPetition | None:
    """The one petition row `statement` finds, with its current wording, as a snapshot."""
    row = db.session.connection().execute(statement, params).first()
    if row is None:
        return None
    n = len(_PUBLIC_COLUMNS)
    wording = Wording(*row[n:]) if row[n] is not None else None
    return PublicPetition(*row[:n], wording=wording)


def find_public(slug: str) -> PublicPetition | None:
    """The petition the public may see at /p/<slug> (anything but a draft), as a snapshot."""
    return _snapshot(_PUBLIC_PETITION, {"slug": slug})


def find_by_id(petition_id: int) -> PublicPetition | None:
    """The petition with this id as find_public gives it, drafts included (the caller checks its status)."""
    return _snapshot(_PETITION_BY_ID, {"petition_id": petition_id})


def form_version(value) -> int | None:
    """The wording version a form was sent with, or None when it cannot be one we stored."""
    return positive_int(value)


def wording_for_form(petition: PublicPetition, version) -> Wording:
    """The wording a sign form shows, or showed: the version it carries, else the current one.

    The form carries the version so a signer who loaded the page before an edit is recorded
    with the words they actually read. A legacy petition's current version is stored (and
    committed) by the first view that needs it, as current_wording() does.
    """
    version = form_version(version)
    if version is not None and version != petition.consent_wording_version:
        row = db.session.connection().execute(_WORDING_VERSION,
                                              {"petition_id": petition.id, "version": version}).first()
        if row is not None:
            return Wording(*row)
    if petition.wording is not None:
        return petition.wording
    row = current_wording(petition)
    wording = Wording(row.id, row.version, row.mode, row.text)
    db.session.commit()
    return wording


# The public count is read from Redis: a COUNT over a popular petition's signatures costs
# tens of milliseconds (at 200k signatures: a parallel seq scan of 18-26 ms; the index-only
# scan of ix_signature_petition_created still visits every entry, ~16 ms) and every form
# view and thank-you page shows it.
#   petition:<id>:signatures        the count, kept for COUNT_KEEP_SECONDS
#   petition:<id>:signatures:fresh  present while that count is fresh (SIGNATURE_COUNT_CACHE_SECONDS)
# The first view to find the fresh marker gone (SET NX: exactly one per period, across every
# web process) recounts; the others keep showing the previous value meanwhile, so a count of
# millions is never recomputed by a crowd at once. A signature added through the form bumps
# the cached value at once (signature_added), so a signer sees their own signature counted;
# signatures from imports or staff appear at the next recount. Races between a recount and a
# bump can leave the count one off until the next recount; it is a display figure (the staff
# report counts exactly). Without Redis the public pages count exactly, as before.
COUNT_FRESH_SECONDS = 5.0
COUNT_KEEP_SECONDS = 3600
_INCR_IF_CACHED = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCR', KEYS[1]) end
return false
"""


@lru_cache(maxsize=8)
def _incr_if_cached(client: redis.Redis):
    """The bump script registered once per client (register_script hashes the source each time)."""
    return client.register_script(_INCR_IF_CACHED)


def _count_keys(petition_id: int) -> tuple[str, str]:
    key = f"petition:{petition_id}:signatures"
    return key, key + ":fresh"


def public_signature_count(petition_id: int) -> int:
    """The signature count shown on public pages: cached in Redis, at most a few seconds old."""
    key, fresh_key = _count_keys(petition_id)
    fresh_ms = max(1, int(1000 * float(current_app.config.get("SIGNATURE_COUNT_CACHE_SECONDS",
                                                              COUNT_FRESH_SECONDS))))
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.get(key)
        pipe.set(fresh_key, 1, nx=True, px=fresh_ms)
        cached, must_refresh = pipe.execute()
        if cached is not None and not must_refresh:
            return int(cached)
        count = _count_signatures(petition_id)
        get_redis().set(key, count, ex=COUNT_KEEP_SECONDS)
        return count
    except redis.RedisError as exc:
        log.warning("signature count cache unavailable (%s); counting in the database", exc)
        return _count_signatures(petition_id)


def signature_added(petition_id: int) -> int:
    """Count one new signature in the cached public count, and return the count to show."""
    key, _ = _count_keys(petition_id)
    try:
        client = get_redis()
        bumped = _incr_if_cached(client)(keys=[key], client=client)  # EVALSHA
    except redis.RedisError as exc:
        log.warning("signature count cache unavailable (%s); counting in the database", exc)
        return _count_signatures(petition_id)
    return int(bumped) if bumped is not None else public_signature_count(petition_id)
