"""Secrets at rest (relay webhook credentials, outbound webhook signing keys): Fernet tokens under
a key derived from SECRET_KEY.

A database dump or backup then does not hand out the webhook credentials. Keys listed in
SECRET_KEY_FALLBACKS still decrypt (rotate SECRET_KEY, then save each provider again); a
secret no key can read counts as missing, and the settings page says so.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

_INFO = b"crm feedback provider secrets v1"  # kept as first written: rows already saved decrypt with it


def _fernet_for(secret_key: str | bytes) -> Fernet:
    raw = secret_key.encode("utf-8") if isinstance(secret_key, str) else secret_key
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(raw)
    return Fernet(base64.urlsafe_b64encode(key))


def _keys() -> MultiFernet:
    config = current_app.config
    fallbacks = config.get("SECRET_KEY_FALLBACKS") or []
    return MultiFernet([_fernet_for(config["SECRET_KEY"]), *(_fernet_for(k) for k in fallbacks)])


def encrypt(value: str) -> str:
    return _keys().encrypt(value.encode("utf-8")).decode("ascii") if value else ""


def decrypt(token: str) -> str | None:
    """The secret, '' if none was saved, or None if no current key can read it."""
    if not token:
        return ""
    try:
        return _keys().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError, ValueError):
        return None
