"""The flush: tracked hits from the Redis stream into engagement_event and the message rows.

Each run reads batches through the stream's consumer group (crm/streams.py, shared with the
delivery flush): first what this consumer read before and never acknowledged (its previous run
died between reading and committing), then entries another consumer has held for longer than
`claim_idle_seconds` (that worker died), then new entries. A batch is written in one
transaction and acknowledged (XACK, then XDEL to keep the stream short) only after the
commit. A crash before the commit leaves the entries pending, to be written by the next run; a
crash after the commit and before the XACK makes the next run write them again, which
ON CONFLICT (event_key) DO NOTHING turns into nothing. So every hit is recorded once.

First-open and first-click times are the earliest human ones: `LEAST` of what the row has and
what the batch brings, written as a CASE so SQLite and PostgreSQL read it the same way.

The machine rules that go by timing (tracking/machine.py) see more than the batch: the same
messages' clicks already written within the scan window, read back from engagement_event, and
each campaign's earlier opens at delivery, kept in a small Redis hash per campaign until a
prefetch burst is seen (then only the fact that it was). An earlier event that the new ones
show to be a machine's is flagged in the batch's transaction, and its message's first times
are worked out again from the human events left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis import Redis
from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects import sqlite

from crm import streams
from crm.extensions import db
from crm.models import CampaignLink, EngagementEvent, Message
from crm.redis_conn import get_redis
from tracking.machine import PREFETCH_MIN_MESSAGES, SCAN_SECONDS, Hit, flag_machines, near_delivery
from tracking.record import GROUP, STREAM

log = logging.getLogger(__name__)

BATCH = 5000
_EVENTS = EngagementEvent.__table__
CLAIM_IDLE_SECONDS = 60
# Per campaign: the opens flushed within seconds of their delivery while fewer than
# PREFETCH_MIN_MESSAGES messages had one (field: event key, value "message:at ms:sent ms:machine"),
# or the field BURST once they reached it. Kept for a month after the last change.
PREFETCH_KEY = "crm:tracking:prefetch:{}"
BURST = "burst"
PREFETCH_KEEP_SECONDS = 30 * 86400


@dataclass
class FlushResult:
    read: int = 0
    written: int = 0
    machine: int = 0
    skipped: int = 0  # hits whose message no longer exists

    def __str__(self) -> str:
        return f"{self.read} read, {self.written} written ({self.machine} by machines), {self.skipped} skipped"


def consumer_name() -> str:
    """This process's name in the consumer group: a restarted worker is a new consumer."""
    return streams.consumer_name()


def ensure_group(redis: Redis) -> None:
    streams.ensure_group(redis, STREAM, GROUP)


def flush(redis: Redis | None = None, *, batch: int = BATCH, consumer: str | None = None,
          claim_idle_seconds: float = CLAIM_IDLE_SECONDS, max_batches: int | None = None) -> FlushResult:
    """Write every recorded hit to the database; returns what was read and written."""
    redis = redis or get_redis()
    result = FlushResult()
    streams.read_batches(redis, STREAM, GROUP, lambda entries: write_batch(entries, result, redis), batch=batch,
                         consumer=consumer, claim_idle_seconds=claim_idle_seconds, max_batches=max_batches)
    return result


def _hit(entry_id, fields: dict) -> Hit | None:
    """A stream entry as a Hit, or None for one that does not parse (written by something else)."""
    get = streams.fields_of(fields).get
    try:
        index = get("i")
        return Hit(key=entry_id.decode() if isinstance(entry_id, bytes) else entry_id, kind=get("k"),
                   message_id=int(get("m")), campaign_id=int(get("c")), version=int(get("v")),
                   link_index=int(index) if index is not None else None,
                   at=datetime.fromtimestamp(int(get("t")) / 1000, UTC), agent_class=get("a") or "")
    except (TypeError, ValueError):
        return None


