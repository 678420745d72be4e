"""schemathesis against /api/v1/openapi.json: generated requests to every operation, never a 5xx, and every
answer's status, content type and body as the document says. Bounded (a few examples per operation) so the
suite stays quick; `make api-fuzz` runs the same with many more (API_FUZZ_EXAMPLES)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from crm.extensions import db
from crm.models import ConsentWording, Segment
from tests import factories

EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "4"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def api_world(app):
    """One of everything an id names (id 1 of each on a fresh database), and a read-write key."""
    supporter = factories.make_supporter()
    petition = factories.make_petition()
    db.session.add(ConsentWording(petition_id=petition.id, version=1, mode="implied", text="Updates"))
    factories.make_signature(petition, supporter)
    campaign = factories.make_campaign(status="sent")
    factories.make_message(campaign, supporter)
    db.session.add(Segment(name="Everyone", rules={"op": "all", "rules": []}))
    db.session.commit()
    from crm.supporters import service

    service.add_tag(supporter, "fuzzed")
    return factories.make_api_key("read_write")[1]


def test_api_conforms_to_its_openapi_document(app, api_world):
    """Whatever schemathesis sends to each operation, the answer is no 5xx and matches the document."""
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    headers = {"OSDI-API-Token": api_world}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        # Driven with hypothesis directly (schemathesis' pytest plugin does not load on this pytest).
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def run(case):
            case.call_and_validate(headers=headers, checks=CHECKS)

        run()
