"""The supporter profile's limits and the one wording of "too long", for every door a field comes in by.

The public sign form, the staff edit form and the import all refuse an over-long name or postal
code with this message, never cutting it short in silence (a browser's maxlength would).
"""

from __future__ import annotations

# Column widths of supporter.first_name, last_name and postal_code.
PROFILE_LIMITS = {"first_name": 100, "last_name": 100, "postal_code": 20}


def too_long(name: str, limit: int) -> str:
    """`first name longer than 100 characters`: the reason an import gives, and the forms' message."""
    return f"{name.replace('_', ' ')} longer than {limit} characters"
