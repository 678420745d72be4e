"""Public petition pages: /p/<slug>, its sign endpoint, and the embeddable variant.

CSRF: the form at /p/<slug> posts to /p/<slug>/sign with a signed double-submit token (a
nonce cookie and an HMAC over it in the form, crm.public.tokens), checked here rather than
by Flask-WTF's session token, so the public pages never read or write a session. A refused
token gets the form back, filled in, with a fresh token and a 400.

The embed: inside an iframe on another site our cookies are not sent with a cross-site POST
(SameSite=Lax), so no cookie-bound token could validate there. The embed form therefore
posts to /p/<slug>/embed/sign, which requires instead a signed, time-limited form token
(itsdangerous, SECRET_KEY, the slug inside, max one day), plus the honeypot and the per-IP
rate limit. Signing a petition grants the attacker nothing a forged cross-site request
could abuse (no session, no staff rights), so this is enough there.

Speed: the sign page, the embed page and the thank-you page are rendered once per petition
and lifetime and reused (crm.public.pages); a signature is then one Redis call for the rate
limit, one statement on PostgreSQL and one Redis call for the count.
"""

from __future__ import annotations

import logging

from flask import abort, current_app, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from crm.auth.permissions import public
from crm.emails import InvalidEmail
from crm.extensions import csrf, db
from crm.filters import plural
from crm.petitions import service
from crm.petitions.service import PublicPetition
from crm.petitions.signing import PetitionNotOpen, record_signature
from crm.public import bp, pages, throttle, tokens
from crm.public.forms import COUNTRIES, SignForm, quick_signature_data
from crm.public.pages import Fragments

log = logging.getLogger(__name__)

EMBED_TOKEN_SALT = "petition-embed-form"
EMBED_TOKEN_MAX_AGE = 24 * 60 * 60
EMBED_ENDPOINTS = {"public.embed", "public.embed_sign"}
TOKEN_REFUSED = ("This form had expired or was sent from another site, so nothing was recorded. "
                 "Check your details below and press Sign again.")


@service.petition_changed.connect
def _forget_pages(app, **_):
    """An edit, publish or close in this process shows on the public pages at once."""
    found = app.extensions.get("public_pages")
    if found is not None:
        found.forget()


@bp.after_request
def public_headers(response):
    """Only the embed pages may be framed by other sites, the rest of /p/ only by ourselves; a
    page with a sign token is kept out of caches and brings a new browser its nonce cookie."""
    if request.endpoint in EMBED_ENDPOINTS:
        response.headers["Content-Security-Policy"] = "frame-ancestors *"
        response.headers.pop("X-Frame-Options", None)
    else:
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    return tokens.finish_response(response)


def _load(slug: str) -> PublicPetition | None:
    petition = service.find_public(slug)
    # End the read-only transaction with COMMIT rather than leave it to the teardown's
    # ROLLBACK: psycopg forgets its prepared statements on every ROLLBACK.
    db.session.commit()
    return petition


def _entry_or_404(slug: str) -> pages.Entry:
    origin = f"{request.scheme}://{request.host}"  # the thank-you page links back absolutely
    return pages.cache().get(slug, origin, _load, pages.lifetime()) or abort(404)


def _fresh_or_404(slug: str) -> PublicPetition:
    """The petition as the database has it now, its cached pages dropped."""
    pages.cache().forget(slug)
    return _load(slug) or abort(404)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=EMBED_TOKEN_SALT)


def embed_token(petition: PublicPetition) -> str:
    return _serializer().dumps(petition.slug)