def write_batch(entries: list, result: FlushResult, redis: Redis | None = None) -> None:
    """Insert one batch's events and move the messages' first times, in one transaction."""
    redis = redis or get_redis()
    hits = [h for h in (_hit(entry_id, fields) for entry_id, fields in entries) if h and h.kind in ("open", "click")]
    result.read += len(entries)
    message_ids = sorted({h.message_id for h in hits})
    messages = {row.id: row for row in db.session.execute(
        select(Message.id, Message.supporter_id, Message.campaign_id, Message.sent_at)
        .where(Message.id.in_(message_ids))).all()} if message_ids else {}
    known = [h for h in hits if h.message_id in messages and messages[h.message_id].campaign_id == h.campaign_id]
    result.skipped += len(entries) - len(known)
    versions = {(h.campaign_id, h.version) for h in known}
    links = _links(versions)
    counts = {key: len(urls) for key, urls in links.items()}
    sent_at = {mid: _aware(row.sent_at) for mid, row in messages.items()}
    prefetch_campaigns = {h.campaign_id for h in known if near_delivery(h, sent_at)}
    bursts, earlier_opens = _earlier_prefetches(redis, prefetch_campaigns, sent_at)
    earlier = _earlier_clicks(known) + earlier_opens
    was_machine = {h.key for h in earlier if h.is_machine}
    flag_machines(known + earlier, sent_at, counts, bursts)
    at_delivery = [h for h in known + earlier if near_delivery(h, sent_at)]
    bursts |= {c for c in prefetch_campaigns
               if len({h.message_id for h in at_delivery if h.campaign_id == c}) >= PREFETCH_MIN_MESSAGES}
    rows = []
    for hit in known:
        url = ""
        if hit.kind == "click":
            url = links.get((hit.campaign_id, hit.version), {}).get(hit.link_index, "")
        rows.append({"message_id": hit.message_id, "supporter_id": messages[hit.message_id].supporter_id,
                     "campaign_id": hit.campaign_id, "kind": hit.kind, "url": url, "created_at": hit.at,
                     "is_machine": hit.is_machine, "link_index": hit.link_index, "event_key": hit.key})
    newly_machine = [h for h in earlier if h.is_machine and h.key not in was_machine]
    if rows:
        _insert_events(rows)
    _engagement_on_messages(known, newly_machine)
    _flag_earlier(newly_machine)
    db.session.commit()
    _remember_prefetches(redis, [h for h in at_delivery if not h.stored], sent_at, bursts)
    result.written += len(rows)
    result.machine += sum(1 for h in known if h.is_machine)


def _earlier_clicks(hits: list[Hit]) -> list[Hit]:
    """The clicks already written for the batch's clicked messages within the scan window of its clicks."""
    clicks = [h for h in hits if h.kind == "click"]
    if not clicks:
        return []
    keys = {h.key for h in hits}
    version = {h.message_id: h.version for h in clicks}
    window = timedelta(seconds=SCAN_SECONDS)
    rows = db.session.execute(
        select(_EVENTS.c.event_key, _EVENTS.c.message_id, _EVENTS.c.campaign_id, _EVENTS.c.link_index,
               _EVENTS.c.created_at, _EVENTS.c.is_machine)
        .where(_EVENTS.c.kind == "click", _EVENTS.c.message_id.in_(sorted(version)),
               _EVENTS.c.created_at >= min(h.at for h in clicks) - window,
               _EVENTS.c.created_at <= max(h.at for h in clicks) + window,
               _EVENTS.c.event_key.is_not(None))).all()
    return [Hit(key=row.event_key, kind="click", message_id=row.message_id, campaign_id=row.campaign_id,
                version=version[row.message_id], link_index=row.link_index, at=_aware(row.created_at),
                agent_class="", is_machine=bool(row.is_machine), stored=True)
            for row in rows if row.event_key not in keys]


def _earlier_prefetches(redis: Redis, campaigns: set[int],
                        sent_at: dict[int, datetime | None]) -> tuple[set[int], list[Hit]]:
    """(campaigns with a burst seen, earlier opens at delivery of the others), from Redis.

    Adds the earlier opens' delivery times to `sent_at`, so the rules see them at delivery too."""
    if not campaigns:
        return set(), []
    pipe = redis.pipeline(transaction=False)
    ordered = sorted(campaigns)
    for campaign_id in ordered:
        pipe.hgetall(PREFETCH_KEY.format(campaign_id))
    bursts: set[int] = set()
    earlier: list[Hit] = []
    for campaign_id, fields in zip(ordered, pipe.execute(), strict=True):
        for field, value in (fields or {}).items():
            field = field.decode() if isinstance(field, bytes) else field
            if field == BURST:
                bursts.add(campaign_id)
                continue
            value = value.decode() if isinstance(value, bytes) else value
            try:
                message_id, at_ms, sent_ms, machine = (int(part) for part in value.split(":"))
            except ValueError:
                continue
            sent_at.setdefault(message_id, datetime.fromtimestamp(sent_ms / 1000, UTC))
            earlier.append(Hit(key=field, kind="open", message_id=message_id, campaign_id=campaign_id, version=0,
                               link_index=None, at=datetime.fromtimestamp(at_ms / 1000, UTC), agent_class="",
                               is_machine=bool(machine), stored=True))
    return bursts, earlier


