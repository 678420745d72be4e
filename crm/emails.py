"""Email address normalisation and validation (syntax only: no DNS in a request)."""

from email_validator import EmailNotValidError, validate_email


class InvalidEmail(ValueError):
    """The address is not a syntactically valid email address."""


def normalise_email(raw: str) -> str:
    """Return the address trimmed and lower-cased, or raise InvalidEmail with the reason."""
    candidate = (raw or "").strip()
    if not candidate:
        raise InvalidEmail("An email address is required.")
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
