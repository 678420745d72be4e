"""One rate limiter per app, on the app's Redis, shared by every web process and worker."""

from __future__ import annotations

from flask import current_app
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from crm.redis_conn import get_redis


def rate_limiter() -> MovingWindowRateLimiter:
    """The `limits` moving-window limiter bound to the app's Redis connection pool."""
    ext = current_app.extensions
    if "rate_limiter" not in ext:
        storage = RedisStorage("redis://", connection_pool=get_redis().connection_pool)
        ext["rate_limiter"] = MovingWindowRateLimiter(storage)
    return ext["rate_limiter"]