def _remember_prefetches(redis: Redis, hits: list[Hit], sent_at: dict[int, datetime | None],
                         bursts: set[int]) -> None:
    """After the commit: note the batch's opens at delivery, or that the campaign's burst is seen.

    Losing this (Redis down, a crash before it) only narrows what the next batch is judged with."""
    by_campaign: dict[int, list[Hit]] = {}
    for hit in hits:
        by_campaign.setdefault(hit.campaign_id, []).append(hit)
    if not by_campaign:
        return
    pipe = redis.pipeline(transaction=False)
    for campaign_id, found in by_campaign.items():
        key = PREFETCH_KEY.format(campaign_id)
        if campaign_id in bursts:
            pipe.delete(key)
            pipe.hset(key, BURST, "1")
        else:
            pipe.hset(key, mapping={h.key: f"{h.message_id}:{int(h.at.timestamp() * 1000)}:"
                                           f"{int(sent_at[h.message_id].timestamp() * 1000)}:{int(h.is_machine)}"
                                    for h in found})
        pipe.expire(key, PREFETCH_KEEP_SECONDS)
    pipe.execute()


def _flag_earlier(hits: list[Hit]) -> None:
    """Flag earlier events the new ones showed to be a machine's, and work their messages' first
    times out again from the human events that are left."""
    if not hits:
        return
    db.session.execute(update(_EVENTS).where(_EVENTS.c.event_key.in_(sorted(h.key for h in hits)))
                       .values(is_machine=True))
    events = _EVENTS.alias("e")
    messages = Message.__table__
    for kind, column in (("open", "opened_at"), ("click", "clicked_at")):
        ids = sorted({h.message_id for h in hits if h.kind == kind})
        if not ids:
            continue
        earliest = (select(func.min(events.c.created_at))
                    .where(events.c.message_id == messages.c.id, events.c.kind == kind,
                           events.c.is_machine.is_(False)).scalar_subquery())
        db.session.execute(update(messages).where(messages.c.id.in_(ids)).values({column: earliest}))


# PostgreSQL: the batch as one INSERT ... SELECT FROM unnest(arrays), one array per column. The
# ORM's bulk insert sent a statement per two rows (1,400 rows/s in the tracking bench) and the
# driver's executemany one per row in pipeline mode (about 12,000 rows/s); this is one statement
# and one round trip per batch. ON CONFLICT on the stream entry id: a batch written twice adds nothing.
_INSERT_PG = text(
    "INSERT INTO engagement_event (message_id, supporter_id, campaign_id, kind, url, created_at, is_machine, "
    "link_index, event_key) "
    "SELECT * FROM unnest(CAST(:message_id AS integer[]), CAST(:supporter_id AS integer[]), "
    "CAST(:campaign_id AS integer[]), CAST(:kind AS text[]), CAST(:url AS text[]), "
    "CAST(:created_at AS timestamptz[]), CAST(:is_machine AS boolean[]), CAST(:link_index AS integer[]), "
    "CAST(:event_key AS text[])) "
    "ON CONFLICT (event_key) DO NOTHING")
_COLUMNS = ("message_id", "supporter_id", "campaign_id", "kind", "url", "created_at", "is_machine", "link_index",
            "event_key")


def _insert_events(rows: list[dict]) -> None:
    if db.engine.dialect.name == "postgresql":
        db.session.execute(_INSERT_PG, {name: [row[name] for row in rows] for name in _COLUMNS})
    else:  # SQLite: executemany in the one transaction
        db.session.execute(sqlite.insert(_EVENTS).on_conflict_do_nothing(index_elements=["event_key"]), rows)


def _links(versions: set[tuple[int, int]]) -> dict[tuple[int, int], dict[int, str]]:
    out: dict[tuple[int, int], dict[int, str]] = {key: {} for key in versions}
    for campaign_id, version in versions:
        for position, url in db.session.execute(
                select(CampaignLink.position, CampaignLink.url)
                .where(CampaignLink.campaign_id == campaign_id, CampaignLink.version == version)):
            out[(campaign_id, version)][position] = url
    return out


