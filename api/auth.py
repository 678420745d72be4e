"""Who is calling: the OSDI-API-Token header, the key's scope, and its rate limit in Redis.

Keys are looked up on every request (one indexed equality on their hash), so a revoked key is
refused from the next request on. The last-used time is written at most once a minute.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from datetime import timedelta

import limits
from flask import current_app, g
from redis import RedisError

from api import keys
from api.errors import ApiError
from crm.auth.permissions import public
from crm.cross_origin import allow_cross_origin
from crm.extensions import db
from crm.models import ApiKey, utcnow
from crm.ratelimit import rate_limiter

HEADER = "OSDI-API-Token"
LAST_USED_EVERY = timedelta(minutes=1)


def current_key() -> ApiKey:
    return g.api_key


def _rate_limit(key: ApiKey) -> None:
    limit = limits.parse(current_app.config["API_RATE_LIMIT"])
    limiter = rate_limiter()
    try:
        if limiter.hit(limit, "api", str(key.id)):
            return
        reset = limiter.get_window_stats(limit, "api", str(key.id)).reset_time
    except RedisError:
        raise ApiError(503, "Temporarily unavailable; try again shortly.") from None
    retry_after = max(1, int(reset - time.time()) + 1)
    raise ApiError(429, f"Too many requests for this key ({current_app.config['API_RATE_LIMIT']}); "
                        f"retry after {retry_after} s.", headers={"Retry-After": str(retry_after)})


def authenticate(write: bool) -> ApiKey:
    """The calling key, or raise ApiError 401 (no or unknown key), 403 (read-only key writing), 429."""
    from flask import request

    key = keys.find_active(request.headers.get(HEADER))
    if key is None:
        db.session.rollback()
        raise ApiError(401, f"Send a valid API key in the {HEADER} header (admins make them under Settings).",
                       headers={"WWW-Authenticate": f'{HEADER} realm="api"'})
    if write and not key.can_write:
        db.session.rollback()
        raise ApiError(403, "This API key is read only; ask an admin for a read-write key.")
    _rate_limit(key)
    now = utcnow()
    last = key.last_used_at
    if last is not None and last.tzinfo is None:  # SQLite hands back naive UTC
        last = last.replace(tzinfo=now.tzinfo)
    if last is None or now - last > LAST_USED_EVERY:
        key.last_used_at = now
        db.session.commit()
    g.api_key = key
    return key


def api_view(scope: str) -> Callable:
    """Mark a view as an API endpoint needing `scope` ("read" or "write") from the caller's key.

    Public to the staff permission check (the key authorises instead), and open to any origin:
    no cookie is read for API requests (api.init_app), so there is no ambient authority for a
    cross-site request to borrow."""
    if scope not in ("read", "write"):
        raise ValueError(scope)

    def wrap(view: Callable) -> Callable:
        @functools.wraps(view)
        def guarded(*args, **kwargs):
            authenticate(scope == "write")
            return view(*args, **kwargs)

        guarded.api_scope = scope
        return allow_cross_origin(public(guarded))

    return wrap
