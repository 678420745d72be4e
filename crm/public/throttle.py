"""Per-IP limit on signature attempts, counted in Redis (shared by every web process)."""

from __future__ import annotations

from functools import lru_cache

from flask import current_app
from limits import RateLimitItem, parse

from crm.ratelimit import rate_limiter


@lru_cache(maxsize=8)
def _limit(setting: str) -> RateLimitItem:
    return parse(setting)


def allow_attempt(ip: str) -> bool:
    """Count one sign attempt from `ip`; False once SIGN_RATE_LIMIT (e.g. "20/10 minutes") is used up."""
    return rate_limiter().hit(_limit(current_app.config["SIGN_RATE_LIMIT"]), "sign-ip", ip)
