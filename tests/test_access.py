"""Every endpoint against every role: a new endpoint without an access rule fails here."""

import pytest
from werkzeug.routing import IntegerConverter

from crm.auth.permissions import PUBLIC, ROLE_PERMISSIONS, access_rule
from tests import walk

ROLES = sorted(ROLE_PERMISSIONS)


def _endpoints(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        method = "GET" if "GET" in rule.methods else sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
        values = {
            name: 999999 if isinstance(conv, IntegerConverter) else "no-such-thing"
            for name, conv in rule._converters.items()
        }
        yield rule, method, values


def test_every_endpoint_declares_an_access_rule(app):
    """A view without @requires or @public is a failure, not a silent open door."""
    missing = [rule.endpoint for rule, _, _ in _endpoints(app) if access_rule(app, rule.endpoint) is None]
    assert missing == []


@pytest.mark.parametrize("role", [None, *ROLES])
def test_roles_reach_exactly_what_they_are_granted(app, role):
    """Anonymous users are sent to sign in; roles without the permission get 403; others get in."""
    with app.test_request_context():
        endpoints = list(_endpoints(app))
    problems = []
    staff: dict[str, int] = {}
    for rule, method, values in endpoints:
        rule_access = access_rule(app, rule.endpoint)
        client = walk.client_for(app, role, staff)
        url = app.url_map.bind("localhost").build(rule.endpoint, values)
        response = client.open(url, method=method)
        status = response.status_code
        if status >= 500:
            problems.append(f"{rule.endpoint}: {status}")
        elif rule_access == PUBLIC:
            if status == 403 or "/login?next" in response.headers.get("Location", ""):
                problems.append(f"{rule.endpoint} is public but answered {status}")
        elif role is None:
            if status != 302 or "/login" not in response.headers["Location"]:
                problems.append(f"{rule.endpoint} let an anonymous user in ({status})")
        elif rule_access in ROLE_PERMISSIONS[role]:
            if status == 403:
                problems.append(f"{rule.endpoint} refused {role}")
        elif status != 403:
            problems.append(f"{rule.endpoint} let {role} in without {rule_access} ({status})")
    assert problems == []


def test_analyst_is_read_and_export_only(app):
    """The role table itself: analysts never write, organizers never administer."""
    assert ROLE_PERMISSIONS["analyst"] == {"read", "export"}
    assert "admin" not in ROLE_PERMISSIONS["organizer"]
    assert ROLE_PERMISSIONS["admin"] >= ROLE_PERMISSIONS["organizer"]
