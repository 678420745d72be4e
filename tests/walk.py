"""Walking the URL map with a real row behind every id, for tests that try every route.

make_world() creates one of each thing a URL names (a supporter with a tag, an open petition,
a segment, a draft campaign, an email template, a sender identity, an uploaded import, a staff
account, a sent message's unsubscribe token, a suppression entry, a feedback provider, an export job, an
API key (which every walking client then sends), a webhook endpoint and a delivery), so a
request reaches the view's real work rather than a 404; routes() lists every rule with its
methods and the URL built from that world.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from campaigns.tokens import make_preferences_token, make_unsubscribe_token
from crm.extensions import db
from crm.imports import service as imports
from crm.models import EmailTemplate, ExportJob, Segment, Signature, SignatureConfirmation, Suppression, WebhookDelivery
from crm.petitions.confirmation import make_confirm_token
from crm.supporters import service as supporters
from crm.supporters.suppression import suppress
from outbound import service as outbound
from tests import factories
from tracking.tokens import make_tracking_token

ROLES = ("analyst", "organizer", "admin")
API_TOKEN: str | None = None  # the world's read-write API key, sent by every walking client


@dataclass(frozen=True)
class Route:
    endpoint: str
    method: str
    url: str
    string_arguments: tuple[str, ...]  # the URL's free-text parts (slug, token, key, filename)


def make_world() -> dict[str, object]:
    """One row of each kind a URL argument names, keyed by that argument's name."""
    supporter = factories.make_supporter()
    tag = supporters.add_tag(supporter, "walked")
    petition = factories.make_petition()
    signature = factories.make_signature(petition, supporter)
    pending = SignatureConfirmation(signature_id=signature.id, petition_id=petition.id, supporter_id=supporter.id,
                                    consent_action="opt_in", reason="", wording="Walked wording", send_count=1)
    db.session.add(pending)
    segment = Segment(name="Walked", rules={"op": "all", "rules": []})
    template = EmailTemplate(name="Walked template", mjml=factories.DEFAULT_MJML)
    db.session.add_all([segment, template])
    db.session.commit()
    campaign = factories.make_campaign(segment=segment)
    sent = factories.make_campaign(status="sent")  # the unsubscribe token's, apart from the draft walked
    message = factories.make_message(sent, supporter)
    job = imports.create_import(io.BytesIO(b"Email,First name\nwalked@example.net,Walker\n"), "walked.csv", None)
    staff = factories.make_staff("analyst")
    suppress("walked-listed@example.net", reason="staff")
    db.session.commit()
    entry = db.session.scalar(db.select(Suppression).where(Suppression.email == "walked-listed@example.net"))
    export = ExportJob(kind="engagement", format="csv", requested_by_id=staff.id, status="queued")
    db.session.add(export)
    key_id, token = factories.make_api_key("read_write", label="Walked key")
    global API_TOKEN
    API_TOKEN = token
    endpoint, _ = outbound.create_endpoint({"url": "https://93.184.215.14/hook", "events": ["signature.created"]},
                                           None)
    delivery = WebhookDelivery(endpoint_id=endpoint.id, webhook_id="msg_walked", event_type="signature.created",
                               body='{"type":"signature.created"}', status="failed")
    db.session.add(delivery)
    db.session.commit()
    signature_id = db.session.scalar(db.select(Signature.id).where(Signature.petition_id == petition.id))
    return {"person_id": supporter.id, "message_id": sent.id, "signature_id": signature_id, "key_id": key_id,
            "endpoint_id": endpoint.id, "delivery_id": delivery.id,
            "supporter_id": supporter.id, "tag_id": tag.id, "petition_id": petition.id, "slug": petition.slug,
            "segment_id": segment.id, "template_id": template.id, "campaign_id": campaign.id,
            "sender_id": campaign.sender_id, "import_id": job.id, "user_id": staff.id,
            "token": make_unsubscribe_token(message.id), "key": "no-such-message", "filename": "app.css",
            "entry_id": entry.id, "provider": "generic", "name": "generic",
            "tracking_token": make_tracking_token(message.id, sent.id, sent.version), "index": "0",
            "preferences_token": make_preferences_token(message.id),
            "confirm_token": make_confirm_token(pending.id), "export_id": export.id}


# Endpoints whose success takes away a row the others need (or the session): walked last.
DESTRUCTIVE = ("delete", "erase", "remove", "deactivate", "clear", "logout", "cancel", "revoke")


def routes(app, world: dict[str, object], methods: tuple[str, ...] = ("GET", "POST")) -> list[Route]:
    """Every rule and method of `methods`, with its URL built from `world`: reads first, destructive posts last."""
    adapter = app.url_map.bind("localhost")
    found = []
    for rule in app.url_map.iter_rules():
        values = {name: world[name] for name in rule.arguments}
        url = adapter.build(rule.endpoint, values)
        strings = tuple(name for name in rule.arguments if isinstance(world[name], str))
        for method in sorted(rule.methods & set(methods)):
            found.append(Route(rule.endpoint, method, url, strings))

    def order(route: Route):
        last = route.method != "GET" and any(word in route.endpoint for word in DESTRUCTIVE)
        return (route.method != "GET", last, route.url, route.method)

    return sorted(found, key=order)


def client_for(app, role: str | None, staff: dict[str, int]):
    """A test client signed in as a staff member of `role` (None: anonymous), without the login form's hashing."""
    client = app.test_client()
    if API_TOKEN is not None:  # API routes then do their real work, whoever walks
        client.environ_base["HTTP_OSDI_API_TOKEN"] = API_TOKEN
    if role is not None:
        if role not in staff:
            staff[role] = factories.make_staff(role).id
        with client.session_transaction() as session:
            session["_user_id"] = str(staff[role])
            session["_fresh"] = True
    return client