def progress(petition: PublicPetition, count: int) -> dict[str, str]:
    """The count as shown, its noun, the bare number and the progress bar's width (the page's count slots)."""
    return {"count": f"{count:,}", "noun": plural(count, "signature", "signatures"), "value": str(count),
            "pct": str(min(100, count * 100 // (petition.goal or 1)))}


def _page_html(petition: PublicPetition, form: SignForm, *, embed: bool, shown: dict[str, str],
               sign_token: str | None, message: str | None = None) -> str:
    wording = None
    if petition.status == "open":
        # A re-rendered form keeps showing the version the signer first read. (The first
        # view of a legacy petition stores its version row; nothing else is written here.)
        wording = service.wording_for_form(petition, form.wording_version.data)
        form.wording_version.data = str(wording.version)
    template = "public/embed.html" if embed else "public/petition.html"
    return render_template(
        template, petition=petition, form=form, shown=shown, wording=wording, message=message,
        countries=COUNTRIES, sign_token=None if embed else sign_token,
        action=url_for("public.embed_sign" if embed else "public.sign", slug=petition.slug))


def _render_page(petition: PublicPetition, form: SignForm, *, embed: bool, status: int = 200,
                 message: str | None = None):
    """The page rendered for this request: a form sent back with errors or a notice."""
    shown = progress(petition, service.public_signature_count(petition.id))
    if embed and not form.form_token.data:
        form.form_token.data = embed_token(petition)
    token = tokens.issue(petition.id) if petition.status == "open" and not embed else None
    html = _page_html(petition, form, embed=embed, shown=shown, message=message, sign_token=token)
    db.session.commit()  # as in _load
    return html, status


def _cached_page(entry: pages.Entry, *, embed: bool) -> Fragments:
    """The empty sign page (or embed page) of `entry`, rendered with slots, made once per lifetime."""
    page = entry.embed_page if embed else entry.sign_page
    if page is not None:
        return page
    if entry.count is None:
        entry.count = service.public_signature_count(entry.petition.id)
    form = SignForm(meta={"csrf": False})
    if embed:
        form.form_token.data = Fragments.slot("form_token")
    shown = {name: Fragments.slot(name) for name in ("count", "noun", "value", "pct")}
    page = Fragments(_page_html(entry.petition, form, embed=embed, shown=shown,
                                sign_token=Fragments.slot("sign_token")))
    db.session.commit()  # as in _load
    if embed:
        entry.embed_page = page
    else:
        entry.sign_page = page
    return page


@bp.route("/p/<slug>")
@public
def petition(slug: str):
    entry = _entry_or_404(slug)
    page = _cached_page(entry, embed=False)
    token = tokens.issue(entry.petition.id) if entry.petition.status == "open" else ""
    return page.fill(progress(entry.petition, entry.count) | {"sign_token": token})


@bp.route("/p/<slug>/embed")
@public
def embed(slug: str):
    entry = _entry_or_404(slug)
    page = _cached_page(entry, embed=True)
    return page.fill(progress(entry.petition, entry.count) | {"form_token": embed_token(entry.petition)})


@bp.route("/p/<slug>/sign", methods=["POST"])
@public
@csrf.exempt  # checked below with the double-submit token (crm.public.tokens)
def sign(slug: str):
    entry = _entry_or_404(slug)
    if not tokens.is_valid(request.form.get("csrf_token"), entry.petition.id):
        return _render_page(entry.petition, _posted_form(), embed=False, status=400, message=TOKEN_REFUSED)
    return _handle_sign(entry, embed=False)


@bp.route("/p/<slug>/embed/sign", methods=["POST"])
@public
@csrf.exempt
def embed_sign(slug: str):
    entry = _entry_or_404(slug)
    try:
        token_slug = _serializer().loads(request.form.get("form_token", ""),
                                         max_age=EMBED_TOKEN_MAX_AGE)
    except BadSignature:  # also SignatureExpired
        token_slug = None
    if token_slug != entry.petition.slug:
        abort(400)
    return _handle_sign(entry, embed=True)


def _posted_form() -> SignForm:
    """The sign form over the posted fields (CSRF is checked by the views, not by Flask-WTF)."""
    return SignForm(meta={"csrf": False})


def _handle_sign(entry: pages.Entry, *, embed: bool):
    petition = entry.petition
    if petition.status != "open":
        petition = _fresh_or_404(petition.slug)  # it may have opened since the copy was made
        if petition.status != "open":
            return _render_page(petition, _posted_form(), embed=embed, status=409)
    ip = request.remote_addr or "unknown"
    if not throttle.allow_attempt(ip):
        return _render_page(
            petition, _posted_form(), embed=embed, status=429,
            message="Too many signatures have come from your network in the last few minutes. "
                    "Your details are kept below: wait a few minutes and press Sign again.")
    if request.form.get("website"):
        # A bot filled the honeypot: answer exactly like a success, keep nothing.
        log.info("petition %s: honeypot filled; nothing recorded", petition.slug)
        return _after_signing(entry, already_signed=False, embed=embed)
    data = quick_signature_data(request.form)
    if data is None:  # something to point out, or to look at more closely: the form decides
        form = _posted_form()
        if not form.validate():
            return _render_page(petition, form, embed=embed, status=400)
        data = form.signature_data()
    data["source"] = "embed" if embed else "web"
    try:
        result = record_signature(petition, data, ip, request.user_agent.string)
    except InvalidEmail as exc:
        form = _posted_form()
        form.email.errors = [str(exc)]
        return _render_page(petition, form, embed=embed, status=400)
    except PetitionNotOpen:
        return _render_page(_fresh_or_404(petition.slug), _posted_form(), embed=embed, status=409)
    count = None
    if not result.already_signed:
        count = entry.count = service.signature_added(petition.id)
    return _after_signing(entry, already_signed=result.already_signed, embed=embed, count=count)


def _after_signing(entry: pages.Entry, *, already_signed: bool, embed: bool, count: int | None = None):
    petition = entry.petition
    if petition.redirect_url and not embed and not already_signed:
        # Re-checked here too: the allow-list may have shrunk since the petition was saved.
        if service.redirect_problem(petition.redirect_url) is None:
            return redirect(petition.redirect_url, code=303)
    if count is None:
        count = service.public_signature_count(petition.id)
    if already_signed or embed:
        return render_template("public/thanks.html", petition=petition, already_signed=already_signed,
                               embed=embed, count=count)
    if entry.thanks_page is None:
        entry.thanks_page = Fragments(render_template(
            "public/thanks.html", petition=petition, already_signed=False, embed=False,
            count=Fragments.slot("count"), people=Fragments.slot("people")))
    return entry.thanks_page.fill({"count": f"{count:,}", "people": plural(count, "person has", "people have")})


@bp.route("/healthz")
@public
def healthz():
    """Liveness for a load balancer or proxy: a constant answer, touching no database or Redis."""
    return "ok\n", 200, {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
