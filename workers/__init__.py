"""RQ plumbing: queue names, enqueueing, and the app that job functions run in.

Job functions take ids or plain values, open their own app context, and are passed to
enqueue() as functions, never dotted strings.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, current_app
from rq import Queue

QUEUES = ("default", "mail")  # declared once; workers listen on all of them, in this order

_job_app: Flask | None = None


def queue(name: str = "default", app: Flask | None = None) -> Queue:
    from crm.redis_conn import get_redis

    if name not in QUEUES:
        raise ValueError(f"unknown queue {name!r}")
    return Queue(name, connection=get_redis(app or current_app))


def enqueue(func: Callable, *args, queue_name: str = "default", **kwargs):
    """Put `func(*args, **kwargs)` on a queue of the current app."""
    return queue(queue_name).enqueue(func, *args, **kwargs)


def job_app() -> Flask:
    """The app a job runs in: the worker's own, or one built from the environment once."""
    global _job_app
    if _job_app is None:
        from crm import create_app

        _job_app = create_app()
    return _job_app


def set_job_app(app: Flask | None) -> None:
    """Let a worker (or a test) say which app its jobs run in."""
    global _job_app
    _job_app = app
