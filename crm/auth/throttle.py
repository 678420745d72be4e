"""Sign-in throttling: failed attempts counted in Redis per account and client IP together.

Counting failures per account alone let anyone lock any staff member out: ten wrong
passwords from anywhere and the account refused its owner for fifteen minutes. So the tight
limit applies to one account from one IP address (LOGIN_MAX_FAILURES, default 10 per
LOGIN_WINDOW_SECONDS, 15 minutes): an attacker guessing from an address only locks that
address out of that account, and the owner signs in from theirs. Two ceilings remain against
guessing spread wide: per account from every address together (LOGIN_ACCOUNT_MAX_FAILURES,
default 100, a distributed attack on one account, which takes at least ten addresses to
reach), and per IP address across accounts (LOGIN_IP_MAX_FAILURES, default 50, one address
trying many accounts).
"""

from __future__ import annotations

from flask import current_app
from limits import RateLimitItemPerSecond

from crm.ratelimit import rate_limiter as _limiter


def _item(setting: str) -> RateLimitItemPerSecond:
    cfg = current_app.config
    return RateLimitItemPerSecond(cfg[setting], cfg["LOGIN_WINDOW_SECONDS"])


def _counters(email: str, ip: str):
    """(limit, key parts) of the three counters a sign-in attempt is checked against."""
    return [(_item("LOGIN_MAX_FAILURES"), ("login-account-ip", email, ip)),
            (_item("LOGIN_ACCOUNT_MAX_FAILURES"), ("login-account", email)),
            (_item("LOGIN_IP_MAX_FAILURES"), ("login-ip", ip))]


def is_blocked(email: str, ip: str) -> bool:
    """True when this account from this address, the account, or the address has used up its failures."""
    limiter = _limiter()
    return not all(limiter.test(item, *keys) for item, keys in _counters(email, ip))


def record_failure(email: str, ip: str) -> None:
    limiter = _limiter()
    for item, keys in _counters(email, ip):
        limiter.hit(item, *keys)


def clear_failures(email: str, ip: str) -> None:
    """A successful sign-in forgets its own address's failures on the account, not everyone else's."""
    _limiter().storage.clear(_item("LOGIN_MAX_FAILURES").key_for("login-account-ip", email, ip))
