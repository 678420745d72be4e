"""Withdrawal notices: a supporter who stops being mailable is announced to every sending batch.

A batch re-reads its chunk's supporters when it claims the chunk (campaigns/queries.py), then
spends up to a second or so sending it. An unsubscribe that lands in that second would not be
seen by that read, so every commit that withdraws consent (an opt-out, a bounce, a complaint,
a suppression) publishes the supporter's id on one Redis channel, after the commit and before
the request that made it answers. Each batch subscribes before its first claim and checks what
arrived just before it hands each message to the relay (WithdrawalWatch.is_withdrawn): a
non-blocking read of its own socket, a few microseconds, against a database round trip per
message that would cost the send loop a tenth of its speed.

Why this closes the window: the notice is published after the withdrawal commits, and the
batch subscribed before its claim read the supporter. Either that read already saw the
withdrawal, or the notice was published while the batch listened. Only a message whose
content was already on its way to the relay when the notice arrived still goes out.

Pub/sub delivers only to connected listeners. A batch whose subscription broke (Redis
restarted, the connection dropped) may have missed notices, so until its subscription is
confirmed again it asks the database about each message, and once it is back it re-reads
the rest of its chunk in one query. A notice that could not be published (Redis unreachable
from the web process) is logged; the batches' next claim reads the database anyway.
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable, Iterable

from redis import ConnectionPool, Redis, RedisError
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.retry import Retry
from sqlalchemy.orm import Session

from crm import after_commit

log = logging.getLogger(__name__)

CHANNEL = "crm:consent:withdrawn"
_PENDING = "crm.withdrawn"  # Session.info key: supporter ids to announce after commit
_RECONNECT_EVERY = 1.0  # seconds between attempts to listen again while Redis is away


def channel(redis: Redis) -> str:
    """The channel for this Redis database. Pub/sub ignores database numbers (a message reaches
    every subscriber on the server), so apps sharing a server on different databases, as tests
    and small hosts do, would otherwise hear each other's supporter ids."""
    return f"{CHANNEL}:{redis.connection_pool.connection_kwargs.get('db', 0)}"


def announce(session: Session, supporter_ids: Iterable[int | None]) -> None:
    """Announce these supporters as no longer mailable once `session` commits (never before)."""
    after_commit.pending(session, _PENDING, set).update(i for i in supporter_ids if i is not None)


def _publish(ids: set[int]) -> None:
    from crm.redis_conn import get_redis

    try:
        redis = get_redis()
        pipe = redis.pipeline(transaction=False)
        for supporter_id in sorted(ids):
            pipe.publish(channel(redis), str(supporter_id))
        pipe.execute()
    except RedisError as exc:
        log.warning("could not announce %s withdrawal(s) to sending batches (%s); "
                    "they will see them at their next claim", len(ids), type(exc).__name__)


def init_app(app) -> None:
    """Publish announced withdrawals after every commit of any session."""
    after_commit.on_commit(_PENDING, _publish)


class _ListeningPubSub(PubSub):
    """redis-py's PubSub, telling its owner when it reconnects: notices may have been missed."""

    on_reconnect: Callable[[], None] = staticmethod(lambda: None)

    def on_connect(self, connection) -> None:
        self.on_reconnect()
        super().on_connect(connection)


class WithdrawalWatch:
    """One batch's ear on the withdrawal channel.

    `is_withdrawn(supporter_id)` answers from the notices received so far while the
    subscription has been unbroken since `generation` was read; otherwise it returns None,
    and the caller must ask the database.
    """

    def __init__(self, redis: Redis, confirm_timeout: float = 2.0):
        self.withdrawn: set[int] = set()
        self.generation = 0  # bumped on every confirmed (re)subscription
        self.listening = False
        self._next_attempt = 0.0
        self._polled = None  # the socket _poller watches
        self._poller: select.poll | None = None
        # A pool of its own, without redis-py's retries: when Redis is away, a poll must fail at
        # once (the database answers instead), not stall the send loop for seconds of backoff.
        pool = redis.connection_pool
        self._pool = ConnectionPool(connection_class=pool.connection_class, **{
            **pool.connection_kwargs, "retry": Retry(NoBackoff(), 0), "socket_connect_timeout": 1.0})
        self._pubsub = _ListeningPubSub(self._pool)
        self._pubsub.on_reconnect = self._lost
        try:
            self._pubsub.subscribe(channel(redis))
            deadline = time.monotonic() + confirm_timeout
            while not self.listening and time.monotonic() < deadline:
                self._receive(self._pubsub.get_message(timeout=max(0.0, deadline - time.monotonic())))
        except RedisError:
            self._lost()

    def _lost(self) -> None:
        self.listening = False

    def _receive(self, message: dict | None) -> None:
        if message is None:
            return
        if message["type"] == "subscribe":
            self.generation += 1
            self.listening = True
        elif message["type"] == "message":
            try:
                self.withdrawn.add(int(message["data"]))
            except ValueError:
                log.warning("ignored a malformed withdrawal notice")

    def _nothing_waiting(self) -> bool:
        """Whether our socket certainly holds nothing to read: one poll(2) call, where redis-py's
        get_message costs several times as much, for every message sent. After a full drain
        redis-py's reader buffer is empty, so the socket alone tells. Unsure means False."""
        connection = self._pubsub.connection
        sock = getattr(connection, "_sock", None)
        if sock is None:
            return False
        if sock is not self._polled:
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN | select.POLLPRI)
            self._polled = sock
        return not self._poller.poll(0)

    def poll(self) -> None:
        """Take in every notice waiting on the socket, without blocking."""
        now = time.monotonic()
        if not self.listening and now < self._next_attempt:
            return  # Redis is away: do not stall the send loop on reconnecting for every message
        if self.listening and self._nothing_waiting():
            return
        try:
            while (message := self._pubsub.get_message(timeout=0.0)) is not None:
                self._receive(message)
        except (RedisError, OSError):
            self._lost()
            self._next_attempt = now + _RECONNECT_EVERY

    def is_withdrawn(self, supporter_id: int | None, since_generation: int) -> bool | None:
        """True if announced as withdrawn, False if certainly not, None if notices may be missing."""
        self.poll()
        if supporter_id in self.withdrawn:
            return True
        if not self.listening or self.generation != since_generation:
            return None
        return False

    def close(self) -> None:
        try:
            self._pubsub.close()
        except (RedisError, OSError):
            pass
        self._pool.disconnect()
