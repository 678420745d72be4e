"""Recording a hit: one XADD to a Redis stream, the only work the pixel and the redirect do besides answering.

A stream rather than a list: the flush reads it through a consumer group, so an entry read but
not yet written to the database stays pending (XPENDING) under the consumer that read it, and
is read again by that consumer's next run or claimed by another (XAUTOCLAIM) if it died. The
entry id doubles as the event's idempotency key in the database.
"""

from __future__ import annotations

import time

from redis import Redis

STREAM = "crm:tracking:events"
GROUP = "flush"


def record_hit(redis: Redis, kind: str, message_id: int, campaign_id: int, version: int,
               agent_class: str, link_index: int | None = None) -> str:
    """Append one open or click; returns the stream entry id."""
    fields = {"k": kind, "m": message_id, "c": campaign_id, "v": version,
              "t": int(time.time() * 1000), "a": agent_class}
    if link_index is not None:
        fields["i"] = link_index
    entry = redis.xadd(STREAM, fields)
    return entry.decode() if isinstance(entry, bytes) else entry
