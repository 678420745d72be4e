"""Who may frame each answer (clickjacking), no MIME sniffing, no Referer to other sites."""

import re

import pytest

from crm.auth.permissions import PUBLIC, access_rule
from tests import factories, walk

FRAME_ANCESTORS = re.compile(r"frame-ancestors ([^;]+)")
# Public pages may be framed by this site only, staff pages by no one; these are the exceptions.
FRAMED_BY = {
    "public.embed": "*", "public.embed_sign": "*",  # the embed exists to be framed by partner sites
    "campaigns.preview_page": "'self'",  # staff pages frame the campaign preview
    "auth.login": "'none'",  # public, but a staff page
    # An unsubscribe page is never framed, not even by us (campaigns.unsubscribe sends DENY).
    "unsubscribe.confirm": "'none'", "unsubscribe.unsubscribe": "'none'", "unsubscribe.resubscribe": "'none'",
    # Nor are the other pages a signed link opens (they send the unsubscribe pages' headers).
    "preferences.page": "'none'", "confirm.page": "'none'", "confirm.confirm": "'none'",
}
X_FRAME_OPTIONS = {"'none'": "DENY", "'self'": "SAMEORIGIN", "*": None}


def framing(response) -> tuple[str | None, str | None]:
    """(frame-ancestors, X-Frame-Options) of an answer."""
    found = FRAME_ANCESTORS.search(response.headers.get("Content-Security-Policy", ""))
    return (found.group(1).strip() if found else None), response.headers.get("X-Frame-Options")


def expected_framing(app, endpoint: str) -> str:
    return FRAMED_BY.get(endpoint, "'self'" if access_rule(app, endpoint) == PUBLIC else "'none'")


def test_every_answer_says_who_may_frame_it(app):
    """Every page, as an admin: staff pages refuse all framing, public ones allow only this site, the embed anyone."""
    world = walk.make_world()
    staff: dict[str, int] = {}
    problems = []
    for route in walk.routes(app, world, methods=("GET",)):
        response = walk.client_for(app, "admin", staff).open(route.url, method=route.method)
        ancestors = expected_framing(app, route.endpoint)
        if framing(response) != (ancestors, X_FRAME_OPTIONS[ancestors]):
            problems.append(f"{route.method} {route.url} ({response.status_code}): {framing(response)}")
        if response.headers.get("X-Content-Type-Options") != "nosniff":
            problems.append(f"{route.method} {route.url}: no nosniff")
    assert problems == []


@pytest.mark.parametrize("path", ["/", "/login", "/no-such-page"])
def test_staff_sign_in_and_unknown_pages_are_never_framed(app, client, path):
    """The sign-in page and unrouted addresses (404) refuse framing too; Referers stay on this site."""
    response = client.get(path)
    assert framing(response) == ("'none'", "DENY")
    assert response.headers["Referrer-Policy"] == "same-origin"


def test_the_send_confirmation_cannot_be_framed(app, client_as):
    """The clickjacking target: the page whose button sends a campaign to everyone."""
    campaign = factories.make_campaign()
    response = client_as("organizer").get(f"/campaigns/{campaign.id}/send")
    assert response.status_code == 200 and framing(response) == ("'none'", "DENY")


def test_a_policy_of_the_view_is_kept_and_completed(app, client_as):
    """The campaign preview's own CSP stays whole (one header, its frame-ancestors), with X-Frame-Options to match."""
    campaign = factories.make_campaign()
    response = client_as("analyst").get(f"/campaigns/{campaign.id}/preview")
    (policy,) = response.headers.getlist("Content-Security-Policy")
    assert "sandbox" in policy and policy.count("frame-ancestors") == 1
    assert framing(response) == ("'self'", "SAMEORIGIN")
