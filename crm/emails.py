"""Email address normalisation and validation (syntax only: no DNS in a request)."""

import re
from functools import lru_cache

import email_validator
from email_validator import EmailNotValidError, validate_email

# The fast path: a plain ASCII address whose normalised form email-validator would return
# unchanged (lower-cased). Anything else -- quotes, Unicode, odd characters, special-use or
# Punycode domains, one-letter or numeric TLDs -- goes to email-validator itself, so the
# result is always email-validator's (tests/test_imports.py checks this on random input).
# The address must be LOCAL@DOMAIN exactly (neither part may hold an @). email-validator
# costs about 30 us an address; this about 2 us.
PLAIN_LOCAL = re.compile(r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*", re.ASCII)
_PLAIN_DOMAIN = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", re.ASCII)
_SPECIAL_DOMAINS = tuple(email_validator.SPECIAL_USE_DOMAIN_NAMES)


class InvalidEmail(ValueError):
    """The address is not a syntactically valid email address."""


def is_plain_domain(domain: str) -> bool:
    """Plain ASCII labels, no `--` (Punycode and the like), not special-use: email-validator keeps it as is."""
    return (_PLAIN_DOMAIN.fullmatch(domain) is not None and "--" not in domain
            and not any(domain == d or domain.endswith("." + d) for d in _SPECIAL_DOMAINS))


_is_plain_domain = lru_cache(maxsize=1024)(is_plain_domain)  # signers share a few domains


def plain_address(candidate: str) -> bool:
    """Whether a trimmed, lower-cased address is one email-validator would return unchanged (the fast path)."""
    local, _, domain = candidate.partition("@")
    return (len(candidate) <= 254 and len(local) <= 64 and PLAIN_LOCAL.fullmatch(local) is not None
            and _is_plain_domain(domain))


def normalise_email(raw: str) -> str:
    """Return the address trimmed and lower-cased, or raise InvalidEmail with the reason."""
    candidate = (raw or "").strip()
    if not candidate:
        raise InvalidEmail("An email address is required.")
    if plain_address(lowered := candidate.lower()):
        return lowered
    return validated_email(candidate)


def validated_email(candidate: str) -> str:
    """The address as email-validator normalises it, lower-cased (normalise_email without the fast path)."""
    try:
        result = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from None
    return result.normalized.lower()


def mask_email(address: str) -> str:
    """Show enough of an address for its owner to recognise it: j***@example.org."""
    local, _, domain = (address or "").partition("@")
    if not domain:
        return "***"
    return f"{local[:1]}***@{domain}"
