"""From a committed fact to deliveries: the cheap push in the request, the dispatch job in a worker."""

from __future__ import annotations

import json
import logging
import threading
import time

from flask import current_app
from redis import RedisError
from rq import Retry
from sqlalchemy import select

from crm.extensions import db
from crm.models import WebhookDelivery, WebhookEndpoint
from crm.queues import DELIVER_WEBHOOK, DISPATCH_WEBHOOKS, queue
from crm.redis_conn import get_redis
from outbound.signing import new_webhook_id

log = logging.getLogger(__name__)

EVENTS_KEY = "crm:outbound:events"  # a list of JSON events waiting for the dispatch job
FLAG_KEY = "crm:outbound:dispatch-queued"  # set while a dispatch job is queued
WANTED_KEY = "crm:outbound:wanted"  # comma-separated event types some active endpoint wants
FLAG_SECONDS = 300  # a lost dispatch job holds events back at most this long
BATCH = 200
WANTED_SECONDS = 2.0

_lock = threading.Lock()
_wanted: dict[str, tuple[float, frozenset[str] | None]] = {}


def wanted_types() -> frozenset[str] | None:
    """The event types some active endpoint subscribes to, or None when not known (push everything).

    Read from Redis (WANTED_KEY) at most every WANTED_SECONDS per process, never from the
    database: this runs in the request that made the fact, after its commit, and the signing
    fast path is one SQL statement. The key is written whenever endpoints change and by every
    dispatch job, so after Redis lost it the first events are pushed anyway and the job that
    drains them writes it again."""
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


def push(events: list[dict]) -> None:
    """crm.events sink: push the events someone wants to Redis, and queue a dispatch job if none is queued.

    One pipelined round trip in the request that made the fact; a Redis outage loses these
    events (logged by count, never with their data) and never fails the request."""
    try:
        wanted = wanted_types()
        items = [json.dumps(e, separators=(",", ":")) for e in events if wanted is None or e["type"] in wanted]
        if not items:
            return
        redis = get_redis()
        pipe = redis.pipeline(transaction=False)
        pipe.rpush(EVENTS_KEY, *items)
        pipe.set(FLAG_KEY, "1", nx=True, ex=FLAG_SECONDS)
        queued_now = pipe.execute()[-1]
        if queued_now:
            queue("default").enqueue(DISPATCH_WEBHOOKS, result_ttl=60)
    except (RedisError, OSError) as exc:
        log.warning("outbound webhooks: %s event(s) not queued (%s)", len(events), type(exc).__name__)


def retry_policy() -> Retry | None:
    schedule = list(current_app.config["WEBHOOK_RETRY_SECONDS"])
    return Retry(max=len(schedule), interval=schedule) if schedule else None


def enqueue_delivery(delivery_id: int) -> None:
    queue("default").enqueue(DELIVER_WEBHOOK, delivery_id, retry=retry_policy(), result_ttl=3600,
                             failure_ttl=7 * 24 * 3600)


def dispatch() -> int:
    """Make a delivery per (event, subscribed endpoint) for every pushed event; queue them; return the count."""
    redis = get_redis()
    redis.delete(FLAG_KEY)  # first: an event pushed from now on queues another dispatch
    store_wanted()
    made = 0
    while True:
        raw = redis.lpop(EVENTS_KEY, BATCH)
        if not raw:
            return made
        endpoints = db.session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.is_active.is_(True))).all()
        deliveries = []
        for item in raw:
            event = json.loads(item)
            body = json.dumps({"type": event["type"], "timestamp": event["timestamp"], "data": event["data"]},
                              separators=(",", ":"), sort_keys=True)
            for endpoint in endpoints:
                if event["type"] in (endpoint.events or ()):
                    deliveries.append(WebhookDelivery(endpoint_id=endpoint.id, webhook_id=new_webhook_id(),
                                                      event_type=event["type"], body=body))
        db.session.add_all(deliveries)
        db.session.commit()
        for delivery in deliveries:
            enqueue_delivery(delivery.id)
        made += len(deliveries)
