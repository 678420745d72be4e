"""The OSDI v1 endpoints: thin views that parse, call the services the staff pages use, and answer HAL."""

from __future__ import annotations

import re

from flask import current_app, request, url_for
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select

from api import bp, queries, resources
from api.auth import api_view, current_key
from api.errors import ApiError
from api.filters import parse_filter
from api.schemas import PersonSignupIn, SignatureHelperIn, TaggingIn, TagIn
from crm import audit
from crm.emails import InvalidEmail
from crm.extensions import db
from crm.input_guard import INTEGER_MAX
from crm.models import Campaign, ConsentEvent, Message, Petition, Segment, Signature, Supporter, Tag, supporter_tag
from crm.petitions.service import find_by_id
from crm.petitions.signing import PetitionNotOpen, record_signature
from crm.supporters import service as supporters
from crm.supporters.signup import sign_up

PAGE_MAX = 1_000_000


# ---- request parsing ---------------------------------------------------------------------------

def _int_arg(name: str, default: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or not 1 <= int(raw) <= maximum:
        raise ApiError(400, f"{name} must be a whole number from 1 to {maximum}.", field=name)
    return int(raw)


def paging() -> tuple[int, int]:
    per_page_max = int(current_app.config["API_MAX_PER_PAGE"])
    return _int_arg("page", 1, PAGE_MAX), _int_arg("per_page", per_page_max, per_page_max)


def _path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(body)"


def parse_body(model: type[BaseModel]) -> BaseModel:
    """The JSON body validated by `model`, or ApiError 400 naming the first field at fault."""
    if not request.is_json:
        raise ApiError(400, "Send a JSON body with Content-Type: application/json.", field="(body)")
    try:
        return model.model_validate_json(request.get_data(cache=True))
    except ValidationError as exc:
        errors = []
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            path = _path(error["loc"])
            kind = error["type"]
            if kind == "json_invalid":
                message = "The body is not valid JSON."
            elif kind == "extra_forbidden":
                message = f"Unknown field “{path[:80]}”."
            elif kind == "missing":
                message = f"The field “{path[:80]}” is required."
            else:
                message = f"{path[:80]}: {error['msg'].removeprefix('Value error, ')}"
            errors.append({"field": path[:200], "message": message[:500]})
        raise ApiError(400, errors[0]["message"], field=errors[0]["field"]) from None


def _filter(fields: tuple[str, ...]):
    text = request.args.get("filter") or ""
    return text, parse_filter(text, fields)


def collection(name: str, endpoint: str, items: list[dict], page: int, per_page: int, total: int,
               has_next: bool | None = None, **values) -> dict:
    """An OSDI collection: paging figures, HAL links to neighbouring pages, and the items embedded.

    `has_next` (when the query looked one row ahead) decides `next`; else the count does."""
    pages = max(1, -(-total // per_page))
    args = {k: v for k, v in (("filter", request.args.get("filter")),) if v}

    def page_link(number: int) -> dict:
        return {"href": url_for(endpoint, _external=True, page=number, per_page=per_page, **args, **values)}

    links: dict = {"self": page_link(page), "curies": resources.CURIES,
                   name: [item["_links"]["self"] for item in items]}
    if (page < pages) if has_next is None else has_next:
        links["next"] = page_link(page + 1)
    if page > 1:
        links["prev"] = page_link(min(page - 1, pages))
    return {"total_pages": pages, "per_page": per_page, "page": page, "total_records": total,
            "_links": links, "_embedded": {name: items}}


def simple_page(query, order, page: int, per_page: int):
    """Rows of a small table's page (OFFSET; petitions, tags, campaigns and segments are few) and the total."""
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = db.session.scalars(query.order_by(*order).offset((page - 1) * per_page).limit(per_page)).all()
    return rows, total


def _dated(query, column, clauses):
    for clause in clauses:
        if clause.field == "modified_date":
            query = query.where({"eq": column == clause.value, "gt": column > clause.value,
                                 "lt": column < clause.value}[clause.op])
    return query


def _get(model, row_id: int):
    if row_id > INTEGER_MAX:
        raise ApiError(404, f"No such {model.__tablename__}.")
    row = db.session.get(model, row_id)
    if row is None or (model is Supporter and row.erased_at is not None):
        raise ApiError(404, f"No such {'person' if model is Supporter else model.__tablename__}.")
    return row


def _audit(action: str, target: str, **details) -> None:
    key = current_key()
    audit.record(action, target, api_key=key.label, api_key_id=key.id, **details)
    db.session.commit()


def _answer(body: dict, status: int = 200):
    return body, status, {"Content-Type": "application/hal+json", "Cache-Control": "no-store"}


# ---- entry point ---------------------------------------------------------------------------------

@bp.route("/")
@api_view("read")
def entry_point():
    return _answer({
        "motd": "Supporter CRM OSDI API", "vendor_name": "Supporter CRM", "product_name": "Supporter CRM",
        "osdi_version": "1.0", "max_pagesize": int(current_app.config["API_MAX_PER_PAGE"]),
        "_links": {"self": resources.link("api.entry_point"), "curies": resources.CURIES,
                   "osdi:people": resources.link("api.people"), "osdi:petitions": resources.link("api.petitions"),
                   "osdi:tags": resources.link("api.tags"), "osdi:messages": resources.link("api.messages"),
                   "crm:segments": resources.link("api.segments"),
                   "osdi:person_signup_helper": resources.link("api.person_signup_helper"),
                   "docs": resources.link("api.openapi")},
    })


# ---- people ------------------------------------------------------------------------------------

@bp.route("/people")
@api_view("read")
def people():
    page, per_page = paging()
    text, clauses = _filter(queries.PEOPLE_FILTERS)
    rows, more = queries.people_page(clauses, text, page, per_page)
    total = queries.people_count(clauses, text)
    return _answer(collection("osdi:people", "api.people", [resources.person(s) for s in rows], page, per_page,
                              total, has_next=more))


@bp.route("/people", methods=["POST"])
@api_view("write")
def person_signup_helper():
    data = parse_body(PersonSignupIn)
    email = data.person.primary_email()
    wants_updates = email.status == "subscribed"
    if wants_updates and not data.consent_wording:
        raise ApiError(400, "consent_wording is required to subscribe someone: the exact words they agreed to.",
                       field="consent_wording")
    key = current_key()
    try:
        result = sign_up(_profile(data.person), source=f"api:{key.label}", wants_updates=wants_updates,
                         wording=data.consent_wording or "")
    except InvalidEmail as exc:  # the schema checked it already; kept for the service's own word
        raise ApiError(400, str(exc), field="person.email_addresses[0].address") from None
    if result.supporter_id is None:
        _audit("api.person_signup", "supporter:erased")
        return _answer({"message": "This address asked to be forgotten, so nothing was stored."})
    supporter = db.session.get(Supporter, result.supporter_id)
    for name in data.add_tags:
        supporters.add_tag(supporter, name)
    _audit("api.person_signup", f"supporter:{supporter.id}", created=result.created,
           consent_event_id=result.consent_event_id, tags=list(data.add_tags))
    return _answer(resources.person(supporter), 201 if result.created else 200)


def _profile(person) -> dict:
    postal = person.primary_postal()
    return {"email": person.primary_email().address, "first_name": person.given_name or "",
            "last_name": person.family_name or "", "postal_code": (postal.postal_code or "") if postal else "",
            "country": (postal.country or "") if postal else ""}


@bp.route("/people/<int:person_id>")
@api_view("read")
def person(person_id: int):
    return _answer(resources.person(_get(Supporter, person_id)))


@bp.route("/people/<int:person_id>/signatures")
@api_view("read")
def person_signatures(person_id: int):
    _get(Supporter, person_id)
    page, per_page = paging()
    _, clauses = _filter(("modified_date",))
    query = _dated(select(Signature).where(Signature.supporter_id == person_id), Signature.created_at, clauses)
    rows, total = simple_page(query, (Signature.created_at, Signature.id), page, per_page)
    return _answer(collection("osdi:signatures", "api.person_signatures", [resources.signature(r) for r in rows],
                              page, per_page, total, person_id=person_id))


@bp.route("/people/<int:person_id>/taggings")
@api_view("read")
def person_taggings(person_id: int):
    supporter = _get(Supporter, person_id)
    page, per_page = paging()
    _filter(())
    query = select(Tag).join(supporter_tag, supporter_tag.c.tag_id == Tag.id).where(
        supporter_tag.c.supporter_id == person_id)
    rows, total = simple_page(query, (Tag.id,), page, per_page)
    items = [resources.tagging(t.id, person_id, t.created_at or supporter.created_at) for t in rows]
    return _answer(collection("osdi:taggings", "api.person_taggings", items, page, per_page, total,
                              person_id=person_id))


# ---- petitions and signatures -----------------------------------------------------------------

def _petition_counts(ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    return dict(db.session.execute(select(Signature.petition_id, func.count()).where(Signature.petition_id.in_(ids))
                                   .group_by(Signature.petition_id)).all())


@bp.route("/petitions")
@api_view("read")
def petitions():
    page, per_page = paging()
    _, clauses = _filter(("modified_date",))
    rows, total = simple_page(_dated(select(Petition), Petition.updated_at, clauses), (Petition.id,), page, per_page)
    counts = _petition_counts([p.id for p in rows])
    return _answer(collection("osdi:petitions", "api.petitions", [resources.petition(p, counts.get(p.id, 0))
                                                                   for p in rows], page, per_page, total))


@bp.route("/petitions/<int:petition_id>")
@api_view("read")
def petition(petition_id: int):
    row = _get(Petition, petition_id)
    return _answer(resources.petition(row, _petition_counts([row.id]).get(row.id, 0)))


@bp.route("/petitions/<int:petition_id>/signatures")
@api_view("read")
def petition_signatures(petition_id: int):
    _get(Petition, petition_id)
    page, per_page = paging()
    _, clauses = _filter(("modified_date",))
    query = _dated(select(Signature).where(Signature.petition_id == petition_id), Signature.created_at, clauses)
    rows, total = simple_page(query, (Signature.created_at, Signature.id), page, per_page)
    return _answer(collection("osdi:signatures", "api.petition_signatures", [resources.signature(r) for r in rows],
                              page, per_page, total, petition_id=petition_id))


@bp.route("/petitions/<int:petition_id>/signatures/<int:signature_id>")
@api_view("read")
def signature(petition_id: int, signature_id: int):
    row = _get(Signature, signature_id)
    if row.petition_id != petition_id:
        raise ApiError(404, "No such signature.")
    return _answer(resources.signature(row))


@bp.route("/petitions/<int:petition_id>/signatures", methods=["POST"])
@api_view("write")
def record_signature_helper(petition_id: int):
    """Sign the petition for the person in the body, exactly as the public form would."""
    data = parse_body(SignatureHelperIn)
    public = find_by_id(petition_id) if petition_id <= INTEGER_MAX else None
    if public is None:
        raise ApiError(404, "No such petition.")
    if public.status != "open":
        db.session.rollback()
        raise ApiError(409, f"The petition is {public.status}: it takes no signatures.", field="petition_id")
    key = current_key()
    email = data.person.primary_email()
    source = f"api:{key.label}"
    referrer = data.referrer_data.source if data.referrer_data and data.referrer_data.source else ""
    form_data = {**_profile(data.person), "comment": data.comments or "",
                 "consent": email.status == "subscribed", "wording_version": data.wording_version,
                 "source": f"{source}:{referrer}" if referrer else source, "consent_source": source}
    body: dict = {}

    def tag_audit_answer(result) -> None:
        """In the signature's transaction: the tags, the audit row and the answer's reads, then one commit."""
        signature, supporter = db.session.execute(
            select(Signature, Supporter).outerjoin(Supporter, Supporter.id == Signature.supporter_id)
            .where(Signature.id == result.signature_id)).one()
        for name in data.add_tags if supporter is not None else ():
            supporters.attach_tag(supporter, name)
        audit.record("api.record_signature", f"signature:{result.signature_id}", api_key=key.label,
                     api_key_id=key.id, petition_id=petition_id, supporter_id=result.supporter_id,
                     already_signed=result.already_signed, consent_event_id=result.consent_event_id,
                     tags=list(data.add_tags))
        body.clear()
        body.update(resources.signature(signature))
        if supporter is not None:
            body["_embedded"] = {"osdi:person": resources.person(supporter)}

    try:
        result = record_signature(public, form_data, ip=None, user_agent=None, then=tag_audit_answer)
    except PetitionNotOpen:
        raise ApiError(409, "The petition no longer takes signatures.", field="petition_id") from None
    except InvalidEmail as exc:
        raise ApiError(400, str(exc), field="person.email_addresses[0].address") from None
    return _answer(body, 200 if result.already_signed else 201)


# ---- tags and taggings -------------------------------------------------------------------------

@bp.route("/tags")
@api_view("read")
def tags():
    page, per_page = paging()
    _, clauses = _filter(("modified_date",))
    rows, total = simple_page(_dated(select(Tag), Tag.created_at, clauses), (Tag.id,), page, per_page)
    return _answer(collection("osdi:tags", "api.tags", [resources.tag(t) for t in rows], page, per_page, total))


@bp.route("/tags", methods=["POST"])
@api_view("write")
def create_tag():
    data = parse_body(TagIn)
    try:
        row = supporters.get_or_create_tag(data.name)
    except supporters.SupporterError as exc:
        raise ApiError(400, str(exc), field="name") from None
    _audit("api.tag_create", f"tag:{row.id}", name=row.name)
    return _answer(resources.tag(row), 201)


@bp.route("/tags/<int:tag_id>")
@api_view("read")
def tag(tag_id: int):
    return _answer(resources.tag(_get(Tag, tag_id)))


@bp.route("/tags/<int:tag_id>/taggings")
@api_view("read")
def tag_taggings(tag_id: int):
    row = _get(Tag, tag_id)
    page, per_page = paging()
    _filter(())
    query = select(Supporter.id).join(supporter_tag, supporter_tag.c.supporter_id == Supporter.id).where(
        supporter_tag.c.tag_id == tag_id, Supporter.erased_at.is_(None))
    total = db.session.scalar(select(func.count()).select_from(query.subquery())) or 0
    ids = db.session.scalars(query.order_by(Supporter.id).offset((page - 1) * per_page).limit(per_page)).all()
    items = [resources.tagging(tag_id, supporter_id, row.created_at) for supporter_id in ids]
    return _answer(collection("osdi:taggings", "api.tag_taggings", items, page, per_page, total, tag_id=tag_id))


_PERSON_HREF = re.compile(r"/people/([0-9]{1,10})/?$")


@bp.route("/tags/<int:tag_id>/taggings", methods=["POST"])
@api_view("write")
def create_tagging(tag_id: int):
    data = parse_body(TaggingIn)
    row = _get(Tag, tag_id)
    match = _PERSON_HREF.search(data.links.osdi_person.href)
    field = "_links.osdi:person.href"
    if match is None or int(match.group(1)) > INTEGER_MAX:
        raise ApiError(400, "osdi:person must link to a person of this API (…/api/v1/people/<id>).", field=field)
    supporter = db.session.get(Supporter, int(match.group(1)))
    if supporter is None or supporter.erased_at is not None:
        raise ApiError(400, "No such person.", field=field)
    supporters.add_tag(supporter, row.name)
    _audit("api.tagging_create", f"supporter:{supporter.id}", tag_id=row.id, tag=row.name)
    return _answer(resources.tagging(row.id, supporter.id, row.created_at), 201)


@bp.route("/tags/<int:tag_id>/taggings/<int:person_id>")
@api_view("read")
def tagging(tag_id: int, person_id: int):
    row = _get(Tag, tag_id)
    _get(Supporter, person_id)
    found = db.session.scalar(select(supporter_tag.c.tag_id).where(supporter_tag.c.tag_id == tag_id,
                                                                    supporter_tag.c.supporter_id == person_id))
    if found is None:
        raise ApiError(404, "No such tagging.")
    return _answer(resources.tagging(tag_id, person_id, row.created_at))


@bp.route("/tags/<int:tag_id>/taggings/<int:person_id>", methods=["DELETE"])
@api_view("write")
def delete_tagging(tag_id: int, person_id: int):
    _get(Tag, tag_id)
    supporter = _get(Supporter, person_id)
    supporters.remove_tag(supporter, tag_id)
    _audit("api.tagging_delete", f"supporter:{person_id}", tag_id=tag_id)
    return _answer({"message": "Tagging removed (or there was none)."})


# ---- messages and segments ---------------------------------------------------------------------

def message_statistics(campaign_ids: list[int]) -> dict[int, dict[str, int]]:
    """Per campaign, from the message table in one grouped query (ix_message_campaign_status_id narrows
    to the campaigns), and unsubscribes from consent events (ix_consent_event_campaign_id_action)."""
    if not campaign_ids:
        return {}

    def count_where(condition):
        return func.coalesce(func.sum(db.case((condition, 1), else_=0)), 0)

    rows = db.session.execute(select(
        Message.campaign_id, func.count(),
        count_where(Message.status == "sent"), count_where(Message.opened_at.is_not(None)),
        count_where(Message.clicked_at.is_not(None)),
        count_where(Message.bounced_at.is_not(None) | (Message.status == "bounced")),
        count_where(Message.complained_at.is_not(None)),
    ).where(Message.campaign_id.in_(campaign_ids)).group_by(Message.campaign_id)).all()
    stats = {row[0]: dict(zip(("total", "sent", "opened", "clicked", "bounced", "spam_reports"),
                              (int(v) for v in row[1:]), strict=True)) for row in rows}
    unsubscribed = db.session.execute(select(ConsentEvent.campaign_id, func.count()).where(
        ConsentEvent.campaign_id.in_(campaign_ids), ConsentEvent.action == "opt_out"
    ).group_by(ConsentEvent.campaign_id))
    for campaign_id, count in unsubscribed:
        stats.setdefault(campaign_id, {})["unsubscribed"] = int(count)
    return stats


@bp.route("/messages")
@api_view("read")
def messages():
    page, per_page = paging()
    _, clauses = _filter(("modified_date",))
    rows, total = simple_page(_dated(select(Campaign), Campaign.updated_at, clauses), (Campaign.id,), page, per_page)
    stats = message_statistics([c.id for c in rows])
    return _answer(collection("osdi:messages", "api.messages", [resources.message(c, stats.get(c.id, {}))
                                                                 for c in rows], page, per_page, total))


@bp.route("/messages/<int:message_id>")
@api_view("read")
def message(message_id: int):
    row = _get(Campaign, message_id)
    return _answer(resources.message(row, message_statistics([row.id]).get(row.id, {})))


@bp.route("/segments")
@api_view("read")
def segments():
    page, per_page = paging()
    _, clauses = _filter(("modified_date",))
    rows, total = simple_page(_dated(select(Segment), Segment.updated_at, clauses), (Segment.id,), page, per_page)
    return _answer(collection("crm:segments", "api.segments", [resources.segment(s) for s in rows], page, per_page,
                              total))


@bp.route("/segments/<int:segment_id>")
@api_view("read")
def segment(segment_id: int):
    return _answer(resources.segment(_get(Segment, segment_id)))


