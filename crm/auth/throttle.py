"""Sign-in throttling: failed attempts per account and per IP, counted in Redis."""

from __future__ import annotations

from flask import current_app
from limits import RateLimitItemPerSecond

from crm.ratelimit import rate_limiter as _limiter


def _item():
    cfg = current_app.config
    return RateLimitItemPerSecond(cfg["LOGIN_MAX_FAILURES"], cfg["LOGIN_WINDOW_SECONDS"])


def is_blocked(email: str, ip: str) -> bool:
    """True when the account or the address has used up its failed attempts."""
    limiter, item = _limiter(), _item()
    return not (limiter.test(item, "login-account", email) and limiter.test(item, "login-ip", ip))


def record_failure(email: str, ip: str) -> None:
    limiter, item = _limiter(), _item()
    limiter.hit(item, "login-account", email)
    limiter.hit(item, "login-ip", ip)


def clear_account(email: str) -> None:
    _limiter().storage.clear(_item().key_for("login-account", email))
