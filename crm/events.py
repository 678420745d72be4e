"""Facts other systems may hear about (outbound webhooks), stored in the fact's own transaction.

A service that records a fact calls emit(kind, data) inside its transaction. Just before that
transaction commits, its events are written to the outbox table (outbound_event) in it, so the
fact and its event are stored together or not at all: a receiver never hears of a signature
that was rolled back, and a process that dies after the commit loses no event. Once the
commit is done the listener is woken (outbound/ queues its dispatch job, which turns outbox
rows into deliveries and deletes them in one transaction). A statement that writes its fact
and its outbox rows itself (the signing fast path, crm.petitions.queries) calls wake().

What hears them is the listener registered in app.extensions["event_listener"] (outbound/
registers one): crm knows nothing about webhooks. Its `wanted()` names the event types anyone
wants (None when it cannot tell: then every event is stored), so an organisation without
webhooks writes no outbox rows at all; its `wake()` runs after the commit, must be cheap and
must not raise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app, has_app_context
from redis import RedisError
from sqlalchemy import event, insert, inspect
from sqlalchemy.orm import Session

from crm import after_commit

log = logging.getLogger(__name__)

_PENDING = "crm.events"  # Session.info key: events to store before the commit
_WAKE = "crm.events.wake"  # Session.info key: outbox rows were written; wake the listener after the commit


@dataclass(frozen=True)
class Listener:
    """What hears committed events: which types it wants (None: unknown, all) and its after-commit wake-up."""

    wanted: Callable[[], frozenset[str] | None]
    wake: Callable[[], None]


def listener() -> Listener | None:
    return current_app.extensions.get("event_listener") if has_app_context() else None


def wanted_types() -> frozenset[str] | None:
    """The event types the listener wants: an empty set when there is none, None when it cannot tell."""
    heard = listener()
    if heard is None:
        return frozenset()
    try:
        return heard.wanted()
    except (RedisError, OSError) as exc:  # a Redis outage must not fail the fact: store every event
        log.warning("event types wanted unknown (%s); storing every event", type(exc).__name__)
        return None


def is_wanted(kind: str, wanted: frozenset[str] | None = None) -> bool:
    return wanted is None or kind in wanted


def emit(kind: str, data: dict) -> None:
    """Store the fact `kind` with `data` in the current transaction, if anyone wants it.

    A value of `data` may be a mapped object not yet flushed (a new supporter): its primary key
    is put in its place when the events are written, just before the commit."""
    if listener() is None:
        return
    from crm.extensions import db

    after_commit.pending(db.session, _PENDING).append((kind, data, datetime.now(UTC)))


def wake() -> None:
    """Tell the listener that outbox rows were committed outside the session (a statement of its own)."""
    heard = listener()
    if heard is not None:
        heard.wake()


def wake_after_commit() -> None:
    """Outbox rows were written in the session's transaction by a statement of its own: wake after its commit."""
    from crm.extensions import db

    after_commit.pending(db.session, _WAKE, dict)["rows"] = True


def set_listener(app, wanted: Callable[[], frozenset[str] | None], wake_up: Callable[[], None]) -> None:
    """Have the events of `app` stored when `wanted` says so, and `wake_up` called after their commit."""
    app.extensions["event_listener"] = Listener(wanted, wake_up)


def _resolve(data: dict) -> dict:
    resolved = {}
    for name, value in data.items():
        if hasattr(value, "_sa_instance_state"):
            identity = inspect(value).identity  # known after the flush: no SQL
            value = identity[0] if identity else None
        resolved[name] = value
    return resolved


def _store(session: Session) -> None:
    """before_commit: write the session's pending events to the outbox, in the committing transaction."""
    if session.in_nested_transaction():  # a SAVEPOINT's release: the outer commit stores them
        return
    items = session.info.pop(_PENDING, None)
    if not items or not has_app_context():
        return
    wanted = wanted_types()
    items = [item for item in items if is_wanted(item[0], wanted)]
    if not items:
        return
    from crm.models import OutboundEvent

    session.flush()  # new rows' ids, for the events that name them
    session.execute(insert(OutboundEvent), [{"event_type": kind, "data": _resolve(data), "created_at": at}
                                            for kind, data, at in items])
    after_commit.pending(session, _WAKE, dict)["rows"] = True


def _wake_committed(_collected) -> None:
    if has_app_context():
        wake()


def init_app(app) -> None:
    """Store emitted events before, and wake the listener after, every commit of any session."""
    if not event.contains(Session, "before_commit", _store):
        event.listen(Session, "before_commit", _store)
    after_commit.on_commit(_WAKE, _wake_committed)
    after_commit.on_commit(_PENDING, lambda _collected: None)  # dropped on rollback with the rest
