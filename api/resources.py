"""Rows as OSDI resources in HAL+JSON: identifiers, dates, fields and _links."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app, url_for

from crm.models import Campaign, Petition, Segment, Signature, Supporter, Tag

CURIES = [{"name": "osdi", "href": "https://opensupporter.github.io/osdi-docs/{rel}", "templated": True}]
# email_status -> OSDI email address status; never_subscribed has no OSDI word, and is not subscribed.
EMAIL_STATUS = {"subscribed": "subscribed", "unsubscribed": "unsubscribed", "bouncing": "bouncing",
                "complained": "spam complaint", "never_subscribed": "unsubscribed"}


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def link(endpoint: str, **values) -> dict:
    return {"href": url_for(endpoint, _external=True, **values)}


def _base(kind: str, row_id: int, created: datetime, modified: datetime | None) -> dict:
    return {"identifiers": [f"crm:{kind}:{row_id}"], "created_date": iso(created),
            "modified_date": iso(modified or created)}


def person(supporter: Supporter) -> dict:
    return {
        **_base("person", supporter.id, supporter.created_at, supporter.updated_at),
        "given_name": supporter.first_name or "",
        "family_name": supporter.last_name or "",
        "email_addresses": [{"primary": True, "address": supporter.email or "",
                             "status": EMAIL_STATUS.get(supporter.email_status, "unsubscribed")}],
        "postal_addresses": [{"primary": True, "postal_code": supporter.postal_code or "",
                              "country": supporter.country or ""}],
        "custom_fields": dict(supporter.custom_fields or {}),
        "_links": {"self": link("api.person", person_id=supporter.id),
                   "osdi:signatures": link("api.person_signatures", person_id=supporter.id),
                   "osdi:taggings": link("api.person_taggings", person_id=supporter.id)},
    }


def petition(row: Petition, total_signatures: int) -> dict:
    from crm.petitions.service import render_markdown

    base = current_app.config["BASE_URL"].rstrip("/")
    return {
        **_base("petition", row.id, row.created_at, row.updated_at),
        "title": row.title, "description": str(render_markdown(row.body or "")), "petition_text": row.body or "",
        "target": [{"name": row.addressed_to}] if row.addressed_to else [],
        "total_signatures": total_signatures, "browser_url": f"{base}/p/{row.slug}", "status": row.status,
        "_links": {"self": link("api.petition", petition_id=row.id),
                   "osdi:signatures": link("api.petition_signatures", petition_id=row.id),
                   "osdi:record_signature_helper": link("api.record_signature_helper", petition_id=row.id)},
    }


def signature(row: Signature) -> dict:
    links = {"self": link("api.signature", petition_id=row.petition_id, signature_id=row.id),
             "osdi:petition": link("api.petition", petition_id=row.petition_id)}
    if row.supporter_id is not None:
        links["osdi:person"] = link("api.person", person_id=row.supporter_id)
    return {**_base("signature", row.id, row.created_at, row.created_at), "comments": row.comment or "",
            "referrer_data": {"source": row.source or ""}, "_links": links}


def tag(row: Tag) -> dict:
    return {**_base("tag", row.id, row.created_at, row.created_at), "name": row.name,
            "_links": {"self": link("api.tag", tag_id=row.id),
                       "osdi:taggings": link("api.tag_taggings", tag_id=row.id)}}


def tagging(tag_id: int, supporter_id: int, created: datetime) -> dict:
    return {**_base("tagging", supporter_id, created, created),
            "identifiers": [f"crm:tagging:{tag_id}-{supporter_id}"],
            "_links": {"self": link("api.tagging", tag_id=tag_id, person_id=supporter_id),
                       "osdi:tag": link("api.tag", tag_id=tag_id),
                       "osdi:person": link("api.person", person_id=supporter_id)}}


def message(row: Campaign, stats: dict[str, int]) -> dict:
    return {
        **_base("message", row.id, row.created_at, row.updated_at),
        "name": row.name, "subject": row.subject, "status": row.status,
        "total_targeted": row.total or stats.get("total", 0), "sent_start_date": iso(row.started_at),
        "statistics": {name: int(stats.get(name, 0)) for name in
                       ("sent", "opened", "clicked", "unsubscribed", "bounced", "spam_reports")},
        "_links": {"self": link("api.message", message_id=row.id)},
    }


def segment(row: Segment) -> dict:
    return {**_base("segment", row.id, row.created_at, row.updated_at), "name": row.name,
            "description": row.description or "", "_links": {"self": link("api.segment", segment_id=row.id)}}
