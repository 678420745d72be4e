"""Reading a Redis stream through a consumer group in batches, each acknowledged after its commit.

Shared by the tracking flush (opens and clicks) and the delivery flush (relays' delivery
receipts). Each run reads batches: first what this consumer read before and never acknowledged
(its previous run died between reading and committing), then entries another consumer has held
for longer than `claim_idle_seconds` (that worker died: XAUTOCLAIM), then new entries. `write`
commits a batch; only then is it acknowledged (XACK, then XDEL to keep the stream short). A crash
before the commit leaves the entries pending for the next run; a crash after the commit and
before the XACK makes the next run write them again, so `write` must be idempotent.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from redis import Redis
from redis.exceptions import ResponseError


def consumer_name() -> str:
    """This process's name in a consumer group: a restarted worker is a new consumer."""
    return f"{socket.gethostname()}:{os.getpid()}"


def ensure_group(redis: Redis, stream: str, group: str) -> None:
    try:
        redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _entries(reply) -> list:
    if not reply:
        return []
    # A pending entry deleted meanwhile comes back without fields: kept, so it is acknowledged (and skipped).
    return list(reply[0][1])


def read_batches(redis: Redis, stream: str, group: str, write: Callable[[list], None], *, batch: int,
                 consumer: str | None = None, claim_idle_seconds: float, max_batches: int | None = None) -> int:
    """Hand the stream's entries to `write` a batch at a time, acknowledging each after; returns batches done."""
    consumer = consumer or consumer_name()
    ensure_group(redis, stream, group)
    batches = 0
    own_pending = True
    claim_from = "0-0"
    while max_batches is None or batches < max_batches:
        entries: list = []
        if own_pending:
            entries = _entries(redis.xreadgroup(group, consumer, {stream: "0"}, count=batch))
            own_pending = bool(entries)
        if not entries and claim_from is not None:
            reply = redis.xautoclaim(stream, group, consumer, int(claim_idle_seconds * 1000),
                                     start_id=claim_from, count=batch)
            next_id, entries = reply[0], list(reply[1])
            next_id = next_id.decode() if isinstance(next_id, bytes) else next_id
            claim_from = None if next_id == "0-0" else next_id
        if not entries:
            entries = _entries(redis.xreadgroup(group, consumer, {stream: ">"}, count=batch))
        if not entries:
            break
        write(entries)
        ids = [entry_id for entry_id, _ in entries]
        pipe = redis.pipeline(transaction=False)
        pipe.xack(stream, group, *ids)
        pipe.xdel(stream, *ids)
        pipe.execute()
        batches += 1
    return batches


def fields_of(fields: dict | None) -> dict[str, str]:
    """A stream entry's fields as str: str."""
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in (fields or {}).items()}
