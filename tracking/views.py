"""The public tracking endpoints: /o/<token> (the open pixel) and /c/<token>/<index> (the click redirect).

Neither writes to the database: a hit is one XADD (tracking.record), flushed later in batches.
Neither can be made to answer 500 or to send anyone elsewhere:

- the pixel answers the same 1x1 GIF whatever the token, and records only a token we signed;
- the redirect goes only to a link stored for the campaign version the signed token names
  (campaign_link, written when sending started), by its position; any other token or index gets
  a friendly 404 page and records nothing. 302, `Cache-Control: no-store` so no cache answers a
  second reader's click for the first and every click reaches us.

HEAD requests answer the same but record nothing: no mail client reads a message with HEAD.
Logs never carry the token (crm.logs) or an address.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

from flask import Blueprint, Response, current_app, render_template, request
from redis.exceptions import RedisError
from sqlalchemy import select

from crm.auth.permissions import public
from crm.extensions import db
from crm.input_guard import INTEGER_MAX, answers_bad_input
from crm.models import CampaignLink
from crm.redis_conn import get_redis
from tracking.machine import classify_agent
from tracking.record import record_hit
from tracking.tokens import read_tracking_token

log = logging.getLogger(__name__)

bp = Blueprint("tracking", __name__)

# The smallest transparent GIF (GIF89a, 1x1, one transparent colour): 43 bytes.
PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
HEADERS = {"Cache-Control": "no-store, private", "X-Robots-Tag": "noindex", "Referrer-Policy": "no-referrer"}
# Characters a Location header may carry as they are; anything else (spaces, non-ASCII) is percent-encoded.
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"


def _pixel() -> Response:
    return Response(PIXEL, 200, {"Content-Type": "image/gif", **HEADERS})


@bp.route("/o/<tracking_token>")
@public
@answers_bad_input(_pixel)  # a mail client shows a broken image for anything else
def pixel(tracking_token: str):
    tracked = read_tracking_token(tracking_token)
    if tracked is not None and request.method == "GET":
        _record("open", tracked)
    return _pixel()


@bp.route("/c/<tracking_token>/<index>")
@public
def click(tracking_token: str, index: str):
    tracked = read_tracking_token(tracking_token)
    position = int(index) if index.isascii() and index.isdigit() and len(index) < 10 else None
    url = links_of(tracked.campaign_id, tracked.version).get(position) if tracked and position is not None else None
    if url is None:
        return render_template("tracking/link_invalid.html"), 404, HEADERS
    if request.method == "GET":
        _record("click", tracked, position)
    return Response("", 302, {"Location": quote(url, safe=_URL_SAFE), **HEADERS})


@bp.app_template_global("campaign_engagement")
def campaign_engagement(campaign_id: int):
    """Opens and clicks of a campaign for its page (staff only: the page is behind `read`)."""
    from tracking.reports import campaign_engagement as counts

    return counts(campaign_id)


def links_of(campaign_id: int, version: int) -> dict[int, str]:
    """The links of one campaign version by position; cached per process, as they never change."""
    cache = current_app.extensions.setdefault("tracking_links", {})
    key = (campaign_id, version)
    found = cache.get(key)
    if found is None:
        if campaign_id > INTEGER_MAX or version > INTEGER_MAX:
            return {}
        found = dict(db.session.execute(
            select(CampaignLink.position, CampaignLink.url)
            .where(CampaignLink.campaign_id == campaign_id, CampaignLink.version == version)).all())
        db.session.commit()  # end the read transaction at once
        if not found:
            return {}  # not cached: the campaign may not have started sending yet
        if len(cache) > 10_000:
            cache.clear()
        cache[key] = found
    return found


def _record(kind: str, tracked, position: int | None = None) -> None:
    try:
        record_hit(get_redis(), kind, tracked.message_id, tracked.campaign_id, tracked.version,
                   classify_agent(request.user_agent.string), position)
    except RedisError as exc:
        # The answer matters more than the count: the reader still gets the image or the page.
        log.warning("tracking: %s of message %s not recorded: %s", kind, tracked.message_id, exc)
