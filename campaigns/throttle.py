"""What senders share through Redis: the global send rate, relay connection slots, the campaign's
run state (pause/cancel seen within a second by every worker) and batch heartbeats."""

from __future__ import annotations

import time
from collections.abc import Callable

from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter
from redis import Redis

KEY_PREFIX = "crm:send"


def state_key(campaign_id: int) -> str:
    return f"{KEY_PREFIX}:campaign:{campaign_id}:state"


def heartbeat_key(holder: str) -> str:
    return f"{KEY_PREFIX}:heartbeat:{holder}"


def set_campaign_state(redis: Redis, campaign_id: int, status: str) -> None:
    """Publish the campaign's status for workers (kept a day after the last change)."""
    redis.set(state_key(campaign_id), status, ex=24 * 3600)


class SendRate:
    """Messages per second across every worker: fixed one-second windows counted in Redis."""

    def __init__(self, redis: Redis, per_second: float, sleep: Callable[[float], None] = time.sleep):
        storage = RedisStorage("redis://", connection_pool=redis.connection_pool)
        self._limiter = FixedWindowRateLimiter(storage)
        if per_second >= 1:
            self._item = RateLimitItemPerSecond(int(per_second))
        else:  # slower than one a second: count per minute instead
            self._item = RateLimitItemPerMinute(max(1, int(per_second * 60)))
        self._sleep = sleep

    @property
    def block(self) -> int:
        """Tokens worth taking at once: a tenth of a second's allowance (one Redis call per block)."""
        return max(1, self._item.amount // (10 * self._item.multiples * self._item.GRANULARITY.seconds))

    def acquire(self, count: int = 1, on_wait: Callable[[], None] | None = None) -> None:
        """Block until this process may send `count` more messages."""
        while not self._limiter.hit(self._item, "campaign-send", cost=count):
            reset = self._limiter.get_window_stats(self._item, "campaign-send").reset_time
            if on_wait:
                on_wait()
            self._sleep(min(1.0, max(0.005, reset - time.time())))


# Acquire a slot atomically: drop expired leases, renew ours, or take a free one.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  return 1
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  redis.call('EXPIRE', KEYS[1], 86400)
  return 1
end
return 0
"""


class RelaySlots:
    """At most `limit` open connections to one relay across all workers.

    A lease expires after `ttl` seconds unless renewed, so a worker killed while holding a
    slot frees it without anyone's help.
    """

    def __init__(self, redis: Redis, relay: str, limit: int, ttl: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.redis, self.key, self.limit, self.ttl = redis, f"{KEY_PREFIX}:relay:{relay}", limit, ttl
        self._script = redis.register_script(_ACQUIRE)
        self._sleep = sleep

    def try_acquire(self, holder: str) -> bool:
        now = time.time()
        return bool(self._script(keys=[self.key], args=[now, now + self.ttl, holder, self.limit]))

    def acquire(self, holder: str, on_wait: Callable[[], None] | None = None) -> None:
        while not self.try_acquire(holder):
            if on_wait:
                on_wait()
            self._sleep(0.2)

    renew = try_acquire

    def release(self, holder: str) -> None:
        self.redis.zrem(self.key, holder)


class Heartbeat:
    """A batch's sign of life: rows it claimed are only declared `unknown` once this expires.

    Kept under the batch's holder id (its claims) and its RQ job id (the job is at work)."""

    def __init__(self, redis: Redis, holders: list[str | None], ttl: int):
        self.redis, self.ttl = redis, ttl
        self.keys = [heartbeat_key(h) for h in holders if h]
        self._last = 0.0

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last > 1.0:
            pipe = self.redis.pipeline(transaction=False)
            for key in self.keys:
                pipe.set(key, "1", ex=self.ttl)
            pipe.execute()
            self._last = now

    def stop(self) -> None:
        if self.keys:
            self.redis.delete(*self.keys)


def is_alive(redis: Redis, holder: str) -> bool:
    return bool(redis.exists(heartbeat_key(holder)))


class RunState:
    """The campaign's status as workers see it, read from Redis at most every `every` seconds."""

    def __init__(self, redis: Redis, campaign_id: int, every: float = 0.25):
        self.redis, self.key, self.every = redis, state_key(campaign_id), every
        self._checked = 0.0
        self._value = "sending"

    def current(self) -> str:
        now = time.monotonic()
        if now - self._checked >= self.every:
            raw = self.redis.get(self.key)
            self._value = raw.decode() if isinstance(raw, bytes) else (raw or "sending")
            self._checked = now
        return self._value

    def stopped(self) -> bool:
        return self.current() != "sending"

    def refresh(self) -> None:
        """Forget the cached value: the next check reads Redis."""
        self._checked = 0.0


# Push outcomes onto the window, keep its newest `size`, and count failures server-side, so one
# round trip returns two integers however large the window.
_RECORD_OUTCOMES = """
redis.call('LPUSH', KEYS[1], unpack(ARGV, 2))
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[1]) - 1)
redis.call('EXPIRE', KEYS[1], 604800)
local window = redis.call('LRANGE', KEYS[1], 0, -1)
local failed = 0
for _, v in ipairs(window) do if v == '1' then failed = failed + 1 end end
return {failed, #window}
"""


class ErrorWindow:
    """The outcome of the campaign's last `size` messages; trips when failures reach `rate`."""

    def __init__(self, redis: Redis, campaign_id: int, size: int, rate: float, minimum: int = 50):
        self.redis, self.key = redis, f"{KEY_PREFIX}:campaign:{campaign_id}:outcomes"
        self.size, self.rate, self.minimum = size, rate, minimum
        self._script = redis.register_script(_RECORD_OUTCOMES)

    def record(self, outcomes: list[bool]) -> tuple[int, int]:
        """Push outcomes (True = failed); return (failures, window length)."""
        if not outcomes:
            return 0, 0
        failed, length = self._script(keys=[self.key],
                                      args=[self.size, *("1" if bad else "0" for bad in outcomes)])
        return int(failed), int(length)

    def tripped(self, failures: int, length: int) -> bool:
        return length >= self.minimum and failures >= self.rate * length

    def clear(self) -> None:
        self.redis.delete(self.key)
