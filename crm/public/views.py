"""Public petition pages: /p/<slug>, its sign endpoint, and the embeddable variant.

CSRF and the embed: the normal form posts to /p/<slug>/sign with Flask-WTF's session-bound
CSRF token. Inside an iframe on another site the session cookie (SameSite=Lax) is not sent
with a cross-site POST, so that token could never validate there. The embed form therefore
posts to /p/<slug>/embed/sign, which is exempt from session CSRF and instead requires a
signed, time-limited form token (itsdangerous, SECRET_KEY, the slug inside, max one day),
plus the honeypot and the per-IP rate limit. Signing a petition grants the attacker nothing
a forged cross-site request could abuse (no session, no staff rights), so this is enough.
"""

from __future__ import annotations

import logging

from flask import abort, current_app, redirect, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from crm.auth.permissions import public
from crm.emails import InvalidEmail
from crm.extensions import csrf, db
from crm.petitions import service
from crm.petitions.service import PublicPetition
from crm.petitions.signing import record_signature
from crm.public import bp, throttle
from crm.public.forms import COUNTRIES, SignForm

log = logging.getLogger(__name__)

EMBED_TOKEN_SALT = "petition-embed-form"
EMBED_TOKEN_MAX_AGE = 24 * 60 * 60
EMBED_ENDPOINTS = {"public.embed", "public.embed_sign"}


@bp.after_request
def frame_policy(response):
    """Only the embed pages may be framed by other sites; the rest of /p/ only by ourselves."""
    if request.endpoint in EMBED_ENDPOINTS:
        response.headers["Content-Security-Policy"] = "frame-ancestors *"
        response.headers.pop("X-Frame-Options", None)
    else:
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
    return response


def _petition_or_404(slug: str) -> PublicPetition:
    return service.find_public(slug) or abort(404)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=EMBED_TOKEN_SALT)


def embed_token(petition: PublicPetition) -> str:
    return _serializer().dumps(petition.slug)


def _render_page(petition: PublicPetition, form: SignForm, *, embed: bool, status: int = 200,
                 message: str | None = None):
    count = service.public_signature_count(petition.id)
    wording = None
    if petition.status == "open":
        # A re-rendered form keeps showing the version the signer first read. (The first
        # view of a legacy petition stores its version row; nothing else is written here.)
        wording = service.wording_for_form(petition, form.wording_version.data)
        form.wording_version.data = str(wording.version)
    # End the read-only transaction with COMMIT rather than leave it to the teardown's
    # ROLLBACK: psycopg forgets its prepared statements on every ROLLBACK, so this page's
    # query would be parsed and planned afresh on every view (~0.1 ms of PostgreSQL CPU).
    # The petition is a snapshot, so nothing is expired and read again.
    db.session.commit()
    if embed and not form.form_token.data:
        form.form_token.data = embed_token(petition)
    template = "public/embed.html" if embed else "public/petition.html"
    return render_template(
        template, petition=petition, form=form, count=count, wording=wording, message=message,
        countries=COUNTRIES,
        action=url_for("public.embed_sign" if embed else "public.sign", slug=petition.slug),
    ), status


@bp.route("/p/<slug>")
@public
def petition(slug: str):
    petition = _petition_or_404(slug)
    return _render_page(petition, SignForm(), embed=False)


@bp.route("/p/<slug>/embed")
@public
def embed(slug: str):
    petition = _petition_or_404(slug)
    return _render_page(petition, SignForm(meta={"csrf": False}), embed=True)


@bp.route("/p/<slug>/sign", methods=["POST"])
@public
def sign(slug: str):
    petition = _petition_or_404(slug)
    return _handle_sign(petition, SignForm(), embed=False)


@bp.route("/p/<slug>/embed/sign", methods=["POST"])
@public
@csrf.exempt
def embed_sign(slug: str):
    petition = _petition_or_404(slug)
    try:
        token_slug = _serializer().loads(request.form.get("form_token", ""),
                                         max_age=EMBED_TOKEN_MAX_AGE)
    except BadSignature:  # also SignatureExpired
        token_slug = None
    if token_slug != petition.slug:
        abort(400)
    return _handle_sign(petition, SignForm(meta={"csrf": False}), embed=True)


def _handle_sign(petition: PublicPetition, form: SignForm, *, embed: bool):
    if petition.status != "open":
        return _render_page(petition, form, embed=embed, status=409)
    ip = request.remote_addr or "unknown"
    if not throttle.allow_attempt(ip):
        return _render_page(
            petition, form, embed=embed, status=429,
            message="Too many signatures have come from your network in the last few minutes. "
                    "Your details are kept below: wait a few minutes and press Sign again.")
    if form.website.data:
        # A bot filled the honeypot: answer exactly like a success, keep nothing.
        log.info("petition %s: honeypot filled; nothing recorded", petition.slug)
        return _after_signing(petition, already_signed=False, embed=embed)
    if not form.validate():
        return _render_page(petition, form, embed=embed, status=400)
    data = form.signature_data() | {"source": "embed" if embed else "web"}
    try:
        result = record_signature(petition, data, ip, request.user_agent.string)
    except InvalidEmail as exc:
        form.email.errors = [str(exc)]
        return _render_page(petition, form, embed=embed, status=400)
    count = None if result.already_signed else service.signature_added(petition.id)
    return _after_signing(petition, already_signed=result.already_signed, embed=embed, count=count)


def _after_signing(petition: PublicPetition, *, already_signed: bool, embed: bool,
                   count: int | None = None):
    if petition.redirect_url and not embed and not already_signed:
        # Re-checked here too: the allow-list may have shrunk since the petition was saved.
        if service.redirect_problem(petition.redirect_url) is None:
            return redirect(petition.redirect_url, code=303)
    if count is None:
        count = service.public_signature_count(petition.id)
    return render_template("public/thanks.html", petition=petition, already_signed=already_signed,
                           embed=embed, count=count)


@bp.route("/healthz")
@public
def healthz():
    """Liveness for a load balancer or proxy: a constant answer, touching no database or Redis."""
    return "ok\n", 200, {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
