"""Public petition pages: /p/<slug>, its sign endpoint, and the embeddable variant.

CSRF: the sign forms carry no token. A browser's cross-origin POST is refused by Fetch
Metadata (crm.cross_origin explains why that is the protection an anonymous form needs),
answered here with the form back, filled in, and a 403. So the pages hold nothing specific to
a visitor: the petition, embed and thank-you pages set no cookie and say `Cache-Control:
public, max-age=<PUBLIC_PAGE_CACHE_SECONDS>` (the lifetime of crm.public.pages), for a CDN or
proxy to serve.
Answers that show what someone typed (a form sent back with an error) say `no-store`.

The embed: /p/<slug>/embed may be framed by any site and posts to /p/<slug>/embed/sign. Its
form is our page, so its POST is same-origin whatever page frames it; the embed's sign route
differs only in recording the source `embed` and in answering with the framed thank-you page.

Speed: the sign page, the embed page and the thank-you page are rendered once per petition
and lifetime and reused (crm.public.pages); a signature is then one Redis call for the rate
limit, one statement on PostgreSQL and one Redis call for the count.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit

from flask import abort, current_app, redirect, render_template, request, url_for

from crm.auth.permissions import public
from crm.cross_origin import CrossOriginRequest
from crm.emails import InvalidEmail
from crm.errors import render_error
from crm.extensions import csrf, db
from crm.filters import plural
from crm.input_guard import strip_control_characters
from crm.petitions import service
from crm.petitions.service import PublicPetition
from crm.petitions.signing import UTM_FIELDS, PetitionNotOpen, record_signature
from crm.public import bp, pages, throttle
from crm.public.forms import COUNTRIES, SignForm, quick_signature_data
from crm.public.pages import Fragments
from crm.security_headers import ANYONE, framed_by

log = logging.getLogger(__name__)

_PRIVATE = "crm.public.private_page"  # set in the WSGI environ: this answer shows what someone typed

SIGN_ENDPOINTS = {"public.sign": False, "public.embed_sign": True}  # endpoint -> is the embed
CROSS_ORIGIN_REFUSED = ("This form was sent to us from a page on another website, so nothing was recorded. "
                        "If you meant to sign, check your details below and press Sign.")


@service.petition_changed.connect
def _forget_pages(app, **_):
    """An edit, publish or close in this process shows on the public pages at once."""
    found = app.extensions.get("public_pages")
    if found is not None:
        found.forget()


@bp.after_request
def cache_headers(response):
    """A page that is the same for everyone may be kept by any cache for a lifetime; anything else by none."""
    if "Cache-Control" not in response.headers:
        if response.status_code == 200 and not request.environ.get(_PRIVATE):
            response.headers["Cache-Control"] = f"public, max-age={int(pages.lifetime())}"
        else:
            response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(CrossOriginRequest)
def cross_origin_refused(exc):
    """A sign form posted from another site: the form back, filled in, with a 403 saying why."""
    embed = SIGN_ENDPOINTS.get(request.endpoint)
    if embed is None:
        return render_error(exc.code, exc.description)
    entry = _entry_or_404(request.view_args["slug"])
    return _render_page(entry.petition, _posted_form(), embed=embed, status=403, message=CROSS_ORIGIN_REFUSED)


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


def progress(petition: PublicPetition, count: int) -> dict[str, str]:
    """The count as shown, its noun, the bare number and the progress bar's width (the page's count slots)."""
    return {"count": f"{count:,}", "noun": plural(count, "signature", "signatures"), "value": str(count),
            "pct": str(min(100, count * 100 // (petition.goal or 1)))}


def _page_html(petition: PublicPetition, form: SignForm, *, embed: bool, shown: dict[str, str],
               message: str | None = None) -> str:
    wording = None
    if petition.status == "open":
        # A re-rendered form keeps showing the version the signer first read. (The first
        # view of a legacy petition stores its version row; nothing else is written here.)
        wording = service.wording_for_form(petition, form.wording_version.data)
        form.wording_version.data = str(wording.version)
    template = "public/embed.html" if embed else "public/petition.html"
    return render_template(
        template, petition=petition, form=form, shown=shown, wording=wording, message=message,
        countries=COUNTRIES, action=url_for("public.embed_sign" if embed else "public.sign", slug=petition.slug))


def _render_page(petition: PublicPetition, form: SignForm, *, embed: bool, status: int = 200,
                 message: str | None = None):
    """The page rendered for this request: a form sent back with errors or a notice (never cached)."""
    request.environ[_PRIVATE] = True
    shown = progress(petition, service.public_signature_count(petition.id))
    html = _page_html(petition, form, embed=embed, shown=shown, message=message)
    db.session.commit()  # as in _load
    return html, status


def _cached_page(entry: pages.Entry, *, embed: bool) -> Fragments:
    """The empty sign page (or embed page) of `entry`, rendered with slots, made once per lifetime."""
    page = entry.embed_page if embed else entry.sign_page
    if page is not None:
        return page
    if entry.count is None:
        entry.count = service.public_signature_count(entry.petition.id)
    shown = {name: Fragments.slot(name) for name in ("count", "noun", "value", "pct")}
    page = Fragments(_page_html(entry.petition, SignForm(), embed=embed, shown=shown))
    db.session.commit()  # as in _load
    if embed:
        entry.embed_page = page
    else:
        entry.sign_page = page
    return page


def _served_page(entry: pages.Entry, *, embed: bool) -> bytes:
    """The sign page (or embed page) as served now: the same bytes for everyone until the count moves."""
    fragments = _cached_page(entry, embed=embed)  # also reads the count, the first time
    key = (embed, entry.count)
    served = entry.served
    if served is not None and served[0] == key:
        return served[1]
    page = fragments.fill(progress(entry.petition, entry.count)).encode()
    entry.served = (key, page)  # one assignment: threads sharing the entry see the old pair or the new
    return page


@bp.route("/p/<slug>")
@public
def petition(slug: str):
    return _served_page(_entry_or_404(slug), embed=False)


@bp.route("/p/<slug>/embed")
@public
@framed_by(ANYONE)
def embed(slug: str):
    return _served_page(_entry_or_404(slug), embed=True)


@bp.route("/p/<slug>/sign", methods=["POST"])
@public
@csrf.exempt  # no token: crm.cross_origin refuses forged cross-site posts
def sign(slug: str):
    return _handle_sign(_entry_or_404(slug), embed=False)


@bp.route("/p/<slug>/embed/sign", methods=["POST"])
@public
@framed_by(ANYONE)
@csrf.exempt  # as sign()
def embed_sign(slug: str):
    return _handle_sign(_entry_or_404(slug), embed=True)


def _posted_form() -> SignForm:
    """The sign form over the posted fields."""
    return SignForm()


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
    data.update(_origin_fields())
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


def _origin_fields() -> dict[str, str]:
    """The signature's utm parameters and referring host: posted with the form, or read from the page it came from.

    Our own page's address (sent as Referer: the policy is same-origin) carries the utm
    parameters of the link the signer followed; a form posted from another site (the
    organisation's own copy) names that site's host. Headers pass no input check, so their
    control characters are removed here."""
    found = {name: request.form.get(name, "") for name in (*UTM_FIELDS, "referrer_host")}
    referrer = urlsplit(strip_control_characters(request.referrer or "")[:2000])
    try:
        host = referrer.hostname or ""
    except ValueError:  # a malformed port or bracketed host: no usable host
        host = ""
    ours = {request.host, urlsplit(current_app.config.get("BASE_URL", "")).netloc}
    if host and referrer.netloc not in ours and not found["referrer_host"]:
        found["referrer_host"] = host
    query = parse_qs(referrer.query)
    for name in UTM_FIELDS:
        if not found[name] and query.get(name):
            found[name] = strip_control_characters(query[name][0])
    return found


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
