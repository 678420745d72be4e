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


def collect_json(procs, phase: str) -> list:
    """Wait for load processes and read the JSON each printed; a failed one stops the bench."""
    import json

    outs = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"load process failed ({p.returncode}) in the {phase} phase")
        outs.append(json.loads(out))
    return outs


def settings_arguments(parser, defaults, prefix: str) -> None:
    """Add a --field option for each field of a settings dataclass, defaulting to `defaults` (from env)."""
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                            help=f"default {value!r} (env {prefix}_{name.upper()})")


def settings_from_args(args, defaults):
    """The settings dataclass as the command line set it."""
    return type(defaults)(**{name: getattr(args, name) for name in asdict(defaults)})
