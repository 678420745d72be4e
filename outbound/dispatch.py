"""From a committed fact to deliveries: the outbox row with the fact, the dispatch job in a worker."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, timedelta

from flask import current_app
from redis import RedisError
from rq import Retry
from sqlalchemy import delete, select

from crm.extensions import db
from crm.models import OutboundEvent, WebhookDelivery, WebhookEndpoint, utcnow
from crm.queues import DELIVER_WEBHOOK, DISPATCH_WEBHOOKS, queue
from crm.redis_conn import get_redis
from outbound.signing import new_webhook_id

log = logging.getLogger(__name__)

FLAG_KEY = "crm:outbound:dispatch-queued"  # set while a dispatch job is queued
WANTED_KEY = "crm:outbound:wanted"  # comma-separated event types some active endpoint wants
FLAG_SECONDS = 300  # a lost dispatch job holds events back at most this long
BATCH = 200
UNTRIED_SECONDS = 120.0  # a delivery not tried and not queued after this long lost its job
WANTED_SECONDS = 2.0

_lock = threading.Lock()
_wanted: dict[str, tuple[float, frozenset[str] | None]] = {}


def wanted_types() -> frozenset[str] | None:
    """The event types some active endpoint subscribes to, or None when not known (push everything).

    Read from Redis (WANTED_KEY) at most every WANTED_SECONDS per process, never from the
    database: this runs in the transaction that makes the fact, and the signing fast path is
    one SQL statement. The key is written whenever endpoints change and by every dispatch job,
    so after Redis lost it the first events are stored anyway and the job that drains them
    writes it again."""
    now = time.monotonic()
    with _lock:
        hit = _wanted.get("types")
    if hit is not None and now - hit[0] < WANTED_SECONDS:
        return hit[1]
    raw = get_redis().get(WANTED_KEY)
    types = None if raw is None else frozenset(t for t in raw.decode().split(",") if t)
    with _lock:
        _wanted["types"] = (now, types)
    return types


def store_wanted() -> frozenset[str]:
    """Read the active endpoints' event types from the database and publish them in Redis."""
    rows = db.session.execute(select(WebhookEndpoint.events).where(WebhookEndpoint.is_active.is_(True))).all()
    types = frozenset(kind for (kinds,) in rows for kind in (kinds or ()))
    get_redis().set(WANTED_KEY, ",".join(sorted(types)))
    forget_wanted()
    return types


def forget_wanted() -> None:
    """Endpoints changed in this process: read the wanted types afresh on the next event."""
    with _lock:
        _wanted.clear()


def wake() -> None:
    """crm.events listener: outbox rows were committed; queue a dispatch job unless one is queued.

    One pipelined round trip after the commit that stored them. A Redis outage leaves the rows
    in the outbox (logged, never with their data) for the periodic dispatch, and never fails
    the request."""
    try:
        if get_redis().set(FLAG_KEY, "1", nx=True, ex=FLAG_SECONDS):
            queue("default").enqueue(DISPATCH_WEBHOOKS, result_ttl=60)
    except (RedisError, OSError) as exc:
        log.warning("outbound webhooks: dispatch not queued (%s); the periodic dispatch takes the events",
                    type(exc).__name__)


def retry_policy() -> Retry | None:
    schedule = list(current_app.config["WEBHOOK_RETRY_SECONDS"])
    return Retry(max=len(schedule), interval=schedule) if schedule else None


def _job_id(delivery_id: int) -> str:
    return f"webhook-delivery-{delivery_id}"


def enqueue_delivery(delivery_id: int) -> None:
    queue("default").enqueue(DELIVER_WEBHOOK, delivery_id, job_id=_job_id(delivery_id), retry=retry_policy(),
                             result_ttl=3600, failure_ttl=7 * 24 * 3600)


def _timestamp(at) -> str:
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Rows the dispatch job takes from the outbox, in one statement that also deletes them: the
# delete and the deliveries it makes commit together, so a job that dies before its commit
# leaves the rows for the next one, and a row is never turned into deliveries twice. FOR UPDATE
# SKIP LOCKED on PostgreSQL: two dispatch jobs at once take different rows (SQLite has one
# writer at a time anyway). The subquery reads the primary key in order: an index range scan.
def _take_events(limit: int) -> list:
    oldest = select(OutboundEvent.id).order_by(OutboundEvent.id).limit(limit)
    if db.session.get_bind().dialect.name == "postgresql":
        oldest = oldest.with_for_update(skip_locked=True)
    taken = db.session.execute(delete(OutboundEvent).where(OutboundEvent.id.in_(oldest.scalar_subquery()))
                               .returning(OutboundEvent.id, OutboundEvent.event_type, OutboundEvent.data,
                                          OutboundEvent.created_at))
    return sorted(taken.all(), key=lambda row: row.id)


def requeue_untried(older_than: float | None = None) -> int:
    """Queue again the deliveries made but never queued (their dispatch job died in between); the count.

    A delivery not tried yet whose job RQ does not know, made more than `older_than` seconds
    ago (a dispatch job running now may be about to queue its own)."""
    from rq.job import Job

    cutoff = utcnow() - timedelta(seconds=UNTRIED_SECONDS if older_than is None else older_than)
    ids = db.session.scalars(select(WebhookDelivery.id).where(
        WebhookDelivery.status == "pending", WebhookDelivery.attempts == 0, WebhookDelivery.created_at < cutoff,
    ).order_by(WebhookDelivery.id).limit(1000)).all()
    redis = get_redis()
    lost = [delivery_id for delivery_id in ids if not Job.exists(_job_id(delivery_id), connection=redis)]
    for delivery_id in lost:
        enqueue_delivery(delivery_id)
    if lost:
        log.warning("outbound webhooks: %s delivery job(s) were never queued; queued now", len(lost))
    return len(lost)


def dispatch() -> int:
    """Make a delivery per (event, subscribed endpoint) for every stored event; queue them; return the count."""
    redis = get_redis()
    redis.delete(FLAG_KEY)  # first: an event stored from now on queues another dispatch
    store_wanted()
    db.session.commit()
    requeue_untried()
    made = 0
    while True:
        taken = _take_events(BATCH)
        if not taken:
            db.session.rollback()
            return made
        endpoints = db.session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.is_active.is_(True))).all()
        deliveries = []
        for row in taken:
            body = json.dumps({"type": row.event_type, "timestamp": _timestamp(row.created_at), "data": row.data},
                              separators=(",", ":"), sort_keys=True)
            for endpoint in endpoints:
                if row.event_type in (endpoint.events or ()):
                    deliveries.append(WebhookDelivery(endpoint_id=endpoint.id, webhook_id=new_webhook_id(),
                                                      event_type=row.event_type, body=body))
        db.session.add_all(deliveries)
        db.session.commit()
        # A job that dies here leaves committed deliveries without their jobs: the next dispatch
        # finds them (requeue_untried), as each delivery's job id is its own.
        for delivery in deliveries:
            enqueue_delivery(delivery.id)
        made += len(deliveries)
