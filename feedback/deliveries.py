"""Delivery receipts: one XADD to a Redis stream in the request, stamped in batches by the workers.

A relay's delivery receipt only stamps message.delivered_at (no consent effect), and most of
what relays report is deliveries; one UPDATE per delivery in the request was most of an SES
request's time. So a webhook request appends each delivery that names its message (our ref, or
our Message-ID) to the stream (one pipelined round trip for the request), and the workers flush
the stream in batches (flush(): the kick job of the intake and a periodic task), through the
consumer group shared with the tracking flush (crm/streams.py): one UPDATE ... FROM unnest(...)
per batch on PostgreSQL, executemany on SQLite, committed, and only then acknowledged. The
UPDATE stamps only messages not stamped yet, so a batch written twice (a flush dying after its
commit, before its XACK) changes nothing; a flush dying before its commit leaves the entries
pending, to be read again by that consumer or claimed by another (XAUTOCLAIM).

If Redis cannot take them, the request stamps them itself as before (apply.record_deliveries),
so nothing is lost. Redis losing entries not yet flushed (a crash without persistence) loses
only those delivery timestamps: bounces and complaints never pass through here, they are
committed to feedback_intake in PostgreSQL before the relay gets its 200.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from redis import Redis
from sqlalchemy import text

from crm import streams
from crm.extensions import db
from crm.redis_conn import get_redis

log = logging.getLogger(__name__)

STREAM = "crm:feedback:deliveries"
GROUP = "flush"
BATCH = 5000
CLAIM_IDLE_SECONDS = 60


@dataclass
class DeliveryFlush:
    read: int = 0
    stamped: int = 0
    skipped: int = 0  # entries that do not parse

    def __str__(self) -> str:
        return f"{self.read} read, {self.stamped} stamped, {self.skipped} skipped"


def record(pipe, keys: list[dict]) -> None:
    """Add these deliveries (apply.split_deliveries' keys) to a Redis pipeline's stream appends;
    the caller executes it, in one round trip with whatever else it holds."""
    for key in keys:
        pipe.xadd(STREAM, {"m": key["mid"], "c": "" if key["cid"] is None else key["cid"],
                           "s": key["smtp"] or "", "t": key["at"].isoformat()})


def _key(fields) -> dict | None:
    get = streams.fields_of(fields).get
    try:
        mid, cid, at = int(get("m")), get("c") or None, datetime.fromisoformat(get("t"))
        return {"mid": mid, "cid": int(cid) if cid is not None else None, "smtp": get("s") or None, "at": at}
    except (TypeError, ValueError):
        return None


# PostgreSQL: a batch in one statement over arrays. The same conditions as apply._DELIVERED (a
# message sent, not stamped yet, of the campaign the ref names, or with the Message-ID we gave
# it); at most one entry per message (the earliest), sorted by id, so that two flushes lock the
# rows they share in the same order.
_FLUSH_PG = text(
    "UPDATE message SET delivered_at = v.at "
    "FROM unnest(CAST(:mid AS bigint[]), CAST(:cid AS bigint[]), CAST(:smtp AS text[]), "
    "CAST(:at AS timestamptz[])) AS v(mid, cid, smtp, at) "
    "WHERE message.id = v.mid AND message.delivered_at IS NULL "
    "AND message.status IN ('sent', 'bounced', 'unknown') "
    "AND (v.cid IS NULL OR message.campaign_id = v.cid) "
    "AND (v.smtp IS NULL OR message.smtp_message_id = v.smtp)")


def write_batch(entries: list, result: DeliveryFlush) -> None:
    """Stamp one batch's deliveries and commit."""
    from feedback.apply import _DELIVERED_SQLITE

    result.read += len(entries)
    earliest: dict[int, dict] = {}
    for _, fields in entries:
        key = _key(fields)
        if key is None:
            result.skipped += 1
        elif key["mid"] not in earliest or key["at"] < earliest[key["mid"]]["at"]:
            earliest[key["mid"]] = key
    keys = [earliest[mid] for mid in sorted(earliest)]
    if keys:
        if db.engine.dialect.name == "postgresql":
            result.stamped += db.session.execute(
                _FLUSH_PG, {name: [key[name] for key in keys] for name in ("mid", "cid", "smtp", "at")}).rowcount
        else:
            result.stamped += db.session.execute(_DELIVERED_SQLITE, keys).rowcount
    db.session.commit()


def flush(redis: Redis | None = None, *, batch: int = BATCH, consumer: str | None = None,
          claim_idle_seconds: float = CLAIM_IDLE_SECONDS, max_batches: int | None = None) -> DeliveryFlush:
    """Stamp every delivery waiting in the stream; returns what was read and stamped."""
    redis = redis or get_redis()
    result = DeliveryFlush()
    streams.read_batches(redis, STREAM, GROUP, lambda entries: write_batch(entries, result), batch=batch,
                         consumer=consumer, claim_idle_seconds=claim_idle_seconds, max_batches=max_batches)
    return result


def waiting(redis: Redis | None = None) -> int:
    """Deliveries in the stream not flushed yet (for the bench and the list-health page)."""
    return (redis or get_redis()).xlen(STREAM)
