"""Benchmarks: each module in bench/ defines run() -> list of result rows; `make bench` prints them."""

import os
from dataclasses import asdict


def settings_from_env(settings, prefix: str):
    """Override a settings dataclass's fields from PREFIX_<FIELD> environment variables."""
    for name, value in asdict(settings).items():
        raw = os.environ.get(f"{prefix}_{name.upper()}")
        if raw not in (None, ""):
            setattr(settings, name, raw.lower() in ("1", "true", "yes") if isinstance(value, bool)
                    else type(value)(raw))
    return settings
