"""Work that must wait for a transaction's commit, and be dropped if it rolls back.

Some facts are told to others only once they are stored for good: a withdrawal to the sending
batches (crm/supporters/withdrawn.py), a signature or an unsubscribe to outbound webhooks
(crm/events.py). Telling them before the commit could announce what a rollback then undoes;
telling them later than the request's answer could let a batch miss a withdrawal. So the
caller puts what it will tell in the session (`pending(session, key)`), and the one listener
here hands it to the action registered for that key right after the commit, in the same
request, or drops it on rollback.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

_ACTIONS: dict[str, Callable[[object], None]] = {}


def on_commit(key: str, action: Callable[[object], None]) -> None:
    """Have `action` receive what was collected under `key` after each commit (registered once per key)."""
    _ACTIONS[key] = action
    if not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)


def pending(session: Session, key: str, factory: Callable[[], object] = list):
    """What `session` holds under `key` for its next commit, made empty by `factory` if none."""
    return session.info.setdefault(key, factory())


# SQLAlchemy fires both hooks for a SAVEPOINT too (begin_nested(): a tag created against a
# racing twin, say). Only the outermost transaction's end counts: what a savepoint's release
# "committed" can still be rolled back with its transaction, and a savepoint rolled back must
# not drop what the rest of the transaction collected.
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    for key, action in _ACTIONS.items():
        collected = session.info.pop(key, None)
        if collected:
            action(collected)


def _after_rollback(session: Session) -> None:
    if session.in_nested_transaction():
        return
    for key in _ACTIONS:
        session.info.pop(key, None)
