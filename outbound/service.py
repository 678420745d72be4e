"""Webhook endpoints and their settings: registering, editing, rotating secrets, the log, replays."""

from __future__ import annotations

from sqlalchemy import select

from crm import audit, stored_secrets
from crm.extensions import db
from crm.models import WEBHOOK_EVENTS, WebhookDelivery, WebhookEndpoint, WebhookSettings
from outbound import hosts
from outbound.signing import new_secret

EVENT_LABELS = {
    "signature.created": "A petition is signed",
    "supporter.subscribed": "A supporter subscribes",
    "supporter.unsubscribed": "A supporter unsubscribes",
    "supporter.bounced": "A message bounces",
    "supporter.complained": "A spam complaint",
    "campaign.sent": "A campaign finishes sending",
}
LOG_SHOWN = 100


class Invalid(ValueError):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(m for ms in errors.values() for m in ms))
        self.errors = errors


def allow_private_hosts() -> bool:
    row = db.session.get(WebhookSettings, 1)
    return bool(row and row.allow_private_hosts)


def save_settings(allow_private: bool, staff_id: int | None) -> None:
    row = db.session.get(WebhookSettings, 1) or WebhookSettings(id=1)
    before = bool(row.allow_private_hosts)
    row.allow_private_hosts = bool(allow_private)
    row.updated_by_id = staff_id
    db.session.add(row)
    audit.record("webhooks.settings", "webhook_settings", actor_id=staff_id, allow_private_hosts=[before,
                                                                                                  bool(allow_private)])
    db.session.commit()


def problems(data: dict) -> dict[str, list[str]]:
    """Every rule the endpoint's URL, description and events break (the URL's host is resolved and checked)."""
    errors: dict[str, list[str]] = {}
    try:
        hosts.resolve((data.get("url") or "").strip(), allow_private_hosts())
    except hosts.Refused as exc:
        errors["url"] = [str(exc)]
    if len((data.get("description") or "").strip()) > 200:
        errors["description"] = ["At most 200 characters."]
    events = data.get("events") or []
    if not events or any(e not in WEBHOOK_EVENTS for e in events):
        errors["events"] = ["Choose at least one event."]
    return errors


def _apply(endpoint: WebhookEndpoint, data: dict) -> None:
    endpoint.url = data["url"].strip()
    endpoint.description = (data.get("description") or "").strip()
    endpoint.events = [e for e in WEBHOOK_EVENTS if e in data["events"]]
    endpoint.is_active = bool(data.get("is_active", True))


def create_endpoint(data: dict, staff_id: int | None) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint and commit; returns it with its secret (shown once)."""
    if errors := problems(data):
        raise Invalid(errors)
    secret = new_secret()
    endpoint = WebhookEndpoint(secret=stored_secrets.encrypt(secret), created_by_id=staff_id)
    _apply(endpoint, data)
    db.session.add(endpoint)
    db.session.flush()
    audit.record("webhooks.endpoint_create", f"webhook_endpoint:{endpoint.id}", actor_id=staff_id,
                 url=endpoint.url, events=endpoint.events)
    db.session.commit()
    _changed()
    return endpoint, secret


def update_endpoint(endpoint: WebhookEndpoint, data: dict, staff_id: int | None) -> None:
    if errors := problems(data):
        raise Invalid(errors)
    _apply(endpoint, data)
    audit.record("webhooks.endpoint_update", f"webhook_endpoint:{endpoint.id}", actor_id=staff_id,
                 url=endpoint.url, events=endpoint.events, is_active=endpoint.is_active)
    db.session.commit()
    _changed()


def rotate_secret(endpoint: WebhookEndpoint, staff_id: int | None) -> str:
    """A new secret for the endpoint, used from the next attempt on; returned once."""
    secret = new_secret()
    endpoint.secret = stored_secrets.encrypt(secret)
    audit.record("webhooks.secret_rotate", f"webhook_endpoint:{endpoint.id}", actor_id=staff_id)
    db.session.commit()
    return secret


def _changed() -> None:
    from outbound.dispatch import store_wanted

    store_wanted()


def endpoints() -> list[WebhookEndpoint]:
    return list(db.session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id)))


def deliveries(endpoint: WebhookEndpoint, limit: int = LOG_SHOWN) -> list[WebhookDelivery]:
    """The endpoint's latest deliveries, newest first (ix_webhook_delivery_endpoint_id_id)."""
    return list(db.session.scalars(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
                                   .order_by(WebhookDelivery.id.desc()).limit(limit)))


def replay(delivery: WebhookDelivery, staff_id: int | None) -> WebhookDelivery:
    """Send the same event again (same body and webhook-id, so a receiver can tell) as a new delivery."""
    from outbound.dispatch import enqueue_delivery

    again = WebhookDelivery(endpoint_id=delivery.endpoint_id, webhook_id=delivery.webhook_id,
                            event_type=delivery.event_type, body=delivery.body, replay_of_id=delivery.id)
    db.session.add(again)
    db.session.flush()
    audit.record("webhooks.replay", f"webhook_delivery:{delivery.id}", actor_id=staff_id, replay=again.id)
    db.session.commit()
    enqueue_delivery(again.id)
    return again
