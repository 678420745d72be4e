"""OData-style `filter=` of the OSDI specification, the subset this API answers.

    filter=modified_date gt '2026-01-01T00:00:00Z' and email_address eq 'ana@example.org'

Clauses `<field> <op> <value>` joined by `and`; ops eq, gt, lt; values quoted with single
quotes ('' for a quote inside) or bare. modified_date takes an ISO 8601 date or time (UTC when
no offset is given); email_address takes eq only, and only on people. Anything else is refused
with a message that names what was not understood: a filter quietly ignored would hand a sync
every record instead of the changed ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from api.errors import ApiError
from crm.emails import InvalidEmail, normalise_email

FILTER_MAX = 500
OPERATORS = ("eq", "gt", "lt")
_TOKEN = re.compile(r"\s*(?:'((?:[^']|'')*)'|([^\s']+))")


@dataclass(frozen=True)
class Clause:
    field: str
    op: str
    value: object


def _refuse(problem: str):
    raise ApiError(400, f"Unsupported filter: {problem}", field="filter")


def _tokens(text: str) -> list[tuple[str, bool]]:
    """(token, was quoted) pairs."""
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None:
            _refuse(f"an unterminated quote at character {pos + 1}")
        quoted, bare = match.group(1), match.group(2)
        tokens.append((quoted.replace("''", "'"), True) if quoted is not None else (bare, False))
        pos = match.end()
    return tokens


def parse_datetime(raw: str) -> datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime; ValueError if it is neither."""
    value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_filter(text: str | None, fields: tuple[str, ...]) -> list[Clause]:
    """The clauses of `text` over `fields` (the collection's filterable fields); raise ApiError 400."""
    if not text or not text.strip():
        return []
    if len(text) > FILTER_MAX:
        _refuse(f"longer than {FILTER_MAX} characters")
    tokens = _tokens(text)
    clauses = []
    i = 0
    while True:
        if len(tokens) - i < 3:
            _refuse("expected `<field> <eq|gt|lt> <value>`" + (f" after “{tokens[i - 1][0]}”" if i else ""))
        (field, field_quoted), (op, _), (value, quoted) = tokens[i:i + 3]
        if field_quoted or field not in fields:
            allowed = ", ".join(fields)
            _refuse(f"the field “{field[:60]}” (this collection filters on {allowed})")
        op = op.lower()
        if op not in OPERATORS:
            _refuse(f"the operator “{op[:20]}” (use eq, gt or lt)")
        clauses.append(Clause(field, op, _value(field, op, value)))
        i += 3
        if i == len(tokens):
            return clauses
        joiner, quoted_joiner = tokens[i]
        if quoted_joiner or joiner.lower() != "and":
            _refuse(f"“{joiner[:20]}” (clauses are joined with `and` only)")
        i += 1


def _value(field: str, op: str, raw: str):
    if field == "modified_date":
        try:
            return parse_datetime(raw)
        except (ValueError, OverflowError):
            _refuse(f"“{raw[:60]}” is not an ISO 8601 date or time for modified_date")
    if field == "email_address":
        if op != "eq":
            _refuse("email_address takes eq only")
        try:
            return normalise_email(raw)
        except InvalidEmail as exc:
            raise ApiError(400, f"Unsupported filter: the email_address is not valid: {exc}", field="filter") from None
    raise AssertionError(field)
