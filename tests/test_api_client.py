"""The API against a live HTTP server, driven by a script that uses only `requests` (tests/osdi_client.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from werkzeug.serving import make_server

from crm.extensions import db
from crm.models import ConsentEvent, ConsentWording, Supporter
from tests import factories, osdi_client


@pytest.fixture
def live_server(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_requests_script_pages_people_signs_and_reads_statistics(app, live_server):
    """People paged through next links; the helper's signer appears subscribed with the petition's
    wording version; the message's statistics are the message table's."""
    people = [factories.make_supporter() for _ in range(21)]
    petition = factories.make_petition(consent_wording="Updates from Test Org; unsubscribe any time.")
    db.session.add(ConsentWording(petition_id=petition.id, version=1, mode="implied", text=petition.consent_wording))
    campaign = factories.make_campaign(status="sent")
    now = datetime.now(UTC)
    for person in people[:3]:
        factories.make_message(campaign, person, opened_at=now)
    db.session.commit()
    _, token = factories.make_api_key("read_write", label="Website")

    seen = osdi_client.run(live_server, token, petition.id, campaign.id)

    assert sorted(seen["emails"]) == sorted(p.email for p in people) and seen["pages"] == 3
    assert seen["signed_status"] == 201 and seen["found"] == 1
    assert seen["person"]["given_name"] == "John"
    assert seen["person"]["email_addresses"][0]["status"] == "subscribed"
    assert seen["statistics"]["sent"] == 3 and seen["statistics"]["opened"] == 3
    db.session.expire_all()
    supporter = db.session.scalar(db.select(Supporter).where(Supporter.email == "jsmith@mail.com"))
    event = db.session.scalar(db.select(ConsentEvent).where(ConsentEvent.supporter_id == supporter.id))
    assert (event.action, event.source, event.wording_version, event.wording) == (
        "opt_in", "api:Website", 1, petition.consent_wording)
    assert supporter.postal_code == "20009" and [t.name for t in supporter.tags] == ["volunteer"]
