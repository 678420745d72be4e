"""Unsubscribe tokens: the message id, HMAC-signed with SECRET_KEY, and the /u/<token> URLs built from them.

A token is itsdangerous's URL-safe JSON of the message id plus an HMAC over it, with a salt of
its own so no other signed value of this app (sessions, CSRF, embed form tokens) can be replayed
as one. It carries no address: the id is only readable, and only meaningful, to the database.

Tokens never expire. RFC 8058 mailbox providers may POST long after delivery, CAN-SPAM wants the
opt-out working for at least 30 days, and people unsubscribe from year-old mail. Rotating
SECRET_KEY would break every link already sent, so old keys listed in SECRET_KEY_FALLBACKS
(Flask's setting) keep verifying while new links are signed with SECRET_KEY.
"""

from __future__ import annotations

from functools import lru_cache

from flask import current_app
from itsdangerous import BadData, URLSafeSerializer

SALT = "campaigns.unsubscribe-link"
# A real token is about 40-60 characters; anything far longer is not ours and is refused unread.
MAX_TOKEN_LENGTH = 200
# What a test send's token carries instead of a message id: the page answers "test message".
TEST_PAYLOAD = "test-message"


def _serializer() -> URLSafeSerializer:
    return signer(SALT)


def signer(salt: str) -> URLSafeSerializer:
    """The serializer for one kind of link (its own salt), on SECRET_KEY and its fallbacks."""
    config = current_app.config
    # itsdangerous signs with the last key and verifies with any of them.
    return _serializer_for((*(config.get("SECRET_KEY_FALLBACKS") or ()), config["SECRET_KEY"]), salt)


@lru_cache(maxsize=8)
def _serializer_for(keys: tuple[str, ...], salt: str) -> URLSafeSerializer:
    # Built once per key set: deriving the signing key costs more than signing (the send loop
    # signs one token per message).
    return URLSafeSerializer(list(keys), salt=salt)


def load_signed(token: object, salt: str) -> object | None:
    """The payload signed with `salt`, or None for anything we did not sign (never raises)."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        return signer(salt).loads(token)
    except (BadData, ValueError):  # ValueError: e.g. lone surrogates that cannot be encoded
        return None


def _load(token: object) -> object | None:
    """The signed payload, or None for anything we did not sign (never raises)."""
    return load_signed(token, SALT)


def make_unsubscribe_token(message_id: int) -> str:
    """Sign a message id into a URL-safe unsubscribe token."""
    if isinstance(message_id, bool) or not isinstance(message_id, int) or message_id < 1:
        raise ValueError(f"not a message id: {message_id!r}")
    return _serializer().dumps(message_id)


def read_unsubscribe_token(token: str) -> int | None:
    """Return the message id a token was made for, or None if it is malformed, tampered or a test token."""
    payload = _load(token)
    if isinstance(payload, bool) or not isinstance(payload, int) or payload < 1:
        return None
    return payload


def is_test_unsubscribe_token(token: str) -> bool:
    """Whether the token came from a test send (there is no message and nothing to unsubscribe)."""
    return _load(token) == TEST_PAYLOAD


def _url(token: str) -> str:
    return current_app.config["BASE_URL"].rstrip("/") + "/u/" + token


def unsubscribe_url(message_id: int) -> str:
    """The public unsubscribe URL for one message (List-Unsubscribe header and the footer link)."""
    return _url(make_unsubscribe_token(message_id))


def test_unsubscribe_url() -> str:
    """The unsubscribe URL put in test sends: it works, and says it came from a test message."""
    return _url(_serializer().dumps(TEST_PAYLOAD))


# Not a test: keep pytest from collecting this function when a test module imports it.
test_unsubscribe_url.__test__ = False


# The preference page's links: the same message id, under a salt of its own, so an unsubscribe
# token never opens the preference page or the other way round.
PREFERENCES_SALT = "campaigns.preferences-link"


def make_preferences_token(message_id: int) -> str:
    """Sign a message id into a URL-safe preference-page token."""
    if isinstance(message_id, bool) or not isinstance(message_id, int) or message_id < 1:
        raise ValueError(f"not a message id: {message_id!r}")
    return signer(PREFERENCES_SALT).dumps(message_id)


def read_preferences_token(token: str) -> int | None:
    """The message id a preference token was made for, or None (malformed, tampered or a test token)."""
    payload = load_signed(token, PREFERENCES_SALT)
    if isinstance(payload, bool) or not isinstance(payload, int) or payload < 1:
        return None
    return payload


def is_test_preferences_token(token: str) -> bool:
    """Whether the preference token came from a test send."""
    return load_signed(token, PREFERENCES_SALT) == TEST_PAYLOAD


def preferences_url(message_id: int) -> str:
    """The public preference page URL for one message (footer link and {{ preferences_url }})."""
    return current_app.config["BASE_URL"].rstrip("/") + "/preferences/" + make_preferences_token(message_id)


def test_preferences_url() -> str:
    """The preference URL put in test sends: the page says it came from a test message."""
    return current_app.config["BASE_URL"].rstrip("/") + "/preferences/" + signer(PREFERENCES_SALT).dumps(TEST_PAYLOAD)


test_preferences_url.__test__ = False
