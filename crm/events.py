"""Facts other systems may hear about (outbound webhooks), passed on only once they are committed.

A service that records a fact calls emit(kind, data) inside its transaction; the event waits in
the session until that transaction commits, and is dropped if it rolls back, so a receiver
never hears of a signature that was not stored. A fact written outside the session (the
signing fast path's autocommit statement) is emitted with committed=True and goes at once.

What hears them is whatever registered a sink in app.extensions["event_sinks"] (outbound/
does): crm knows nothing about webhooks. A sink must be cheap (it runs in the request that
made the fact) and must not raise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from flask import current_app, has_app_context
from sqlalchemy import inspect

from crm import after_commit

log = logging.getLogger(__name__)

_PENDING = "crm.events"  # Session.info key: events to pass on after commit

Event = dict  # {"type": kind, "timestamp": ISO 8601, "data": {...}}
Sink = Callable[[list[Event]], None]


def emit(kind: str, data: dict, *, committed: bool = False) -> None:
    """Pass on the fact `kind` with `data` once the current transaction commits (now if `committed`).

    A value of `data` may be a mapped object not yet flushed (a new supporter): its primary key
    is put in its place after the commit."""
    if not has_app_context() or not current_app.extensions.get("event_sinks"):
        return
    item = {"type": kind, "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": data}
    if committed:
        _publish([item])
        return
    from crm.extensions import db

    after_commit.pending(db.session, _PENDING).append(item)


def add_sink(app, sink: Sink) -> None:
    """Have `sink` receive every committed event of `app`."""
    app.extensions.setdefault("event_sinks", []).append(sink)


def _resolve(item: Event) -> Event:
    data = item["data"]
    for name, value in data.items():
        if hasattr(value, "_sa_instance_state"):
            identity = inspect(value).identity  # from the identity key: no SQL after the commit
            data[name] = identity[0] if identity else None
    return item


def _publish(events: list[Event]) -> None:
    events = [_resolve(item) for item in events]
    for sink in current_app.extensions.get("event_sinks", ()):
        sink(events)


def _publish_committed(events: list[Event]) -> None:
    if has_app_context():
        _publish(events)


def init_app(app) -> None:
    """Pass on emitted events after every commit of any session."""
    after_commit.on_commit(_PENDING, _publish_committed)