# A message's engagement on its own row: the earliest human open and click, moved only earlier,
# and whether a machine opened or clicked it, only ever set. Concurrent flushes (two workers)
# may commit in either order and the row still ends at the minimum and the OR. Runs after the
# inserts, in their transaction; a batch written twice changes nothing the second time.
# PostgreSQL: one UPDATE per batch, joined to the batch's values per message as arrays (LEAST
# ignores NULL, so a first time is set and an earlier one kept), touching only the rows it
# changes, in id order, so two flushes lock shared rows in the same order. An executemany of
# one UPDATE per message cost about 0.8 ms a row under the tracking bench's load (1,200 rows/s);
# this one statement does a batch's few thousand in a few milliseconds per hundred.
_FIRST_PG = text(
    "UPDATE message SET opened_at = LEAST(opened_at, v.open_at), clicked_at = LEAST(clicked_at, v.click_at), "
    "opened_by_machine = opened_by_machine OR v.open_machine, "
    "clicked_by_machine = clicked_by_machine OR v.click_machine "
    "FROM unnest(CAST(:ids AS integer[]), CAST(:open_at AS timestamptz[]), CAST(:click_at AS timestamptz[]), "
    "CAST(:open_machine AS boolean[]), CAST(:click_machine AS boolean[])) "
    "AS v(id, open_at, click_at, open_machine, click_machine) "
    "WHERE message.id = v.id AND ((opened_at IS NULL AND v.open_at IS NOT NULL) OR opened_at > v.open_at "
    "OR (clicked_at IS NULL AND v.click_at IS NOT NULL) OR clicked_at > v.click_at "
    "OR (v.open_machine AND NOT opened_by_machine) OR (v.click_machine AND NOT clicked_by_machine))")
# SQLite: the same rule per row (executemany in one transaction is fast there); its MIN() of a
# NULL is NULL, hence the CASEs.
_FIRST = text(
    "UPDATE message SET "
    "opened_at = CASE WHEN :open_at IS NOT NULL AND (opened_at IS NULL OR opened_at > :open_at) THEN :open_at "
    "ELSE opened_at END, "
    "clicked_at = CASE WHEN :click_at IS NOT NULL AND (clicked_at IS NULL OR clicked_at > :click_at) THEN :click_at "
    "ELSE clicked_at END, "
    "opened_by_machine = opened_by_machine OR :open_machine, clicked_by_machine = clicked_by_machine OR :click_machine "
    "WHERE id = :mid").bindparams(bindparam("open_at", type_=db.DateTime(timezone=True)),
                                  bindparam("click_at", type_=db.DateTime(timezone=True)))


@dataclass
class _Engaged:
    open_at: datetime | None = None
    click_at: datetime | None = None
    open_machine: bool = False
    click_machine: bool = False


def _engagement_on_messages(hits: list[Hit], newly_machine: list[Hit] = ()) -> None:
    """Move the batch's messages' first human times and set their machine flags (one statement).

    `newly_machine` are earlier events the batch showed to be a machine's: their flags are set
    here, their first times worked out again by _flag_earlier."""
    engaged: dict[int, _Engaged] = {}
    for hit in hits:
        row = engaged.setdefault(hit.message_id, _Engaged())
        if hit.is_machine:
            setattr(row, f"{hit.kind}_machine", True)
        else:
            first = getattr(row, f"{hit.kind}_at")
            if first is None or hit.at < first:
                setattr(row, f"{hit.kind}_at", hit.at)
    for hit in newly_machine:
        setattr(engaged.setdefault(hit.message_id, _Engaged()), f"{hit.kind}_machine", True)
    if not engaged:
        return
    ordered = sorted(engaged.items())  # a fixed order: two flushes lock the same rows in the same order
    if db.engine.dialect.name == "postgresql":
        db.session.execute(_FIRST_PG, {"ids": [mid for mid, _ in ordered],
                                       **{name: [getattr(row, name) for _, row in ordered]
                                          for name in ("open_at", "click_at", "open_machine", "click_machine")}})
    else:
        db.session.execute(_FIRST, [{"mid": mid, **vars(row)} for mid, row in ordered])


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
